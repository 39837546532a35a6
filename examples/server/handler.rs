//! The example server's MCP handler: one plain tool, one that reports
//! progress while it works, and one that sends notifications to the
//! client's standalone (GET) stream and to every `subscriptions/listen`
//! stream (protocol 2026-07-28) that asked for them. Shared with the
//! integration tests and benches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    ProgressNotificationParam, RequestMetaObject, ResourceUpdatedNotificationParam,
    ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{SubscriptionContext, SubscriptionSink};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};

/// Arguments of the `echo` tool.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoParams {
    /// Text to send back.
    pub text: String,
}

/// Arguments of the `count` tool.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CountParams {
    /// How many steps to count (1 to 1000).
    pub steps: u32,
    /// Pause between steps, in milliseconds (at most 10000; default 10).
    pub delay_ms: Option<u64>,
}

/// Arguments of the `announce` tool.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct AnnounceParams {
    /// How many notifications to send (1 to 100).
    pub count: u32,
}

/// The scheme of the resources this server announces updates of.
const RESOURCE_SCHEME: &str = "demo://";

/// The sinks of the listen streams open in this process, by a number of
/// their own: `announce` sends to each. A handler is built per request in
/// 2026-07-28 (and per session before), so the registry cannot live in it.
static LISTENERS: Mutex<BTreeMap<u64, SubscriptionSink>> = Mutex::new(BTreeMap::new());
static NEXT_LISTENER: AtomicU64 = AtomicU64::new(0);

/// Removes a listen stream's sink when its `listen` ends, also when the
/// future is dropped (the client closed the stream, or the layer replaced
/// it with a newer one of the same client).
struct Registered(u64);

impl Registered {
    fn new(sink: SubscriptionSink) -> Self {
        let id = NEXT_LISTENER.fetch_add(1, Ordering::Relaxed);
        listeners().insert(id, sink);
        Self(id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        listeners().remove(&self.0);
    }
}

/// The registry, also after a panic elsewhere while it was held (its map
/// stays consistent: every change is one insert or remove).
fn listeners() -> std::sync::MutexGuard<'static, BTreeMap<u64, SubscriptionSink>> {
    LISTENERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One `count` call running, in the gauge `demo_count_calls_running`
/// (with `--features metrics`): what a flood of long calls holds, seen
/// from inside the handler (a call's units are admitted before it starts
/// and released after it ends, so this never exceeds what the layer holds).
/// Also counted in the server's own counter, if it has one (tests read it
/// to see a handler cancelled).
struct CountRunning(Option<Arc<AtomicUsize>>);

impl CountRunning {
    fn start(counter: Option<Arc<AtomicUsize>>) -> Self {
        #[cfg(feature = "metrics")]
        metrics::gauge!("demo_count_calls_running").increment(1.0);
        if let Some(counter) = &counter {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        Self(counter)
    }
}

impl Drop for CountRunning {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("demo_count_calls_running").decrement(1.0);
        if let Some(counter) = &self.0 {
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Demo MCP server.
#[derive(Debug, Clone)]
pub struct DemoServer {
    /// Built once per session: `#[tool_handler]` would otherwise rebuild
    /// the router (names validated, schemas generated) on every tool call.
    tool_router: ToolRouter<Self>,
    /// `count` calls running, where the caller wants to know.
    count_calls: Option<Arc<AtomicUsize>>,
}

impl Default for DemoServer {
    fn default() -> Self {
        Self::new()
    }
}

impl DemoServer {
    /// A server with the `echo`, `count` and `announce` tools.
    pub fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
            count_calls: None,
        }
    }

    /// A server that also counts its `count` calls running in `counter`.
    #[allow(dead_code)] // for the tests; the example reads its gauge
    pub fn counting_calls(counter: Arc<AtomicUsize>) -> Self {
        Self {
            count_calls: Some(counter),
            ..Self::new()
        }
    }
}

#[tool_router]
impl DemoServer {
    /// Returns its input.
    #[tool(description = "Return the given text unchanged")]
    fn echo(&self, Parameters(EchoParams { text }): Parameters<EchoParams>) -> String {
        text
    }

