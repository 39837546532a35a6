//! The example server's MCP handler: one plain tool, one that reports
//! progress while it works, and one that sends notifications to the
//! client's standalone (GET) stream. Shared with the integration tests.

use std::time::Duration;

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    ProgressNotificationParam, RequestMetaObject, ResourceUpdatedNotificationParam,
    ServerCapabilities, ServerConfig,
};
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

/// Demo MCP server.
#[derive(Debug, Clone)]
pub struct DemoServer {
    /// Built once per session: `#[tool_handler]` would otherwise rebuild
    /// the router (names validated, schemas generated) on every tool call.
    tool_router: ToolRouter<Self>,
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
    /// and are kept for its next GET if none is open.
    #[tool(
        description = "Send `count` numbered resource-updated notifications to the standalone stream"
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
        for n in 1..=count {
            client
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(format!(
                    "demo://announce/{n}"
                )))
                .await
                .map_err(|error| {
                    ErrorData::internal_error(format!("notification not sent: {error}"), None)
                })?;
        }
        Ok(format!("announced {count}"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Demo server behind mcp-bounded-session: `echo`, `count` and `announce`.",
        )
    }
}
