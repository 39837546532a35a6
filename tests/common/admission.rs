//! Request admission through real HTTP: a handler whose tools and listen
//! streams report to a [`Probe`] the test holds (how many handlers run now
//! and at most, which listen streams started and saw their cancellation),
//! a server running it, and 2026-07-28 requests as a client of that
//! revision sends them (`Mcp-Protocol-Version`, `Mcp-Method`, `Mcp-Name`
//! headers, the protocol fields in `_meta`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_bounded_session::BoundedSessionManager;
use reqwest::StatusCode;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    ProgressNotificationParam, RequestMetaObject, ServerCapabilities, ServerConfig,
    SubscriptionFilter,
};
use rmcp::service::SubscriptionContext;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

use super::mcp::STATELESS_VERSION;
use super::{Client, TestServer};

/// What the handlers of one server report, shared with the test.
#[derive(Debug, Default)]
pub struct Probe {
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Cancelled by the test: every `hold` returns at once.
    release: CancellationToken,
    listening: Mutex<BTreeSet<String>>,
    listen_cancelled: Mutex<BTreeSet<String>>,
}

impl Probe {
    /// `hold` handlers running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// The most `hold` handlers that ever ran at once.
    pub fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }

    /// Ends every `hold`, running or to come.
    pub fn release(&self) {
        self.release.cancel();
    }

    /// Whether the `listen` of the request with JSON-RPC id `id` started.
    pub fn listen_started(&self, id: u64) -> bool {
        self.listening.lock().unwrap().contains(&id.to_string())
    }

    /// Whether the `listen` of the request with JSON-RPC id `id` saw its
    /// cancellation.
    pub fn listen_cancelled(&self, id: u64) -> bool {
        self.listen_cancelled
            .lock()
            .unwrap()
            .contains(&id.to_string())
    }
}

/// Arguments of `hold`, `expensive` and `boom`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct HoldParams {
    /// How long to hold at most, in milliseconds (until released sooner).
    pub ms: u64,
}

/// Counts a running `hold` while it lives (also when its future is
/// dropped: a cancelled request).
struct Running<'a>(&'a Probe);

impl<'a> Running<'a> {
    fn enter(probe: &'a Probe) -> Self {
        let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_running.fetch_max(now, Ordering::SeqCst);
        Self(probe)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The handler: `echo`, `hold` (counted in the probe, sends one progress
/// notification when given a token, then waits `ms` or the release),
/// `expensive` (the same under another name, for request costs), `boom`
/// (panics), and `subscriptions/listen` (recorded in the probe).
#[derive(Debug, Clone)]
pub struct AdmissionServer {
    probe: Arc<Probe>,
    tool_router: ToolRouter<Self>,
}

impl AdmissionServer {
    async fn held(&self, ms: u64, meta: RequestMetaObject, client: Peer<RoleServer>) -> String {
        let _running = Running::enter(&self.probe);
        if let Some(token) = meta.get_progress_token() {
            let _ = client
                .notify_progress(ProgressNotificationParam::new(token, 1.0))
                .await;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            () = self.probe.release.cancelled() => {}
        }
        "held".to_owned()
    }
}

#[tool_router]
impl AdmissionServer {
    #[tool(description = "Return the given text unchanged")]
    fn echo(
        &self,
        Parameters(super::handler::EchoParams { text }): Parameters<super::handler::EchoParams>,
    ) -> String {
        text
    }

    #[tool(description = "Hold for `ms` milliseconds or until released")]
    async fn hold(
        &self,
        Parameters(HoldParams { ms }): Parameters<HoldParams>,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
    ) -> String {
        self.held(ms, meta, client).await
    }

    #[tool(description = "`hold`, at a higher request cost")]
    async fn expensive(
        &self,
        Parameters(HoldParams { ms }): Parameters<HoldParams>,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
    ) -> String {
        self.held(ms, meta, client).await
    }

    #[tool(description = "Panic after `ms` milliseconds")]
    async fn boom(&self, Parameters(HoldParams { ms }): Parameters<HoldParams>) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        std::panic::panic_any(BOOM);
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AdmissionServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let id = context.request_context().id.to_string();
        self.probe.listening.lock().unwrap().insert(id.clone());
        context.cancelled().await;
        self.probe.listen_cancelled.lock().unwrap().insert(id);
        Ok(())
    }
}

/// What `boom` panics with.
const BOOM: &str = "boom: the test handler panics on purpose";

/// Keeps `boom`'s panics (hundreds in a soak) out of the test output;
/// every other panic is reported as before.
fn quiet_boom_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&BOOM) {
                previous(info);
            }
        }));
    });
}