    /// Counts to `steps`, sending a progress notification after each step
    /// when the caller supplied a progress token.
    #[tool(description = "Count to `steps`, sending a progress notification per step")]
    async fn count(
        &self,
        Parameters(CountParams { steps, delay_ms }): Parameters<CountParams>,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        if !(1..=1000).contains(&steps) {
            return Err(ErrorData::invalid_params(
                "steps must be between 1 and 1000",
                None,
            ));
        }
        let delay = Duration::from_millis(delay_ms.unwrap_or(10));
        if delay > Duration::from_secs(10) {
            return Err(ErrorData::invalid_params(
                "delay_ms must be at most 10000",
                None,
            ));
        }
        let _running = CountRunning::start(self.count_calls.clone());
        let token = meta.get_progress_token();
        for step in 1..=steps {
            tokio::time::sleep(delay).await;
            if let Some(token) = &token {
                client
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), f64::from(step))
                            .with_total(f64::from(steps))
                            .with_message(format!("step {step} of {steps}")),
                    )
                    .await
                    .map_err(|error| {
                        ErrorData::internal_error(format!("progress not sent: {error}"), None)
                    })?;
            }
        }
        Ok(format!("counted to {steps}"))
    }

    /// Sends `count` `notifications/resources/updated` for
    /// `demo://announce/1`, `demo://announce/2`, ... They are not tied to
    /// this request, so they travel on the client's standalone (GET) stream,
    /// and are kept for its next GET if none is open. Every listen stream
    /// that subscribed to one of these URIs gets it too.
    #[tool(
        description = "Send `count` numbered resource-updated notifications to the standalone stream and to the listen streams subscribed to them"
    )]
    async fn announce(
        &self,
        Parameters(AnnounceParams { count }): Parameters<AnnounceParams>,
        client: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        if !(1..=100).contains(&count) {
            return Err(ErrorData::invalid_params(
                "count must be between 1 and 100",
                None,
            ));
        }
        let mut delivered = 0;
        for n in 1..=count {
            let uri = format!("{RESOURCE_SCHEME}announce/{n}");
            client
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.clone()))
                .await
                .map_err(|error| {
                    ErrorData::internal_error(format!("notification not sent: {error}"), None)
                })?;
            delivered += notify_listeners(&uri).await;
        }
        Ok(format!(
            "announced {count} ({delivered} sent to listen streams)"
        ))
    }
}

/// Sends `resources/updated` for `uri` to every listen stream subscribed to
/// it; how many got it. The sinks are cloned out first: a slow stream must
/// not hold the registry's lock while others register or end.
async fn notify_listeners(uri: &str) -> usize {
    let subscribed: Vec<SubscriptionSink> = listeners()
        .values()
        .filter(|sink| {
            sink.accepted()
                .resource_subscriptions
                .as_ref()
                .is_some_and(|uris| uris.iter().any(|accepted| accepted == uri))
        })
        .cloned()
        .collect();
    let mut sent = 0;
    for sink in subscribed {
        // A stream that ended meanwhile is simply skipped; its `listen`
        // removes it from the registry.
        if sink.notify_resource_updated(uri).await.is_ok() {
            sent += 1;
        }
    }
    sent
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .build();
        ServerConfig::new(capabilities).with_instructions(
            "Demo server behind mcp-bounded-session: `echo`, `count` and `announce`; \
             `subscriptions/listen` for updates of its demo:// resources.",
        )
    }

    /// Accepts `resources/updated` for this server's `demo://` resources,
    /// nothing else (rmcp removes what was not requested).
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| uri.starts_with(RESOURCE_SCHEME))
            .cloned()
            .collect();
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = Some(uris);
        Some(accepted)
    }

    /// Registers the stream's sink for `announce` until the client cancels
    /// it, closes it, or the layer ends it.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let _registered = Registered::new(context.sink().clone());
        context.cancelled().await;
        Ok(())
    }
}
