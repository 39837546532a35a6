//! The conformance server's MCP handler: every tool, prompt, resource,
//! resource template, completion and logging behaviour the suite's server
//! scenarios call, with the names, arguments and contents the suite expects.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_bounded_session::BoundedSessionManager;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ClientResult, CompleteRequestParams, CompleteResult, CompletionInfo,
    ContentBlock, CreateMessageRequestParams, ElicitRequest, ElicitRequestParams,
    ElicitationSchema, GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
    JsonObject, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, LoggingLevel,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam, Prompt,
    PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Reference, RequestMetaObject, Resource, ResourceContents, ResourceTemplate,
    Role, SamplingMessage, SamplingMessageContentBlock, ServerCapabilities, ServerConfig,
    ServerRequest, SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::json;

mod capabilities;

use capabilities::severity;

/// A 1x1 red PNG.
const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
/// Eight samples of silence: 8 kHz, mono, 8-bit PCM.
const WAV_BASE64: &str = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==";

/// The `retry` `test_reconnection` sends as it closes its stream.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

const STATIC_TEXT_URI: &str = "test://static-text";
const STATIC_BINARY_URI: &str = "test://static-binary";
const WATCHED_URI: &str = "test://watched-resource";
const TEMPLATE_URI: &str = "test://template/{id}/data";

/// Arguments of `test_sampling`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct SamplingParams {
    /// The prompt to send to the client's LLM.
    prompt: String,
}

/// Arguments of `test_elicitation`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct ElicitationParams {
    /// The message to show the user.
    message: String,
}

/// The suite's server, one per session.
#[derive(Debug, Clone)]
pub struct ConformanceServer {
    #[expect(dead_code, reason = "read through the code #[tool_handler] generates")]
    tool_router: ToolRouter<Self>,
    /// To close a request's SSE stream from the server side.
    sessions: Arc<BoundedSessionManager>,
    /// The level `logging/setLevel` set; everything is sent until then.
    log_level: Arc<Mutex<LoggingLevel>>,
    /// URIs the client subscribed to.
    subscriptions: Arc<Mutex<BTreeSet<String>>>,
}

