//! A real server on 127.0.0.1:0 (axum + rmcp's `StreamableHttpService` +
//! `BoundedSessionManager` + the example's handler) and a raw HTTP client.
#![allow(dead_code)]

pub mod admission;
#[path = "../../examples/server/handler.rs"]
pub mod handler;
pub mod load;
pub mod mcp;
#[cfg(feature = "redis")]
pub mod redis_backend;
#[cfg(feature = "redis")]
pub mod redis_cluster;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod sse;

// Each test target uses some of these: the rest are unused there.
#[allow(unused_imports)]
pub use sse::{
    SseEvent, SseReader, body_within, parse_event_id, parse_events, read_to_end, sse_messages,
    stream_ends_within,
};

use std::sync::Arc;
use std::time::Duration;

use mcp_bounded_session::BoundedSessionManager;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// rmcp's `SessionStore` in memory: the `initialize` parameters of every
/// session, shared by the servers given it (a restore on another server
/// replays them).
#[derive(Default)]
pub struct TestSessionStore(std::sync::Mutex<std::collections::HashMap<String, SessionState>>);

#[async_trait::async_trait]
impl SessionStore for TestSessionStore {
    async fn load(&self, id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self.0.lock().unwrap().get(id).cloned())
    }

    async fn store(&self, id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        self.0.lock().unwrap().insert(id.to_owned(), state.clone());
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), SessionStoreError> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }
}

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
        Self::serve(manager, app, shutdown).await
    }

    /// [`Self::start`], with `wrap` applied to the app (around the
    /// manager's layer): a middleware that sets what the layer reads, such
    /// as a PROXY-protocol stand-in inserting the peer address.
    pub async fn start_wrapped(
        manager: Arc<BoundedSessionManager>,
        wrap: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let service = StreamableHttpService::new(
            || Ok(handler::DemoServer::new()),
            manager.clone(),
            StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
        );
        let app = wrap(axum::Router::new().nest_service("/mcp", manager.layer().layer(service)));
        Self::serve(manager, app, shutdown).await
    }

    /// Serves `app` on a free loopback port, recording each connection's
    /// peer address, until the server is dropped (`shutdown`).
    pub async fn serve(
        manager: Arc<BoundedSessionManager>,
        app: axum::Router,
        shutdown: CancellationToken,
    ) -> Self {
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
    pub fn client_from(&self, source: std::net::Ipv4Addr) -> Client {
        Client::from_source(&self.url, source)
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
    /// A client of the server at `url` whose connections come from `source`
    /// (a loopback address such as 127.0.0.7).
    pub fn from_source(url: &str, source: std::net::Ipv4Addr) -> Self {
        Self {
            http: reqwest::Client::builder()
                .local_address(std::net::IpAddr::V4(source))
                .tcp_nodelay(true)
                .build()
                .unwrap(),
            url: url.to_owned(),
        }
    }

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

    /// A GET for an SSE stream under protocol `version`, in `session` if
    /// any.
    pub fn get_stream(&self, session: Option<&str>, version: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", version);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    /// Opens the standalone SSE stream (GET).
    pub async fn open_standalone(&self, session: &str) -> reqwest::Response {
        self.get_stream(Some(session), PROTOCOL_VERSION)
            .send()
            .await
            .unwrap()
    }

    /// A GET resuming after `last_event_id`, in `session` if any, under
    /// protocol `version`.
    pub async fn resume(
        &self,
        session: Option<&str>,
        version: &str,
        last_event_id: &str,
    ) -> reqwest::Response {
        self.get_stream(session, version)
            .header("last-event-id", last_event_id)
            .send()
            .await
            .expect("server reachable")
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    poll_until(timeout, Duration::from_millis(10), || {
        std::future::ready(condition())
    })
    .await
}

/// Polls the async `condition` every 20 ms until it holds or `timeout`
/// passes.
pub async fn eventually_async<F, Fut>(timeout: Duration, condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_until(timeout, Duration::from_millis(20), condition).await
}

/// Polls `condition` every `every` until it holds or `timeout` passes.
async fn poll_until<F, Fut>(timeout: Duration, every: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
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
    /// The thread that emitted it.
    pub thread: Option<std::thread::ThreadId>,
    pub message: String,
    pub session_id: String,
    pub reason: Option<String>,
    pub duration_secs: Option<f64>,
}

/// The manager's lifecycle events come from this target.
const LIFECYCLE_TARGET: &str = "mcp_bounded_session::registry";

static EVENTS: std::sync::Mutex<Vec<LifecycleEvent>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    /// Whether this thread's lifecycle events are recorded.
    static RECORDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

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
    /// Every other event and span stays off: the subscriber is global,
    /// and tests that record nothing pay nothing for it.
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.target() == LIFECYCLE_TARGET {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != LIFECYCLE_TARGET || !RECORDING.with(std::cell::Cell::get) {
            return;
        }
        let mut recorded = LifecycleEvent {
            thread: Some(std::thread::current().id()),
            ..LifecycleEvent::default()
        };
        event.record(&mut recorded);
        EVENTS.lock().unwrap().push(recorded);
    }
}

/// Records the lifecycle events emitted on this thread from now on.
///
/// libtest runs each test on a thread of its own, and a test on a
/// current-thread runtime (`#[tokio::test]`) runs its server's tasks there
/// too: the test's own sessions are recorded, and none of the tests running
/// at once in the same binary (a million sessions of a stress test would
/// pile up here). A test on a multi-thread runtime would miss the events
/// of its worker threads, and its checks would fail, not pass.
pub fn record_lifecycle_events() {
    use tracing_subscriber::layer::SubscriberExt;
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder))
            .expect("no other global subscriber in this test binary");
    });
    RECORDING.with(|recording| recording.set(true));
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

/// Every session id with a `session created` recorded on this thread
/// (by this test), oldest first.
pub fn created_sessions() -> Vec<String> {
    let this_thread = Some(std::thread::current().id());
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.message == "session created" && e.thread == this_thread)
        .map(|e| e.session_id.clone())
        .collect()
}
