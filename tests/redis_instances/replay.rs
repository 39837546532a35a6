//! A session's streams, cut on one instance, replayed on the other; and
//! never in another session.

use std::time::Duration;

use crate::common::{PROTOCOL_VERSION, SseEvent, SseReader, parse_event_id, read_to_end};
use crate::mcp::{
    assert_rest_of_count, fetch_replay, first_three_progress, is_method, loopback, read_messages,
    result_text, session_header, tool_call, tool_call_with_progress, wait_for_stored_result,
};
use crate::processes::Pair;
use reqwest::StatusCode;
use serde_json::json;

/// The standalone stream's notifications, sent on A, replay on B after the
/// last one the client saw: the rest, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_stream_replays_on_the_other_instance() {
    let pair = Pair::start("replay_get");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");

    let get = on_a.open_standalone(&session).await;
    assert_eq!(get.status(), StatusCode::OK);
    let mut reader = SseReader::new(get);
    let (status, messages) = on_a
        .request(&session, tool_call(2, "announce", json!({ "count": 5 })))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        messages
            .iter()
            .any(|m| result_text(m).is_some_and(|text| text.starts_with("announced 5"))),
        "{messages:?}"
    );
    let seen = read_messages(&mut reader, 2, |m| {
        is_method(m, "notifications/resources/updated")
    })
    .await;
    drop(reader);
    for (n, (id, message)) in seen.iter().enumerate() {
        assert_eq!(
            message["params"]["uri"],
            json!(format!("demo://announce/{}", n + 1))
        );
        let (stream, _, _) = parse_event_id(id);
        assert_eq!(stream, format!("{session}:common"), "id {id}");
    }
    let (last_id, _) = &seen[1];

    let messages = fetch_replay(&on_b, Some(&session), PROTOCOL_VERSION, last_id).await;
    let uris: Vec<&str> = messages
        .iter()
        .map(|m| {
            assert!(
                is_method(m, "notifications/resources/updated"),
                "unexpected {m}"
            );
            m["params"]["uri"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        uris,
        [
            "demo://announce/3",
            "demo://announce/4",
            "demo://announce/5"
        ]
    );
    pair.finish().await;
}

/// A request's stream, cut after a few progress notifications on A, replays
/// the rest and the result on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stream_replays_on_the_other_instance() {
    const STEPS: u64 = 12;
    let pair = Pair::start("replay_post");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");

    let response = on_a
        .post(Some(session_header(&session)))
        .json(&tool_call_with_progress(
            3,
            "count",
            json!({ "steps": STEPS, "delay_ms": 80 }),
            "tok",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let last_id: &str = &first_three_progress(response).await;
    let (stream, _, _) = parse_event_id(last_id);
    assert!(
        stream.starts_with(&format!("{session}:")) && stream != format!("{session}:common"),
        "a request stream named {stream}"
    );

    wait_for_stored_result(&pair.prefix, stream).await;
    let messages = fetch_replay(&on_b, Some(&session), PROTOCOL_VERSION, last_id).await;
    assert_rest_of_count(&messages, STEPS, 3, "tok");
    pair.finish().await;
}

/// A `Last-Event-ID` of session S1 replays nothing in session S2, on the
/// instance that restores S2 as on the one that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_crosses_sessions() {
    let pair = Pair::start("isolation");
    let s1_on_a = pair.a.client(loopback(2));
    let s1_on_b = pair.b.client(loopback(2));
    let s2_on_a = pair.a.client(loopback(3));
    let s2_on_b = pair.b.client(loopback(3));
    let s1 = s1_on_a.initialize().await.expect("initialize S1 on A");
    let s2 = s2_on_a.initialize().await.expect("initialize S2 on A");
    assert_ne!(s1, s2);

    let mut reader = SseReader::new(s1_on_a.open_standalone(&s1).await);
    let (status, _) = s1_on_a
        .request(&s1, tool_call(2, "announce", json!({ "count": 3 })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = read_messages(&mut reader, 3, |m| {
        is_method(m, "notifications/resources/updated")
    })
    .await;
    drop(reader);
    let first_id = &seen[0].0;

    // Control: in S1 the id replays S1's two later notifications.
    let (events, _) = read_to_end(
        s1_on_b.resume(Some(&s1), PROTOCOL_VERSION, first_id).await,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        events.iter().filter(|e| e.message.is_some()).count(),
        2,
        "{events:#?}"
    );

    for (instance, client) in [("B", &s2_on_b), ("A", &s2_on_a)] {
        let response = client.resume(Some(&s2), PROTOCOL_VERSION, first_id).await;
        let status = response.status();
        let (events, _) = read_to_end(response, Duration::from_secs(3)).await;
        assert!(
            status == StatusCode::OK || status.is_client_error(),
            "S2's GET with S1's id on {instance}: {status}"
        );
        let data: Vec<&SseEvent> = events.iter().filter(|e| e.message.is_some()).collect();
        assert!(
            data.is_empty(),
            "S2's GET with S1's id on {instance} replayed: {data:#?}"
        );
    }
    // S2 itself still works on both.
    assert!(s2_on_a.works(&s2).await && s2_on_b.works(&s2).await);
    pair.finish().await;
}
