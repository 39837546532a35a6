//! A real server on 127.0.0.1:0 (axum + rmcp's `StreamableHttpService` +
//! `BoundedSessionManager` + the example's handler) and a raw HTTP client.
#![allow(dead_code)]

#[path = "../../examples/server/handler.rs"]
pub mod handler;
#[cfg(feature = "redis")]
pub mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use mcp_bounded_session::BoundedSessionManager;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// A running server; stopped when dropped.
pub struct TestServer {
    pub url: String,
    pub manager: Arc<BoundedSessionManager>,
    shutdown: CancellationToken,
}

impl TestServer {
    pub async fn start(manager: Arc<BoundedSessionManager>) -> Self {
        Self::start_with(manager, StreamableHttpServerConfig::default()).await
    }

    pub async fn start_with(
        manager: Arc<BoundedSessionManager>,
        config: StreamableHttpServerConfig,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let service = StreamableHttpService::new(
            || Ok(handler::DemoServer::new()),
            manager.clone(),
            config.with_cancellation_token(shutdown.child_token()),
        );
        // The manager's layer, and the peer address recorded for it: client
        // keys are the loopback source addresses tests bind to.
        let app = axum::Router::new().nest_service("/mcp", manager.layer().layer(service));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .unwrap();
            }
        });
        Self {
            url,
            manager,
            shutdown,
        }
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
        }
    }

    /// A client whose connections come from `source` (a loopback address
    /// such as 127.0.0.7): a distinct client key for the server.
    #[allow(dead_code)]
    pub fn client_from(&self, source: std::net::Ipv4Addr) -> Client {
        Client {
            http: reqwest::Client::builder()
                .local_address(std::net::IpAddr::V4(source))
                .tcp_nodelay(true)
                .build()
                .unwrap(),
            url: self.url.clone(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Speaks MCP's Streamable HTTP by hand, to control every header.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
}

pub fn initialize_body() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "bounded-session-tests", "version": "1" }
        }
    })
}

pub fn tools_list_body(id: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/list" })
}

impl Client {
    pub fn post(&self, session: Option<HeaderValue>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    /// `initialize` then `notifications/initialized`; the new session's id,
    /// or the status of the refused `initialize`.
    pub async fn initialize(&self) -> Result<String, (StatusCode, String)> {
        self.initialize_with(&[]).await
    }

    /// [`Self::initialize`], both requests carrying `headers` (a proxy's
    /// `X-Forwarded-For`, say).
    pub async fn initialize_with(
        &self,
        headers: &[(&str, &str)],
    ) -> Result<String, (StatusCode, String)> {
        let with_headers = |mut request: reqwest::RequestBuilder| {
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request
        };
        let response = with_headers(self.post(None))
            .json(&initialize_body())
            .send()
            .await
            .expect("server reachable");
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap_or_default();
        let Some(session) = session.filter(|_| status.is_success()) else {
            return Err((status, body));
        };
        assert!(
            sse_messages(&body)
                .iter()
                .any(|m| m["result"]["serverInfo"].is_object()),
            "initialize answered without a result: {body}"
        );
        let status = with_headers(self.post(Some(HeaderValue::from_str(&session).unwrap())))
            .json(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .send()
            .await
            .unwrap()
            .status();
        if status != StatusCode::ACCEPTED {
            return Err((status, "notifications/initialized refused".into()));
        }
        Ok(session)
    }

    /// Sends a request in a session; the status and the JSON-RPC messages of
    /// its SSE answer.
    pub async fn request(&self, session: &str, body: Value) -> (StatusCode, Vec<Value>) {
        let response = self
            .post(Some(HeaderValue::from_str(session).unwrap()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, sse_messages(&text))
    }

    /// Whether the session answers `tools/list`.
    pub async fn works(&self, session: &str) -> bool {
        let (status, messages) = self.request(session, tools_list_body(1)).await;
        status == StatusCode::OK && messages.iter().any(|m| m["result"]["tools"].is_array())
    }

    pub async fn status_of(&self, session: &str) -> StatusCode {
        self.request(session, tools_list_body(1)).await.0
    }

    pub async fn delete(&self, session: &str) -> StatusCode {
        self.http
            .delete(&self.url)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Opens the standalone SSE stream (GET).
    pub async fn open_standalone(&self, session: &str) -> reqwest::Response {
        self.http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .send()
            .await
            .unwrap()
    }
}

/// Whether the SSE response's body ends (or breaks) within `timeout`.
pub async fn stream_ends_within(response: reqwest::Response, timeout: Duration) -> bool {
    use futures::StreamExt;
    let mut body = response.bytes_stream();
    tokio::time::timeout(timeout, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// The JSON-RPC messages in an SSE body (priming events carry no data).
pub fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: String = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            serde_json::from_str(&data).ok()
        })
        .collect()
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts the manager's counters agree (call only when nothing is in flight).
pub fn assert_conserved(manager: &BoundedSessionManager) {
    let stats = manager.stats();
    assert!(stats.is_consistent(), "{stats:?}");
}

/// A `session created` / `session closed` tracing event, as recorded.
#[derive(Debug, Clone, Default)]
pub struct LifecycleEvent {
    pub message: String,
    pub session_id: String,
    pub reason: Option<String>,
    pub duration_secs: Option<f64>,
}

static EVENTS: std::sync::Mutex<Vec<LifecycleEvent>> = std::sync::Mutex::new(Vec::new());

struct Recorder;

impl tracing::field::Visit for LifecycleEvent {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "duration_secs" {
            self.duration_secs = Some(value);
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "session_id" => self.session_id = text,
            "reason" => self.reason = Some(text),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "mcp_bounded_session::registry" {
            return;
        }
        let mut recorded = LifecycleEvent::default();
        event.record(&mut recorded);
        EVENTS.lock().unwrap().push(recorded);
    }
}

/// Installs the recorder (once per test binary).
pub fn record_lifecycle_events() {
    use tracing_subscriber::layer::SubscriberExt;
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder))
            .expect("no other global subscriber in this test binary");
    });
}

/// The recorded `session closed` reason of `session`, if it closed.
pub fn close_reason(session: &str) -> Option<String> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.session_id == session && e.message == "session closed")
        .map(|e| {
            assert!(e.duration_secs.is_some_and(|d| d >= 0.0), "{e:?}");
            e.reason.clone().expect("session closed carries a reason")
        })
}

/// Whether `session created` was recorded for `session`.
pub fn was_created(session: &str) -> bool {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.session_id == session && e.message == "session created")
}

/// Every session id with a recorded `session created`, oldest first.
pub fn created_sessions() -> Vec<String> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.message == "session created")
        .map(|e| e.session_id.clone())
        .collect()
}

/// One event of an SSE body.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    /// The JSON-RPC message, if the event carries one (priming events don't).
    pub message: Option<Value>,
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
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    message: None,
                };
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        event.id = Some(id.trim_start().to_owned());
                    } else if let Some(chunk) = line.strip_prefix("data:") {
                        data.push_str(chunk.trim_start());
                    }
                }
                event.message = serde_json::from_str(&data).ok();
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
