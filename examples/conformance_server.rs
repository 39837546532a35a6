//! The server the official MCP conformance suite
//! ([`@modelcontextprotocol/conformance`](https://github.com/modelcontextprotocol/conformance),
//! `server` mode) runs against in CI: axum + rmcp's `StreamableHttpService` +
//! `BoundedSessionManager`, wrapped in `BoundedSessionLayer` as a real
//! deployment would be.
//!
//! It implements every tool, prompt, resource, resource template, completion
//! and logging behaviour the suite's server scenarios call, with the names,
//! arguments and contents the suite expects (they are fixed by the suite, not
//! chosen here). `.ci/conformance.sh` builds it, starts it and runs the suite.
//!
//! ```text
//! cargo run --example conformance_server -- --bind 127.0.0.1:3000
//! npx @modelcontextprotocol/conformance server --url http://127.0.0.1:3000/mcp
//! ```
//!
//! Once listening it prints one line, `listening on http://ADDR/mcp`, on
//! stdout (`--bind 127.0.0.1:0` picks a free port); logs go to stderr.
//!
//! `test_reconnection` (scenario `server-sse-polling`, SEP-1699) closes its
//! own request's SSE stream through `BoundedSessionManager::session` before
//! it answers; the client resumes with `GET` and `Last-Event-ID` and gets the
//! answer from the session's replay buffer.

// The suite still exercises logging, sampling and `resources/subscribe`,
// which rmcp marks deprecated (SEP-2577) but still serves.
#![allow(
    deprecated,
    reason = "the conformance suite tests these legacy features"
)]

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_bounded_session::{
    BoundedSessionLayer, BoundedSessionManager, MemorySessionStore, SessionConfig,
};
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
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

const USAGE: &str = "\
Usage: conformance_server [--bind ADDR] [--park-after SECS]

  --bind ADDR         address to listen on (default 127.0.0.1:3000; port 0 picks a free port)
  --park-after SECS   park sessions idle this long in a MemorySessionStore (their next
                      request restores them with a fresh handler); default: no parking";

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
struct ConformanceServer {
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
    fn new(sessions: Arc<BoundedSessionManager>) -> Self {
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
        if client
            .peer_info()
            .is_none_or(|info| info.capabilities.elicitation.is_none())
        {
            return Err(ErrorData::invalid_request(
                "the client does not support elicitation",
                None,
            ));
        }
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
        if client
            .peer_info()
            .is_none_or(|info| info.capabilities.sampling.is_none())
        {
            return Err(ErrorData::invalid_request(
                "the client does not support sampling",
                None,
            ));
        }
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

/// MCP's log levels, least severe first.
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// A string argument of a prompt, required.
fn prompt_argument<'a>(
    arguments: Option<&'a JsonObject>,
    name: &str,
) -> Result<&'a str, ErrorData> {
    arguments
        .and_then(|arguments| arguments.get(name))
        .and_then(|value| value.as_str())
        .ok_or_else(|| ErrorData::invalid_params(format!("missing argument `{name}`"), None))
}

