//! A rolling restart: SIGTERM to A while its clients work, a balancer
//! sending every new request to B.

use std::time::Duration;

use crate::common::{Client, SseReader, sse_messages};
use crate::mcp::{
    is_method, loopback, progress_of, read_messages, result_text, session_header, tool_call,
    tool_call_with_progress,
};
use crate::processes::Pair;
use crate::standalone::announce;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `echo` in `session` through `client`: answered without a new
/// `initialize` (no `serverInfo` in the answer).
pub async fn echo_works(client: &Client, session: &str, id: u64) {
    let text = format!("call {id}");
    let response = client
        .post(Some(session_header(session)))
        .json(&tool_call(id, "echo", json!({ "text": text })))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "echo {id} in {session}: {body}");
    let messages = sse_messages(&body);
    assert!(
        !messages
            .iter()
            .any(|m| m["result"]["serverInfo"].is_object()),
        "answered with a new initialize: {body}"
    );
    let answer = messages.iter().find(|m| m["id"] == json!(id));
    assert_eq!(answer.and_then(result_text), Some(text.as_str()), "{body}");
}

/// A `count` of 20 steps of 250 ms on A, started before the SIGTERM,
/// finishes on A with every step once and in order; ten clients with
/// sessions made on A go on at B without a new `initialize`, no call
/// failing; a GET open on A ends, and resumed on B misses none of the
/// notifications sent meanwhile; A exits 0 well within its drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_drains_an_instance_while_its_clients_go_on_at_the_other() {
    let mut pair = Pair::start("drain");
    let mut clients = Vec::new();
    for n in 0..10 {
        let on_a = pair.a.client(loopback(10 + n));
        let session = on_a.initialize().await.expect("initialize on A");
        echo_works(&on_a, &session, 1).await;
        clients.push((pair.b.client(loopback(10 + n)), session));
    }

    let caller = pair.a.client(loopback(30));
    let long_session = caller.initialize().await.expect("initialize on A");
    let long = caller
        .post(Some(session_header(&long_session)))
        .json(&tool_call_with_progress(
            1,
            "count",
            json!({ "steps": 20, "delay_ms": 250 }),
            "long",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), StatusCode::OK);
    let mut long = SseReader::new(long);
    let progress = |m: &Value| is_method(m, "notifications/progress");
    let first = read_messages(&mut long, 1, progress).await;

    let watcher_a = pair.a.client(loopback(31));
    let watched = watcher_a.initialize().await.expect("initialize on A");
    let get = watcher_a.open_standalone(&watched).await;
    assert_eq!(get.status(), StatusCode::OK);
    let mut get = SseReader::new(get);
    let updated = |m: &Value| is_method(m, "notifications/resources/updated");
    announce(&watcher_a, &watched, 2, 2).await;
    let before = read_messages(&mut get, 2, updated).await;
    let last_seen = before.last().unwrap().0.clone();

    pair.a.terminate();

    // The GET on A ends at once (the client is told to reconnect).
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while get.next(Duration::from_secs(3)).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the GET on A did not end");

    // The balancer now sends every new request to B.
    for round in 0..3 {
        for (on_b, session) in &clients {
            echo_works(on_b, session, 10 + round).await;
        }
    }
    let watcher_b = pair.b.client(loopback(31));
    announce(&watcher_b, &watched, 3, 3).await;
    let resumed = watcher_b
        .resume(Some(&watched), crate::common::PROTOCOL_VERSION, &last_seen)
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let mut resumed = SseReader::new(resumed);
    let after = read_messages(&mut resumed, 3, updated).await;
    let uris: Vec<&Value> = after.iter().map(|(_, m)| &m["params"]["uri"]).collect();
    assert_eq!(
        uris,
        [
            &json!("demo://announce/1"),
            &json!("demo://announce/2"),
            &json!("demo://announce/3")
        ],
        "the GET resumed on B missed or repeated a notification"
    );

    // The long call finishes on A, each step once, in order.
    let mut steps: Vec<u64> = first.iter().map(|(_, m)| progress_of(m)).collect();
    let result = loop {
        let event = long
            .next(Duration::from_secs(10))
            .await
            .expect("the long call's stream ended before its answer");
        let Some(message) = event.message else {
            continue;
        };
        if progress(&message) {
            steps.push(progress_of(&message));
        } else if message["id"] == json!(1) {
            break message;
        }
    };
    assert_eq!(steps, (1..=20).collect::<Vec<_>>());
    assert_eq!(result_text(&result), Some("counted to 20"), "{result}");

    let status = pair.a.exit_within(Duration::from_secs(25)).await;
    assert!(
        status.is_some_and(|status| status.success()),
        "A did not exit 0 within its drain timeout: {status:?}"
    );
    assert!(pair.a.logged("drained in"), "A printed no drain summary");
    assert!(pair.a.logged("0 cancelled at the deadline"));
    pair.finish().await;
}

/// A call that outlives A's drain timeout (1 s) is cut at it: its stream
/// ends without an answer, and A exits 0 soon after; resumed on B, the
/// call's stream ends at once with the error saying it was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_drain_timeout_is_cut_and_the_instance_exits() {
    let mut pair = Pair::start_with(
        "drain_deadline",
        &crate::common::redis_backend::Backend::single(),
        &["--drain-timeout", "1"],
    );
    let caller = pair.a.client(loopback(32));
    let session = caller.initialize().await.expect("initialize on A");
    let long = caller
        .post(Some(session_header(&session)))
        .json(&tool_call_with_progress(
            1,
            "count",
            json!({ "steps": 100, "delay_ms": 250 }),
            "cut",
        ))
        .send()
        .await
        .unwrap();
    let mut long = SseReader::new(long);
    let progress = |m: &Value| is_method(m, "notifications/progress");
    let seen = read_messages(&mut long, 1, progress).await;
    let signalled = std::time::Instant::now();
    pair.a.terminate();
    let mut answered = false;
    while let Some(event) = long.next(Duration::from_secs(5)).await {
        answered |= event.message.is_some_and(|m| m["id"] == json!(1));
    }
    assert!(!answered, "a 25 s call was answered within a 1 s drain");
    let status = pair.a.exit_within(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        signalled.elapsed()
    );
    assert!(pair.a.logged("1 cancelled at the deadline"));
    // A's drain deleted its liveness key: B's is the only one.
    let live: Vec<String> = pair
        .backend
        .keys(&pair.prefix)
        .await
        .into_iter()
        .filter(|key| crate::common::redis_backend::key::is_liveness(key))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    // The cut call is lost: resumed on B, its stream says so at once.
    let on_b = pair.b.client(loopback(32));
    let (_, answer) = crate::lost::resume_once(&on_b, &session, &seen[0].0, 1).await;
    let answer = answer.expect("the cut call's resume on B got no answer");
    assert!(crate::lost::is_lost(&answer), "{answer}");
    // The session lives on in Redis: B serves it.
    echo_works(&on_b, &session, 2).await;
    pair.finish().await;
}
