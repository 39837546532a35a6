//! A request whose instance stopped without answering it: a client that
//! resumes its stream on another instance gets an error saying the request
//! was lost, within the request-lost delay, and can send it again.

use std::time::{Duration, Instant};

use crate::common::redis_backend::Backend;
use crate::common::{Client, PROTOCOL_VERSION, SseReader};
use crate::mcp::{loopback, start_count};
use crate::processes::Pair;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Starts `count` (`steps` of 250 ms) as request 7 in `session`; the
/// stream, and the id of its first progress event.
async fn long_call(client: &Client, session: &str, steps: u64) -> (SseReader, String) {
    let (stream, first) = start_count(client, session, 7, (steps, 250), "long", 1).await;
    (stream, first[0].0.clone())
}

/// One resume of `last_seen` in `session` through `client`: the last id
/// it replayed (or `last_seen`), and request `request`'s answer if it
/// came.
pub async fn resume_once(
    client: &Client,
    session: &str,
    last_seen: &str,
    request: u64,
) -> (String, Option<Value>) {
    let response = client
        .resume(Some(session), PROTOCOL_VERSION, last_seen)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut replay = SseReader::new(response);
    let mut newest = last_seen.to_owned();
    let mut answer = None;
    while let Some(event) = replay.next(Duration::from_secs(5)).await {
        if let Some(id) = event.id {
            newest = id;
        }
        if let Some(message) = event.message
            && message["id"] == json!(request)
        {
            assert!(answer.is_none(), "answered twice: {message}");
            answer = Some(message);
        }
    }
    (newest, answer)
}

/// Whether `message` is the error saying its request was lost.
pub fn is_lost(message: &Value) -> bool {
    message["error"]["code"] == json!(-32603)
        && message["error"]["data"]["reason"] == "request_lost"
}

/// SIGKILL to A during a long call (A's request-lost delay: 2 s): while
/// A lived, a resume on B got the stored progress and no answer, also
/// after longer than the delay (A's liveness key is refreshed); after the
/// kill, resuming on B every 250 ms ends with the "request lost" error for
/// request 7 within the delay and a resume interval, once, and the session
/// goes on at B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_a_killed_instance_is_answered_as_lost_on_the_other() {
    let mut pair = Pair::start_with(
        "lost_killed",
        &Backend::single(),
        &["--request-lost-after", "2"],
    );
    let caller = pair.a.client(loopback(40));
    let session = caller.initialize().await.expect("initialize on A");
    let (_stream, first_seen) = long_call(&caller, &session, 80).await;

    let on_b = pair.b.client(loopback(40));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (seen, answer) = resume_once(&on_b, &session, &first_seen, 7).await;
    assert_eq!(answer, None, "a live instance's request was answered on B");
    assert_ne!(seen, first_seen, "the resume replayed no stored progress");

    pair.a.kill();
    let killed = Instant::now();
    let mut last_seen = seen;
    let answer = loop {
        let (seen, answer) = resume_once(&on_b, &session, &last_seen, 7).await;
        last_seen = seen;
        if let Some(answer) = answer {
            break answer;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "no answer 6 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let waited = killed.elapsed();
    assert!(is_lost(&answer), "{answer}");
    assert!(
        waited < Duration::from_secs(2) + Duration::from_millis(1_500),
        "the loss was told {waited:?} after the kill"
    );
    // Told once: resuming from the error replays nothing more.
    let (_, again) = resume_once(&on_b, &session, &last_seen, 7).await;
    assert_eq!(again, None);
    crate::drain::echo_works(&on_b, &session, 8).await;
    pair.finish().await;
}
