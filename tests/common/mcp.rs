//! MCP by hand: requests, and checks of what the streams carried.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Client, SseEvent, SseReader, parse_event_id, read_to_end};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

/// The protocol revision without sessions (SEP-2567).
pub const STATELESS_VERSION: &str = "2026-07-28";
/// Longest wait for one event of a live stream.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

pub fn session_header(session: &str) -> HeaderValue {
    HeaderValue::from_str(session).unwrap()
}

pub fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": name, "arguments": arguments }
    })
}

pub fn tool_call_with_progress(id: u64, name: &str, arguments: Value, token: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": name, "arguments": arguments, "_meta": { "progressToken": token } }
    })
}

/// The text of a `tools/call` result (its first content block).
pub fn result_text(message: &Value) -> Option<&str> {
    message["result"]["content"][0]["text"].as_str()
}

/// The `progress` of a progress notification, a whole number (rmcp sends
/// it as a float: `1.0`).
pub fn progress_of(message: &Value) -> u64 {
    let progress = message["params"]["progress"]
        .as_f64()
        .unwrap_or_else(|| panic!("no progress in {message}"));
    assert!(progress.fract() == 0.0 && progress >= 0.0, "{message}");
    progress as u64
}

pub fn is_method(message: &Value, method: &str) -> bool {
    message["method"].as_str() == Some(method)
}

/// Reads `reader` until `wanted` events with a message satisfying `keep`
/// arrived; those events (priming events and other messages are skipped).
pub async fn read_messages(
    reader: &mut SseReader,
    wanted: usize,
    keep: impl Fn(&Value) -> bool,
) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    while got.len() < wanted {
        let event = reader
            .next(EVENT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("the stream ended after {} of {wanted} events", got.len()));
        if let Some(message) = event.message
            && keep(&message)
        {
            let id = event.id.expect("a kept event carries an id");
            got.push((id, message));
        }
    }
    got
}

/// Checks a replay after the id `resumed`: exactly the events after it, in
/// order, once, each in its stream and generation with sequences
/// increasing by one from its own + 1; returns their messages. Events without data (priming) are
/// allowed and left out.
pub fn replayed_messages(events: &[SseEvent], resumed: &str) -> Vec<Value> {
    let (stream, generation, after) = parse_event_id(resumed);
    let mut expected_sequence = after + 1;
    let mut messages = Vec::new();
    for event in events {
        let Some(message) = &event.message else {
            continue;
        };
        let id = event
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("a replayed event without id: {message}"));
        let (event_stream, event_generation, sequence) = parse_event_id(id);
        assert_eq!(
            (event_stream, event_generation),
            (stream, generation),
            "replayed event {id} of another stream or generation than {resumed}"
        );
        assert_eq!(
            sequence, expected_sequence,
            "replayed ids out of order or with a hole: {events:#?}"
        );
        expected_sequence += 1;
        messages.push(message.clone());
    }
    messages
}

/// Reads a `count` request's stream until its first three progress
/// notifications, checks they count 1, 2, 3 and drops the stream (the
/// client is cut); the id of the third.
pub async fn first_three_progress(response: reqwest::Response) -> String {
    let mut reader = SseReader::new(response);
    let seen = read_messages(&mut reader, 3, |m| is_method(m, "notifications/progress")).await;
    drop(reader);
    for (n, (_, message)) in seen.iter().enumerate() {
        assert_eq!(progress_of(message), n as u64 + 1, "{message}");
    }
    seen[2].0.clone()
}

/// A GET resuming after `last_id` on `client` (in `session` if any, under
/// protocol `version`): checked to answer 200 and end within 5 s, and
/// checked by [`replayed_messages`]; the replayed messages.
pub async fn fetch_replay(
    client: &Client,
    session: Option<&str>,
    version: &str,
    last_id: &str,
) -> Vec<Value> {
    let response = client.resume(session, version, last_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (events, ended) = read_to_end(response, Duration::from_secs(5)).await;
    assert!(ended, "the replay did not end: {events:#?}");
    replayed_messages(&events, last_id)
}

/// POSTs a `tools/call` of protocol 2026-07-28 (no session) with a progress
/// token: the headers and `_meta` fields that revision asks of a request.
pub async fn post_stateless_call(
    client: &Client,
    id: u64,
    name: &str,
    arguments: Value,
    token: &str,
) -> reqwest::Response {
    let body = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": name,
            "arguments": arguments,
            "_meta": {
                "progressToken": token,
                "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "tests", "version": "1" }
            }
        }
    });
    // SEP-2243: from 2026-07-28 a POST names its method (and a tool call
    // its tool) in headers too; the request carries no session.
    client
        .http
        .post(&client.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS_VERSION)
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Checks what a resumed `count` call replayed after its third progress
/// notification: progress 4 to `steps` (each for `token`), then the result
/// of request `id`, nothing else.
pub fn assert_rest_of_count(messages: &[Value], steps: u64, id: u64, token: &str) {
    let (result, progress) = messages.split_last().expect("a replay with events");
    let counted: Vec<u64> = progress
        .iter()
        .map(|m| {
            assert!(is_method(m, "notifications/progress"), "unexpected {m}");
            assert_eq!(m["params"]["progressToken"], json!(token), "{m}");
            progress_of(m)
        })
        .collect();
    assert_eq!(counted, (4..=steps).collect::<Vec<_>>());
    assert_eq!(result["id"], json!(id), "{result}");
    assert_eq!(
        result_text(result),
        Some(format!("counted to {steps}").as_str())
    );
}

/// Starts `count` (`steps` steps, `delay_ms` apart, progress token
/// `token`) as request `id` in `session`: its stream, and its first
/// `progress_events` progress events (id, message).
pub async fn start_count(
    client: &Client,
    session: &str,
    id: u64,
    (steps, delay_ms): (u64, u64),
    token: &str,
    progress_events: usize,
) -> (SseReader, Vec<(String, Value)>) {
    let response = client
        .post(Some(session_header(session)))
        .json(&tool_call_with_progress(
            id,
            "count",
            json!({ "steps": steps, "delay_ms": delay_ms }),
            token,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseReader::new(response);
    let progress = |m: &Value| is_method(m, "notifications/progress");
    let first = read_messages(&mut stream, progress_events, progress).await;
    (stream, first)
}
