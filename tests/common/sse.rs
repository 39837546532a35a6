//! Reading SSE answers: whole bodies, event by event, and the event ids
//! `<stream>#<generation>-<sequence>` of the Redis event store.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// One event of an SSE body.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    /// The JSON-RPC message, if the event carries one (priming events don't).
    pub message: Option<Value>,
}

/// The `id:` of one raw SSE event, and its `data:` lines joined (`None`
/// when it has none).
fn parse_fields(raw: &str) -> (Option<String>, Option<String>) {
    let mut id = None;
    let mut data: Option<String> = None;
    for line in raw.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim_start().to_owned());
        } else if let Some(chunk) = line.strip_prefix("data:") {
            data.get_or_insert_default().push_str(chunk.trim_start());
        }
    }
    (id, data)
}

/// The JSON message of an event's data, if it is one.
fn message_of(data: Option<&str>) -> Option<Value> {
    data.and_then(|data| serde_json::from_str(data).ok())
}

/// The JSON-RPC messages in an SSE body (priming events carry no data).
pub fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|raw| message_of(parse_fields(raw).1.as_deref()))
        .collect()
}

/// The events of an SSE body with an id or a data line (comments and
/// `retry:`-only events are left out).
pub fn parse_events(body: &str) -> Vec<SseEvent> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|raw| {
            let (id, data) = parse_fields(raw);
            (id.is_some() || data.is_some()).then(|| SseEvent {
                id,
                message: message_of(data.as_deref()),
            })
        })
        .collect()
}

/// The whole body of an SSE response, or whatever was sent within
/// `timeout` if it did not end (or break) by then; and whether it did.
pub async fn body_within(response: reqwest::Response, timeout: Duration) -> (String, bool) {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let ended = tokio::time::timeout(timeout, async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .is_ok();
    (text, ended)
}

/// Whether the SSE response's body ends (or breaks) within `timeout`.
pub async fn stream_ends_within(response: reqwest::Response, timeout: Duration) -> bool {
    body_within(response, timeout).await.1
}

/// Every event of a stream that is expected to end (a replay): the events,
/// and whether the body ended within `timeout` (else what came so far).
pub async fn read_to_end(response: reqwest::Response, timeout: Duration) -> (Vec<SseEvent>, bool) {
    let (text, ended) = body_within(response, timeout).await;
    (parse_events(&text), ended)
}

/// Reads an SSE response event by event.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event with an id or a message (keep-alive comments are
    /// skipped); `None` when the body ends.
    ///
    /// # Panics
    ///
    /// Panics if nothing arrives within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let (id, data) = parse_fields(&raw);
                let event = SseEvent {
                    id,
                    message: message_of(data.as_deref()),
                };
                if event.id.is_some() || event.message.is_some() {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(timeout, self.body.next())
                .await
                .expect("the SSE stream neither sent nor ended in time");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

/// `<stream>`, generation and sequence of an event id
/// `<stream>#<generation>-<sequence>` (the stream name may hold a `#`).
pub fn parse_event_id(id: &str) -> (&str, u64, u64) {
    let (stream, position) = id
        .rsplit_once('#')
        .unwrap_or_else(|| panic!("event id {id:?} is not `<stream>#<gen>-<seq>`"));
    let (generation, sequence) = position
        .split_once('-')
        .unwrap_or_else(|| panic!("event id {id:?} is not `<stream>#<gen>-<seq>`"));
    (
        stream,
        generation.parse().expect("numeric generation"),
        sequence.parse().expect("numeric sequence"),
    )
}
