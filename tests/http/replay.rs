//! Replay of missed events through real HTTP: a cut request stream resumed
//! with `Last-Event-ID`, and the standalone stream reconnecting.

use crate::common;

use std::time::Duration;

use common::{PROTOCOL_VERSION, SseEvent, SseReader, TestServer};
use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use std::sync::Arc;

const WAIT: Duration = Duration::from_secs(10);

fn count_call(id: u64, steps: u32, delay_ms: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": "count", "arguments": { "steps": steps, "delay_ms": delay_ms },
            "_meta": { "progressToken": "steps" }
        }
    })
}

fn announce_call(id: u64, count: u32) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "announce", "arguments": { "count": count } }
    })
}

async fn get(client: &common::Client, session: &str, last_event_id: Option<&str>) -> SseReader {
    let mut request = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", PROTOCOL_VERSION);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    SseReader::new(response)
}

/// What an event says, for comparisons: "progress N", "result", "updated N".
fn what(event: &SseEvent) -> String {
    let Some(message) = &event.message else {
        return "priming".into();
    };
    if message["method"] == "notifications/progress" {
        return format!("progress {}", message["params"]["progress"]);
    }
    if message["method"] == "notifications/resources/updated" {
        let uri = message["params"]["uri"].as_str().unwrap();
        return format!("updated {}", uri.rsplit('/').next().unwrap());
    }
    if message["result"].is_object() {
        return "result".into();
    }
    format!("other {message}")
}

/// The index of `index/stream` ids (or of a bare index).
fn index(event: &SseEvent) -> u64 {
    let id = event.id.as_deref().expect("every event has an id");
    id.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_cut_tool_call_resumed_with_last_event_id_gets_every_remaining_event_once() {
    let _timed = common::load::timed().await;
    let server = TestServer::start(Arc::new(BoundedSessionManager::new(
        SessionConfig::default(),
        8,
    )))
    .await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    let steps = 12;
    let response = client
        .post(Some(HeaderValue::from_str(&session).unwrap()))
        .json(&count_call(7, steps, 40))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseReader::new(response);
    let mut before = Vec::new();
    while before
        .iter()
        .filter(|e| what(e).starts_with("progress"))
        .count()
        < 3
    {
        before.push(stream.next(WAIT).await.expect("the call goes on"));
    }
    // The connection breaks mid-call; the tool keeps counting meanwhile.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last_seen = before.last().unwrap().id.clone().unwrap();
    let mut resumed = get(&client, &session, Some(&last_seen)).await;
    let mut after = Vec::new();
    while let Some(event) = resumed.next(WAIT).await {
        after.push(event);
    }

    let all: Vec<SseEvent> = before.iter().chain(&after).cloned().collect();
    let expected: Vec<String> = std::iter::once("priming".to_owned())
        .chain((1..=steps).map(|step| format!("progress {step}.0")))
        .chain(std::iter::once("result".to_owned()))
        .collect();
    let seen: Vec<String> = all.iter().map(what).collect();
    assert_eq!(seen, expected, "every event once, in order, nothing more");
    // One stream: ids `index/stream` with one stream number and consecutive
    // indices, across the cut.
    let stream_of = |event: &SseEvent| {
        event
            .id
            .clone()
            .unwrap()
            .split('/')
            .nth(1)
            .map(String::from)
    };
    assert!(
        all.iter()
            .all(|event| stream_of(event) == stream_of(&all[0]))
    );
    let indices: Vec<u64> = all.iter().map(index).collect();
    assert_eq!(indices, (0..all.len() as u64).collect::<Vec<_>>());
    assert!(after.last().unwrap().message.as_ref().unwrap()["id"] == 7);

    // The answered call can still be resumed (until its cache expires), and
    // that stream ends after the replay.
    let mut late = get(&client, &session, Some(&last_seen)).await;
    let mut again = Vec::new();
    while let Some(event) = late.next(WAIT).await {
        again.push(event);
    }
    assert_eq!(again, after);
}

#[tokio::test]
async fn a_standalone_stream_reconnect_replays_the_missed_notifications() {
    let _timed = common::load::timed().await;
    let server = TestServer::start(Arc::new(BoundedSessionManager::new(
        SessionConfig::default(),
        8,
    )))
    .await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    // Notifications sent before any GET are kept for the first one.
    assert!(client.request(&session, announce_call(1, 2)).await.0 == StatusCode::OK);
    let mut first = get(&client, &session, None).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(first.next(WAIT).await.unwrap());
    }
    assert_eq!(
        seen.iter().map(what).collect::<Vec<_>>(),
        ["priming", "updated 1", "updated 2"]
    );
    assert_eq!(seen[0].id.as_deref(), Some("0"));
    assert_eq!(seen[2].id.as_deref(), Some("2"));
    assert!(client.request(&session, announce_call(2, 3)).await.0 == StatusCode::OK);
    for _ in 0..3 {
        seen.push(first.next(WAIT).await.unwrap());
    }
    let last_seen = seen.last().unwrap().id.clone().unwrap();
    assert_eq!(last_seen, "5");

    // The GET breaks; three more notifications are sent while it is down.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(client.request(&session, announce_call(3, 3)).await.0 == StatusCode::OK);
    let mut reconnected = get(&client, &session, Some(&last_seen)).await;
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(reconnected.next(WAIT).await.unwrap());
    }
    assert_eq!(
        replayed.iter().map(what).collect::<Vec<_>>(),
        ["updated 1", "updated 2", "updated 3"]
    );
    assert_eq!(
        replayed.iter().map(index).collect::<Vec<_>>(),
        [6, 7, 8],
        "exactly what followed Last-Event-ID"
    );
    // And it is the live stream now.
    assert!(client.request(&session, announce_call(4, 1)).await.0 == StatusCode::OK);
    let live = reconnected.next(WAIT).await.unwrap();
    assert_eq!((index(&live), what(&live)), (9, "updated 1".to_owned()));
}

