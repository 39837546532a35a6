//! Protocol 2026-07-28 (no session): its streams replay on the other
//! instance, and a sessionless GET never replays a session's stream.

use std::time::Duration;

use crate::STATELESS_VERSION;
use crate::common::{SseEvent, SseReader, parse_event_id, read_to_end};
use crate::mcp::{
    assert_rest_of_count, fetch_replay, first_three_progress, is_method, loopback,
    post_stateless_call, read_messages, tool_call, wait_for_stored_result,
};
use crate::processes::Pair;
use reqwest::StatusCode;
use serde_json::json;

/// A GET of protocol 2026-07-28 (no session) with a session's event id
/// must not replay that session's events: rmcp sends such a GET straight to
/// the manager's `event_store()`, which holds the sessions' streams too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_get_does_not_replay_a_sessions_stream() {
    let pair = Pair::start("isolation_stateless");
    let s1_on_a = pair.a.client(loopback(2));
    let other_on_b = pair.b.client(loopback(3));
    let s1 = s1_on_a.initialize().await.expect("initialize S1 on A");
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

    let response = other_on_b.resume(None, STATELESS_VERSION, first_id).await;
    let status = response.status();
    let (events, _) = read_to_end(response, Duration::from_secs(3)).await;
    let data: Vec<&SseEvent> = events.iter().filter(|e| e.message.is_some()).collect();
    assert!(
        data.is_empty(),
        "a sessionless GET (MCP-Protocol-Version {STATELESS_VERSION}, another client, on B) \
         with S1's Last-Event-ID got {status} and S1's events: {data:#?}"
    );
    pair.finish().await;
}

/// Protocol 2026-07-28 (no session): a `count` with progress on A, cut
/// after a few events, resumes on B from the shared event store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_request_stream_replays_on_the_other_instance() {
    const STEPS: u64 = 12;
    let pair = Pair::start("stateless");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let response = post_stateless_call(
        &on_a,
        5,
        "count",
        json!({ "steps": STEPS, "delay_ms": 80 }),
        "stateless",
    )
    .await;
    let status = response.status();
    assert!(
        response.headers().get("mcp-session-id").is_none(),
        "a stateless request got a session"
    );
    if status != StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        panic!("stateless count on A: {status}: {text}");
    }
    let last_id: &str = &first_three_progress(response).await;
    let (stream, _, _) = parse_event_id(last_id);
    assert!(
        !stream.contains(':'),
        "a stateless stream named like a session's: {stream}"
    );

    wait_for_stored_result(&pair.prefix, stream).await;
    let messages = fetch_replay(&on_b, None, STATELESS_VERSION, last_id).await;
    assert_rest_of_count(&messages, STEPS, 5, "stateless");
    pair.finish().await;
}