#[tool_handler]
impl ServerHandler for ConformanceServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "mcp-bounded-session-conformance",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("The server the MCP conformance suite runs against.")
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().expect("log level lock") = request.level;
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
            (Reference::Prompt(prompt), "arg1" | "arg2")
                if prompt.name == "test_prompt_with_arguments" =>
            {
                &["paris", "park", "party"]
            }
            (Reference::Resource(resource), "id") if resource.uri == TEMPLATE_URI => {
                &["123", "456", "789"]
            }
            _ => &[],
        };
        let values = candidates
            .iter()
            .filter(|candidate| candidate.starts_with(&request.argument.value))
            .map(|candidate| (*candidate).to_owned())
            .collect();
        let completion = CompletionInfo::new(values)
            .map_err(|error| ErrorData::internal_error(format!("bad completion: {error}"), None))?;
        Ok(CompleteResult::new(completion))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let required = |name: &str, description: &str| {
            PromptArgument::new(name)
                .with_description(description)
                .with_required(true)
        };
        Ok(ListPromptsResult::with_all_items(vec![
            Prompt::new(
                "test_simple_prompt",
                Some("A simple prompt without arguments"),
                None,
            ),
            Prompt::new(
                "test_prompt_with_arguments",
                Some("A prompt with two required arguments"),
                Some(vec![
                    required("arg1", "First test argument"),
                    required("arg2", "Second test argument"),
                ]),
            ),
            Prompt::new(
                "test_prompt_with_embedded_resource",
                Some("A prompt that embeds a resource"),
                Some(vec![required(
                    "resourceUri",
                    "URI of the resource to embed",
                )]),
            ),
            Prompt::new(
                "test_prompt_with_image",
                Some("A prompt with an image"),
                None,
            ),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let arguments = request.arguments.as_ref();
        let messages = match request.name.as_str() {
            "test_simple_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "This is a simple prompt for testing.",
            )],
            "test_prompt_with_arguments" => {
                let arg1 = prompt_argument(arguments, "arg1")?;
                let arg2 = prompt_argument(arguments, "arg2")?;
                vec![PromptMessage::new_text(
                    Role::User,
                    format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"),
                )]
            }
            "test_prompt_with_embedded_resource" => {
                let uri = prompt_argument(arguments, "resourceUri")?;
                vec![
                    PromptMessage::new(
                        Role::User,
                        ContentBlock::resource(ResourceContents::text(
                            "Embedded resource content for testing.",
                            uri,
                        )),
                    ),
                    PromptMessage::new_text(
                        Role::User,
                        "Please process the embedded resource above.",
                    ),
                ]
            }
            "test_prompt_with_image" => vec![
                PromptMessage::new(Role::User, ContentBlock::image(PNG_BASE64, "image/png")),
                PromptMessage::new_text(Role::User, "Please analyze the image above."),
            ],
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown prompt `{other}`"),
                    None,
                ));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(STATIC_TEXT_URI, "static-text")
                .with_description("A static text resource")
                .with_mime_type("text/plain"),
            Resource::new(STATIC_BINARY_URI, "static-binary")
                .with_description("A static binary resource (a PNG image)")
                .with_mime_type("image/png"),
            Resource::new(WATCHED_URI, "watched-resource")
                .with_description("A resource clients may subscribe to")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(TEMPLATE_URI, "template-data")
                .with_description("Data for the given id")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let contents = match uri.as_str() {
            STATIC_TEXT_URI => ResourceContents::text(
                "This is the content of the static text resource.",
                uri.as_str(),
            ),
            STATIC_BINARY_URI => {
                ResourceContents::blob(PNG_BASE64, uri.as_str()).with_mime_type("image/png")
            }
            WATCHED_URI => ResourceContents::text("The watched resource's content.", uri.as_str()),
            _ => {
                let id = uri
                    .strip_prefix("test://template/")
                    .and_then(|rest| rest.strip_suffix("/data"))
                    .filter(|id| !id.is_empty() && !id.contains('/'))
                    .ok_or_else(|| {
                        ErrorData::resource_not_found(
                            format!("no resource `{uri}`"),
                            Some(json!({"uri": uri})),
                        )
                    })?;
                let data =
                    json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
                ResourceContents::text(data.to_string(), uri.as_str())
                    .with_mime_type("application/json")
            }
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .remove(&request.uri);
        Ok(())
    }
}

/// The address to listen on and `--park-after`; `None` for `--help`.
type Args = (SocketAddr, Option<Duration>);

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut bind = SocketAddr::from(([127, 0, 0, 1], 3000));
    let mut park_after = None;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--bind" => {
                let value = args.next().ok_or("--bind needs a value")?;
                bind = value
                    .parse()
                    .map_err(|e| format!("--bind {value}: {e} (expected e.g. 127.0.0.1:3000)"))?;
            }
            "--park-after" => {
                let value = args.next().ok_or("--park-after needs a value")?;
                let secs = value
                    .parse::<f64>()
                    .ok()
                    .filter(|secs| *secs > 0.0 && secs.is_finite())
                    .ok_or_else(|| format!("--park-after {value}: expected seconds > 0"))?;
                park_after = Some(Duration::from_secs_f64(secs));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Some((bind, park_after)))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let (bind, park_after) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let shutdown = CancellationToken::new();
    // The default configuration accepts only loopback `Host` headers, which
    // is the DNS rebinding protection `dns-rebinding-protection` checks.
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    let manager = match park_after {
        None => Arc::new(BoundedSessionManager::new(SessionConfig::default(), 1000)),
        Some(after) => {
            let parked = MemorySessionStore::default();
            config.session_store = Some(Arc::new(parked.clone()));
            BoundedSessionManager::builder(1000)
                .park_in(&parked)
                .park_after(after)
                .build()
        }
    };
    let sessions = manager.clone();
    let service = StreamableHttpService::new(
        move || Ok(ConformanceServer::new(sessions.clone())),
        manager,
        config,
    );
    let app =
        axum::Router::new().nest_service("/mcp", BoundedSessionLayer::default().layer(service));

    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {bind}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().unwrap_or(bind);
    println!("listening on http://{address}/mcp");

    // With the peer address, as per-client limits key on it.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    if let Err(error) = serve.await {
        eprintln!("error: server failed: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
