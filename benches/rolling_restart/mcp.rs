//! Speaking MCP by hand to the balancer's current instance.

use super::*;

pub(crate) fn transport_label(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connect error".into()
    } else {
        "transport error".into()
    }
}

/// An SSE event's `id:` and its `data:` lines joined.
pub(crate) fn sse_fields(event: &str) -> (Option<String>, Option<String>) {
    let mut id = None;
    let mut data: Option<String> = None;
    for line in event.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim_start().to_owned());
        } else if let Some(chunk) = line.strip_prefix("data:") {
            data.get_or_insert_default().push_str(chunk.trim_start());
        }
    }
    (id, data)
}

/// The JSON-RPC messages in an SSE body (priming events carry no data).
pub(crate) fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| sse_fields(event).1)
        .filter_map(|data| serde_json::from_str(&data).ok())
        .collect()
}

/// The answer to one `echo` call.
pub(crate) enum Call {
    Answered,
    SessionGone,
    /// 503 with `Retry-After`.
    Refused(Duration),
    Failed(String),
}

/// Speaks MCP's Streamable HTTP by hand from one source address, to the
/// balancer's current target.
pub(crate) struct Mcp {
    pub(crate) http: reqwest::Client,
    pub(crate) balancer: Arc<Balancer>,
}

impl Mcp {
    pub(crate) fn new(balancer: Arc<Balancer>, source: Ipv4Addr) -> Self {
        let http = reqwest::Client::builder()
            .local_address(IpAddr::V4(source))
            // An SSE answer goes out in several small writes; without
            // TCP_NODELAY each round trip can wait ~40 ms on delayed ACKs.
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Self { http, balancer }
    }

    pub(crate) fn post(
        &self,
        url: &str,
        session: Option<&str>,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .json(body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    /// `initialize` + `notifications/initialized` on the current target:
    /// the new session's id, or why there is none.
    pub(crate) async fn open_session(&self) -> Result<String, String> {
        let (_, url) = self.balancer.target();
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "rolling_restart", "version": "1" }
            }
        });
        let response = self
            .post(url, None, &body)
            .send()
            .await
            .map_err(|e| transport_label(&e))?;
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.map_err(|e| transport_label(&e))?;
        let Some(session) = session.filter(|_| status.is_success()) else {
            return Err(status.as_u16().to_string());
        };
        if !sse_messages(&body)
            .iter()
            .any(|message| message["result"]["serverInfo"].is_object())
        {
            return Err(format!("{} without a result", status.as_u16()));
        }
        let body = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let status = self
            .post(url, Some(&session), &body)
            .send()
            .await
            .map_err(|e| transport_label(&e))?
            .status();
        if status != StatusCode::ACCEPTED {
            return Err(format!("{} at notifications/initialized", status.as_u16()));
        }
        Ok(session)
    }

    /// One `echo` call in `session`, sent to the current target.
    pub(crate) async fn echo(&self, session: &str, id: u64) -> (Instance, Call) {
        let (on, url) = self.balancer.target();
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "echo", "arguments": { "text": "ping" } }
        });
        let response = match self.post(url, Some(session), &body).send().await {
            Ok(response) => response,
            Err(error) => return (on, Call::Failed(transport_label(&error))),
        };
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return (on, Call::SessionGone);
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if let (StatusCode::SERVICE_UNAVAILABLE, Some(secs)) = (status, retry_after) {
            return (on, Call::Refused(Duration::from_secs(secs)));
        }
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return (on, Call::Failed(transport_label(&error))),
        };
        if status != StatusCode::OK {
            return (on, Call::Failed(status.as_u16().to_string()));
        }
        let answered = sse_messages(&text)
            .iter()
            .any(|message| message["id"] == id && message["result"].is_object());
        let call = match answered {
            true => Call::Answered,
            false => Call::Failed("200 without a result".into()),
        };
        (on, call)
    }
}