impl ConformanceServer {
    pub fn new(sessions: Arc<BoundedSessionManager>) -> Self {
        Self {
            tool_router: Self::tool_router(),
            sessions,
            log_level: Arc::new(Mutex::new(LoggingLevel::Debug)),
            subscriptions: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Sends a log message unless it is below the level the client set.
    async fn log(&self, client: &Peer<RoleServer>, level: LoggingLevel, message: &str) {
        let threshold = *self.log_level.lock().expect("log level lock");
        if severity(level) < severity(threshold) {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, json!(message))
            .with_logger("conformance_server");
        if let Err(error) = client.notify_logging_message(param).await {
            tracing::warn!(%error, "log message not sent");
        }
    }

    /// Asks the client to fill in `schema`; describes the answer as text.
    async fn elicit(
        client: &Peer<RoleServer>,
        message: impl Into<String>,
        schema: serde_json::Value,
    ) -> Result<String, ErrorData> {
        require(client, "elicitation", |info| {
            info.capabilities.elicitation.is_some()
        })?;
        let requested_schema: ElicitationSchema = serde_json::from_value(schema)
            .map_err(|error| ErrorData::internal_error(format!("bad schema: {error}"), None))?;
        let request = ElicitRequest::new(ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.into(),
            requested_schema,
        });
        match client
            .send_request(ServerRequest::ElicitRequest(request))
            .await
        {
            Ok(ClientResult::ElicitResult(result)) => Ok(format!(
                "action={}, content={}",
                json!(result.action),
                result.content.unwrap_or_else(|| json!({}))
            )),
            Ok(_) => Err(ErrorData::internal_error(
                "unexpected answer to elicitation/create",
                None,
            )),
            Err(error) => Err(ErrorData::internal_error(
                format!("elicitation failed: {error}"),
                None,
            )),
        }
    }
}

#[tool_router]
impl ConformanceServer {
    #[tool(description = "Returns a simple text content block")]
    fn test_simple_text(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(
            "This is a simple text response for testing.",
        )])
    }

    #[tool(description = "Returns a 1x1 PNG image")]
    fn test_image_content(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::image(PNG_BASE64, "image/png")])
    }

    #[tool(description = "Returns a short WAV clip")]
    fn test_audio_content(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::audio(WAV_BASE64, "audio/wav")])
    }

    #[tool(description = "Returns an embedded text resource")]
    fn test_embedded_resource(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::resource(ResourceContents::text(
            "This is an embedded resource content.",
            "test://embedded-resource",
        ))])
    }

    #[tool(description = "Returns text, an image and an embedded resource")]
    fn test_multiple_content_types(&self) -> CallToolResult {
        let resource = ResourceContents::text(
            json!({"test": "data", "value": 123}).to_string(),
            "test://mixed-content-resource",
        )
        .with_mime_type("application/json");
        CallToolResult::success(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(PNG_BASE64, "image/png"),
            ContentBlock::resource(resource),
        ])
    }

    #[tool(description = "Sends three info log messages while it runs")]
    async fn test_tool_with_logging(&self, client: Peer<RoleServer>) -> CallToolResult {
        self.log(&client, LoggingLevel::Info, "Tool execution started")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log(&client, LoggingLevel::Info, "Tool processing data")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log(&client, LoggingLevel::Info, "Tool execution completed")
            .await;
        CallToolResult::success(vec![ContentBlock::text(
            "Tool with logging executed successfully",
        )])
    }

    #[tool(description = "Always fails with a tool error")]
    fn test_error_handling(&self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])
    }

    #[tool(description = "Reports progress 0, 50 and 100 out of 100")]
    async fn test_tool_with_progress(
        &self,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let token = meta.get_progress_token();
        for (step, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
            if step > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(token) = &token {
                client
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), progress).with_total(100.0),
                    )
                    .await
                    .map_err(|error| {
                        ErrorData::internal_error(format!("progress not sent: {error}"), None)
                    })?;
            }
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "Tool with progress executed successfully",
        )]))
    }

    #[tool(description = "Asks the client's LLM to answer `prompt` (sampling/createMessage)")]
    async fn test_sampling(
        &self,
        Parameters(SamplingParams { prompt }): Parameters<SamplingParams>,
        client: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        require(&client, "sampling", |info| {
            info.capabilities.sampling.is_some()
        })?;
        let request = CreateMessageRequestParams::new(
            vec![SamplingMessage::new(
                Role::User,
                SamplingMessageContentBlock::text(prompt),
            )],
            100,
        );
        let answer = client.create_message(request).await.map_err(|error| {
            ErrorData::internal_error(format!("sampling failed: {error}"), None)
        })?;
        let text = answer
            .message
            .content
            .iter()
            .filter_map(|block| block.as_text())
            .map(|text| text.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "LLM response: {text}"
        ))]))
    }

    #[tool(description = "Asks the user for a username and an email (elicitation/create)")]
    async fn test_elicitation(
        &self,
        Parameters(ElicitationParams { message }): Parameters<ElicitationParams>,
        client: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let schema = json!({
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"}
            },
            "required": ["username", "email"]
        });
        let answer = Self::elicit(&client, message, schema).await?;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "User response: {answer}"
        ))]))
    }

    #[tool(description = "Elicits a form whose fields all have defaults (SEP-1034)")]
    async fn test_elicitation_sep1034_defaults(
        &self,
        client: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active"
                },
                "verified": {"type": "boolean", "description": "Verified user", "default": true}
            }
        });
        let answer =
            Self::elicit(&client, "Please review and update the form fields", schema).await?;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "Elicitation completed: {answer}"
        ))]))
    }

    #[tool(description = "Elicits a form with the five enum schema variants (SEP-1330)")]
    async fn test_elicitation_sep1330_enums(
        &self,
        client: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let schema = json!({
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string",
                    "enum": ["option1", "option2", "option3"]
                },
                "titledSingle": {
                    "type": "string",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"}
                    ]
                },
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"]
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]}
                },
                "titledMulti": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"}
                        ]
                    }
                }
            }
        });
        let answer = Self::elicit(&client, "Please pick from the enum fields", schema).await?;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "Elicitation completed: {answer}"
        ))]))
    }

    #[tool(
        name = "json_schema_2020_12_tool",
        description = "Tool with JSON Schema 2020-12 features",
        input_schema = json_schema_2020_12_input()
    )]
    fn json_schema_2020_12_tool(&self, arguments: JsonObject) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(format!(
            "Received: {}",
            serde_json::Value::Object(arguments)
        ))])
    }

    /// Closes its request's SSE stream, telling the client to reconnect
    /// after `RECONNECT_AFTER`, then answers: the answer reaches the client
    /// on its `GET` with `Last-Event-ID` (SEP-1699 polling).
    #[tool(description = "Closes its SSE stream mid-call, then answers (SSE polling test)")]
    async fn test_reconnection(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let session_id = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|request| request.headers.get("mcp-session-id"))
            .and_then(|id| id.to_str().ok())
            .ok_or_else(|| ErrorData::invalid_request("no Mcp-Session-Id on the request", None))?;
        let session = self
            .sessions
            .session(&session_id.into())
            .ok_or_else(|| ErrorData::internal_error("the session is gone", None))?;
        session
            .close_request_sse_stream(context.id.clone(), Some(RECONNECT_AFTER))
            .await
            .map_err(|error| {
                ErrorData::internal_error(format!("cannot close the SSE stream: {error}"), None)
            })?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "Reconnection test completed",
        )]))
    }
}

/// The input schema `json-schema-2020-12` checks is listed unchanged.
fn json_schema_2020_12_input() -> Arc<JsonObject> {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "city": {"type": "string"}
                }
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"}
        },
        "additionalProperties": false
    });
    match schema {
        serde_json::Value::Object(object) => Arc::new(object),
        _ => unreachable!("the schema literal is an object"),
    }
}

/// `Err` (invalid request) unless the client declared `capability`
/// (`declared` reads its `initialize` parameters).
fn require(
    client: &Peer<RoleServer>,
    capability: &str,
    declared: impl FnOnce(&rmcp::model::InitializeRequestParams) -> bool,
) -> Result<(), ErrorData> {
    if client.peer_info().is_some_and(|info| declared(&info)) {
        return Ok(());
    }
    Err(ErrorData::invalid_request(
        format!("the client does not support {capability}"),
        None,
    ))
}
