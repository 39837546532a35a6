//! Requests of protocol 2026-07-28 as its clients send them: no session,
//! the protocol fields in each request's `_meta`, the method and tool name
//! in headers too (SEP-2243). For the benches that speak it by hand.
#![allow(dead_code, reason = "each bench uses its own part of it")]

use serde_json::{Value, json};

/// The protocol revision without sessions.
pub const VERSION: &str = "2026-07-28";

/// A `tools/call` of `name` with `arguments`, with the `_meta` fields a
/// 2026-07-28 client puts in every request.
pub fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": name,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "bench", "version": "1" }
            }
        }
    })
}

/// [`tool_call`] with a progress token: the server then answers with an
/// event stream at once and sends progress on it.
pub fn tool_call_with_progress(id: u64, name: &str, arguments: Value) -> Value {
    let mut call = tool_call(id, name, arguments);
    call["params"]["_meta"]["progressToken"] = json!(id);
    call
}

/// The POST of `call`, a `tools/call` of `name`, headers and all.
pub fn post_call(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    call: &Value,
) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .json(call)
}

/// The JSON-RPC message in one SSE event (`None` for an event without
/// data, such as a priming event).
pub fn sse_message(event: &str) -> Option<Value> {
    let data: String = event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    serde_json::from_str(&data).ok()
}

/// Whether an SSE body (or a JSON body) carries the result of request `id`.
pub fn has_result(body: &str, id: u64) -> bool {
    let answered = |message: &Value| message["id"] == id && message["result"].is_object();
    if let Ok(message) = serde_json::from_str::<Value>(body) {
        return answered(&message);
    }
    body.split("\n\n")
        .filter_map(sse_message)
        .any(|message| answered(&message))
}