impl TestServer {
    /// A server running [`AdmissionServer`] under `manager` and its layer;
    /// the probe its handlers report to.
    pub async fn start_admission(manager: Arc<BoundedSessionManager>) -> (Self, Arc<Probe>) {
        quiet_boom_panics();
        let probe = Arc::new(Probe::default());
        let shutdown = CancellationToken::new();
        let service = StreamableHttpService::new(
            {
                let probe = probe.clone();
                move || {
                    Ok(AdmissionServer {
                        probe: probe.clone(),
                        tool_router: AdmissionServer::tool_router(),
                    })
                }
            },
            manager.clone(),
            StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
        );
        let app = axum::Router::new().nest_service("/mcp", manager.layer().layer(service));
        (Self::serve(manager, app, shutdown).await, probe)
    }
}

/// The `_meta` protocol fields of a 2026-07-28 request, with `extra`
/// (a progress token, say) added.
fn stateless_meta(extra: Value) -> Value {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "admission-tests", "version": "1" }
    });
    if let (Some(meta), Value::Object(extra)) = (meta.as_object_mut(), extra) {
        meta.extend(extra);
    }
    meta
}

/// A 2026-07-28 `POST` of `method` (`name` in `Mcp-Name`), ready to send:
/// `params` with the protocol `_meta` fields added.
pub fn stateless_post(
    client: &Client,
    id: u64,
    method: &str,
    name: Option<&str>,
    mut params: Value,
    meta: Value,
) -> reqwest::RequestBuilder {
    params["_meta"] = stateless_meta(meta);
    let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
    let mut request = client
        .http
        .post(&client.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS_VERSION)
        .header("mcp-method", method);
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    request.json(&body)
}

/// A 2026-07-28 `tools/call` of `tool` with `arguments`.
pub fn call(client: &Client, id: u64, tool: &str, arguments: Value) -> reqwest::RequestBuilder {
    stateless_post(
        client,
        id,
        "tools/call",
        Some(tool),
        json!({ "name": tool, "arguments": arguments }),
        json!({}),
    )
}

/// A 2026-07-28 `tools/call` of `tool` with a progress token: its answer
/// starts (200, an SSE stream) with the tool's first progress notification.
pub fn call_with_progress(
    client: &Client,
    id: u64,
    tool: &str,
    arguments: Value,
) -> reqwest::RequestBuilder {
    stateless_post(
        client,
        id,
        "tools/call",
        Some(tool),
        json!({ "name": tool, "arguments": arguments }),
        json!({ "progressToken": format!("p{id}") }),
    )
}

/// A 2026-07-28 `subscriptions/listen` with JSON-RPC id `id`.
pub fn listen(client: &Client, id: u64) -> reqwest::RequestBuilder {
    stateless_post(
        client,
        id,
        "subscriptions/listen",
        None,
        json!({ "notifications": { "toolsListChanged": true } }),
        json!({}),
    )
}

/// Opens a listen stream and waits for its acknowledgment; the open stream.
pub async fn open_listen(client: &Client, id: u64) -> super::SseReader {
    let response = listen(client, id).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "listen {id}");
    let mut reader = super::SseReader::new(response);
    loop {
        let event = reader
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("listen {id} ended before its acknowledgment"));
        if event.message.as_ref().is_some_and(|m| {
            m["method"].as_str() == Some("notifications/subscriptions/acknowledged")
        }) {
            return reader;
        }
    }
}

/// The text of the tool result in a whole answer (JSON or SSE).
pub fn result_text_of(body: &str) -> Option<String> {
    let messages = match serde_json::from_str::<Value>(body) {
        Ok(message) => vec![message],
        Err(_) => super::sse_messages(body),
    };
    messages.iter().find_map(|m| {
        m["result"]["content"][0]["text"]
            .as_str()
            .map(str::to_owned)
    })
}

/// Checks a refusal: `status`, `Retry-After: retry_after`, and the JSON-RPC
/// error (no id, code -32029, `data.reason`, `data.retryAfterSeconds`).
pub async fn assert_refused(
    response: reqwest::Response,
    status: StatusCode,
    reason: &str,
    retry_after: u64,
) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some(retry_after.to_string()),
    );
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body: Value = response.json().await.expect("a JSON-RPC error body");
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(body.get("id").is_none(), "{body}");
    assert_eq!(body["error"]["code"], -32029, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(body["error"]["data"]["reason"], reason, "{body}");
    assert_eq!(
        body["error"]["data"]["retryAfterSeconds"], retry_after,
        "{body}"
    );
}