#[tokio::test]
async fn bad_ids_get_an_empty_stream_and_late_ones_what_is_kept() {
    let _timed = common::load::timed().await;
    let manager = BoundedSessionManager::builder(8).replay_capacity(2).build();
    let server = TestServer::start(manager).await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    // A request stream that was never opened, and ids this crate never
    // issues: an empty stream (rmcp's answer to a failed resume).
    for id in [
        "0/99",
        "-1",
        "1/2/3",
        "abc",
        "01",
        "99999999999999999999999",
    ] {
        let mut stream = get(&client, &session, Some(id)).await;
        assert_eq!(stream.next(WAIT).await, None, "Last-Event-ID {id:?}");
    }
    // Events 1..=5 are sent with no GET open; the ring keeps 4 and 5.
    assert!(client.request(&session, announce_call(1, 5)).await.0 == StatusCode::OK);
    // A client that saw 2 gets what is kept; the ids jump from 2 to 4, so
    // it can tell that 3 is lost.
    let mut late = get(&client, &session, Some("2")).await;
    let first = late.next(WAIT).await.unwrap();
    assert_eq!((index(&first), what(&first)), (4, "updated 4".to_owned()));
    let second = late.next(WAIT).await.unwrap();
    assert_eq!((index(&second), what(&second)), (5, "updated 5".to_owned()));
    drop(late);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // An id ahead of the stream names nothing it sent: that client gets
    // everything kept, then the stream live.
    let mut ahead = get(&client, &session, Some("60")).await;
    assert_eq!(index(&ahead.next(WAIT).await.unwrap()), 4);
    assert_eq!(index(&ahead.next(WAIT).await.unwrap()), 5);
    assert!(client.request(&session, announce_call(2, 1)).await.0 == StatusCode::OK);
    let live = ahead.next(WAIT).await.unwrap();
    assert_eq!((index(&live), what(&live)), (6, "updated 1".to_owned()));
}
