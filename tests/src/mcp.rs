//! A small MCP Streamable HTTP client speaking plain HTTP to the adapter.
//!
//! The official clients (Python, TypeScript) are driven by other tests; the reliability suite
//! needs something they cannot do: send thousands of calls from inside the test process, forge
//! headers and bodies, and see every HTTP status and header as the server sent it. Two modes:
//!
//! - **session** (2025-11-25): `initialize` answers with an `Mcp-Session-Id`, every later request
//!   carries it and `MCP-Protocol-Version: 2025-11-25`; the adapter calls the broker's
//!   `GetCredentials(session id, token)`;
//! - **sessionless** (2026-07-28): no initialize, no session id; the adapter calls
//!   `ExchangeToken(token)`.
//!
//! Responses come back as `application/json` or as a `text/event-stream` whose events carry
//! JSON-RPC messages; [`McpResponse::message`] is the message that answers the request.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// The protocol revision with sessions.
pub const SESSION_VERSION: &str = "2025-11-25";
/// The protocol revision without sessions.
pub const SESSIONLESS_VERSION: &str = "2026-07-28";
/// What every POST accepts.
pub const ACCEPT: &str = "application/json, text/event-stream";

/// What one HTTP request to `/mcp` got back.
#[derive(Debug, Clone)]
pub struct McpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as text (an event stream is kept as sent).
    pub text: String,
    /// The JSON-RPC message that answers the request, if the body held one.
    pub message: Option<Value>,
}

impl McpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `result` of the JSON-RPC answer (Null when there is none).
    pub fn result(&self) -> &Value {
        self.message
            .as_ref()
            .and_then(|m| m.get("result"))
            .unwrap_or(&Value::Null)
    }

    /// `error` of the JSON-RPC answer (Null when there is none).
    pub fn error(&self) -> &Value {
        self.message
            .as_ref()
            .and_then(|m| m.get("error"))
            .unwrap_or(&Value::Null)
    }

    /// A 200 carrying a tool result with `isError: true`.
    pub fn is_tool_error(&self) -> bool {
        self.status == StatusCode::OK && self.result()["isError"] == json!(true)
    }

    /// A 200 carrying a tool result without `isError`.
    pub fn is_tool_success(&self) -> bool {
        self.status == StatusCode::OK
            && self.result().is_object()
            && self.result()["isError"] != json!(true)
    }

    /// `structuredContent` of a tool result.
    pub fn structured(&self) -> &Value {
        &self.result()["structuredContent"]
    }

    /// `structuredContent.error.code` of a failed tool result.
    pub fn tool_error_code(&self) -> Option<&str> {
        self.structured()["error"]["code"].as_str()
    }

    /// Everything a client could show a user: status line, headers and body.
    pub fn visible_text(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        format!("{}\n{}\n{}", self.status, headers.join("\n"), self.text)
    }
}

/// The JSON-RPC message in a body: plain JSON, or the last `data:` event of a stream that parses
/// as a message with an `id` (servers may send priming events with empty data first).
pub fn parse_body(content_type: &str, text: &str) -> Option<Value> {
    if content_type.starts_with("text/event-stream") {
        let mut found = None;
        for event in text.split("\n\n") {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            if let Ok(value) = serde_json::from_str::<Value>(&data.join("\n"))
                && value.get("id").is_some()
            {
                found = Some(value);
            }
        }
        found
    } else {
        serde_json::from_str(text).ok()
    }
}

/// A client for one adapter's `/mcp`.
#[derive(Debug, Clone)]
pub struct McpHttp {
    http: reqwest::Client,
    url: String,
}

/// The headers of one request, beyond the fixed ones.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    pub token: Option<&'a str>,
    pub session: Option<&'a str>,
    pub version: Option<&'a str>,
}

