//! The session's behaviour with the test playing both sides: the HTTP
//! side through [`SessionHandle`], the MCP handler through the session's
//! transport.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use rmcp::model::{
    ClientJsonRpcMessage, GetExtensions, JsonRpcMessage, RequestId, ServerJsonRpcMessage,
};
use rmcp::service::OriginatingRequestId;
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use serde_json::json;

use super::connection::SseResponse;
use super::standalone::MAX_SHADOW_STREAMS;
use super::*;
use crate::close_reason::CloseReason;
use crate::error::BoundedSessionError;
use crate::event_id::EventId;
use crate::replay_buffer::ReplayError;

const WAIT: Duration = Duration::from_secs(5);

fn client(value: serde_json::Value) -> ClientJsonRpcMessage {
    serde_json::from_value(value).expect("a client message")
}

fn server(value: serde_json::Value) -> ServerJsonRpcMessage {
    serde_json::from_value(value).expect("a server message")
}

fn call(id: i64, progress_token: Option<&str>) -> ClientJsonRpcMessage {
    let mut params = json!({ "name": "work", "arguments": {} });
    if let Some(token) = progress_token {
        params["_meta"] = json!({ "progressToken": token });
    }
    client(json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params }))
}

fn answer(id: i64) -> ServerJsonRpcMessage {
    server(json!({ "jsonrpc": "2.0", "id": id, "result": {} }))
}

fn progress(token: &str, progress: u32) -> ServerJsonRpcMessage {
    server(json!({
        "jsonrpc": "2.0", "method": "notifications/progress",
        "params": { "progressToken": token, "progress": progress }
    }))
}

fn log_line(n: u32) -> ServerJsonRpcMessage {
    server(json!({
        "jsonrpc": "2.0", "method": "notifications/message",
        "params": { "level": "info", "data": n }
    }))
}

/// A session, initialized; the test plays both the HTTP side (`handle`)
/// and the MCP handler (`handler`, the session's transport).
struct Session {
    handle: SessionHandle,
    handler: SessionTransport,
}

fn settings(config: impl FnOnce(&mut SessionSettings)) -> Arc<SessionSettings> {
    let mut settings = SessionSettings {
        parking: None,
        session: SessionConfig::default(),
        replay_capacity: 16,
        max_request_streams: 8,
        event_store: None,
    };
    config(&mut settings);
    Arc::new(settings)
}

/// A session and its transport, as the manager makes them (without a
/// registry).
fn new_session(
    id: &str,
    settings: Arc<SessionSettings>,
    origin: Origin,
) -> (SessionHandle, SessionTransport) {
    let handle = create(id.into(), settings, origin, None);
    let handler = handle.transport(None);
    (handle, handler)
}

async fn session(settings: Arc<SessionSettings>) -> Session {
    session_from(settings, Origin::Created).await
}

async fn session_from(settings: Arc<SessionSettings>, origin: Origin) -> Session {
    let (handle, mut handler) = new_session("test", settings, origin);
    let initialize = client(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    }));
    let answered = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.initialize(initialize).await })
    };
    let received = handler
        .receive()
        .await
        .expect("initialize reaches the handler");
    assert!(matches!(received, JsonRpcMessage::Request(_)));
    handler.send(answer(0)).await.unwrap();
    answered.await.unwrap().expect("initialize answered");
    Session { handle, handler }
}

impl Session {
    /// Sends a request and has the handler take it.
    async fn request(&mut self, request: ClientJsonRpcMessage) -> SseResponse {
        let stream = self.handle.request(request).await.unwrap();
        self.handler
            .receive()
            .await
            .expect("the request reaches the handler");
        stream
    }
}

/// The next event's id and JSON-RPC id / method, or None at the end.
async fn next(stream: &mut SseResponse) -> Option<(String, String)> {
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the stream neither sent nor ended")?;
    let what = match event.message.as_deref() {
        None => "priming".to_owned(),
        Some(JsonRpcMessage::Response(response)) => format!("answer {}", response.id),
        Some(JsonRpcMessage::Notification(notification)) => {
            let value = serde_json::to_value(notification).unwrap();
            match value["params"]["progress"].as_f64() {
                Some(progress) => format!("progress {progress}"),
                None => format!("log {}", value["params"]["data"]),
            }
        }
        Some(JsonRpcMessage::Request(request)) => format!("request {}", request.id),
        Some(JsonRpcMessage::Error(error)) => format!("error {:?}", error.id),
    };
    Some((event.event_id.unwrap_or_default(), what))
}

async fn assert_pending(stream: &mut SseResponse) {
    let next = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
    assert!(next.is_err(), "expected nothing, got {next:?}");
}

fn ids(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(id, _)| id.as_str()).collect()
}

async fn drain(stream: &mut SseResponse) -> Vec<(String, String)> {
    let mut events = Vec::new();
    while let Some(event) = next(stream).await {
        events.push(event);
    }
    events
}

mod delivery;
mod event_store;
mod lifecycle;
mod replay;
mod routing;