impl McpHttp {
    /// A client for `mcp_url` (`http://127.0.0.1:PORT/mcp`) with a 60 s request timeout.
    pub fn new(mcp_url: &str) -> McpHttp {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client");
        McpHttp {
            http,
            url: mcp_url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A POST with the standard headers (JSON body, both Accept types) plus `call`'s; the caller
    /// may add or override headers before sending with [`McpHttp::send`].
    pub fn request(
        &self,
        body: impl Into<reqwest::Body>,
        call: &Call<'_>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .body(body);
        if let Some(token) = call.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(session) = call.session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(version) = call.version {
            request = request.header("mcp-protocol-version", version);
        }
        request
    }

    /// Sends a prepared request and reads the whole answer. `Err` only for transport failures
    /// (connection refused or reset, timeout).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<McpResponse, String> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.map_err(|e| transport_error(&e))?;
        let message = parse_body(&content_type, &text);
        Ok(McpResponse {
            status,
            headers,
            text,
            message,
        })
    }

    /// POSTs one JSON-RPC message.
    pub async fn post(&self, body: &Value, call: &Call<'_>) -> Result<McpResponse, String> {
        self.send(self.request(body.to_string(), call)).await
    }

    /// Opens a 2025-11-25 session (initialize + notifications/initialized); returns its id.
    /// `token` is sent on both requests when given. Panics when the adapter does not open one.
    pub async fn open_session(&self, token: Option<&str>) -> String {
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": SESSION_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "e2e-reliability", "version": "1" }
            }
        });
        let answer = self
            .post(
                &init,
                &Call {
                    token,
                    ..Call::default()
                },
            )
            .await
            .expect("initialize reaches the adapter");
        assert_eq!(answer.status, StatusCode::OK, "initialize: {}", answer.text);
        let session = answer
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("initialize answered without Mcp-Session-Id: {answer:?}"))
            .to_string();
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let ack = self
            .post(
                &initialized,
                &Call {
                    token,
                    session: Some(&session),
                    version: Some(SESSION_VERSION),
                },
            )
            .await
            .expect("notifications/initialized reaches the adapter");
        assert_eq!(
            ack.status,
            StatusCode::ACCEPTED,
            "notifications/initialized: {}",
            ack.text
        );
        session
    }

    /// `tools/call` inside a session (`session` Some) or without one (2026-07-28).
    pub async fn call_tool(
        &self,
        session: Option<&str>,
        token: Option<&str>,
        tool: &str,
        arguments: Value,
    ) -> Result<McpResponse, String> {
        if session.is_some() {
            let call = Call {
                token,
                session,
                version: Some(SESSION_VERSION),
            };
            return self
                .post(&tool_call(next_id(), tool, arguments), &call)
                .await;
        }
        let call = Call {
            token,
            session: None,
            version: Some(SESSIONLESS_VERSION),
        };
        let body = sessionless_tool_call(next_id(), tool, arguments);
        let request = self
            .request(body.to_string(), &call)
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool);
        self.send(request).await
    }
}

/// A JSON-RPC id not used before in this process. Ids must be unique among a session's requests
/// in flight: rmcp routes answers by id, so two concurrent requests with one id in one session get
/// each other's answer (or none).
pub fn next_id() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A `tools/call` request body.
pub fn tool_call(id: i64, tool: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    })
}

/// A `tools/call` request body for the 2026-07-28 revision, which carries the client context in
/// `params._meta` on every request (there is no initialize); the request also needs the SEP-2243
/// headers `Mcp-Method` and `Mcp-Name` ([`McpHttp::call_tool`] adds them).
pub fn sessionless_tool_call(id: i64, tool: &str, arguments: Value) -> Value {
    let mut body = tool_call(id, tool, arguments);
    body["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": SESSIONLESS_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "e2e-reliability", "version": "1" }
    });
    body
}

fn transport_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::parse_body;
    use serde_json::json;

    #[test]
    fn finds_the_answer_in_an_event_stream_after_a_priming_event() {
        let text = "id: 0\nretry: 3000\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert_eq!(
            parse_body("text/event-stream", text),
            Some(json!({"jsonrpc":"2.0","id":1,"result":{}}))
        );
        assert_eq!(parse_body("text/event-stream", "data: \n\n"), None);
        assert_eq!(
            parse_body("application/json", "{\"id\":2}"),
            Some(json!({"id":2}))
        );
    }
}
