//! A minimal MCP client speaking Streamable HTTP JSON-RPC directly with reqwest.
//!
//! Both MCP servers under comparison (the Rust adapter and the Python `MCPServer`) are driven by
//! this one client, so the client's cost is identical on both sides and no SDK's own overhead is
//! measured. It does what a browser frontend does: `initialize`, `notifications/initialized`, then
//! `tools/call` with `Mcp-Session-Id`, `MCP-Protocol-Version` and `Authorization: Bearer` on every
//! request (the MCP authorization spec's rule, and the incident's fix). Answers may come as
//! `application/json` or as a `text/event-stream` whose `data:` lines carry the JSON-RPC message.

use serde_json::{Value, json};

/// The protocol revision asked for: one with `Mcp-Session-Id` sessions, served by both servers.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

const ACCEPT: &str = "application/json, text/event-stream";

/// One MCP session.
#[derive(Debug, Clone)]
pub struct McpSession {
    http: reqwest::Client,
    url: String,
    authorization: String,
    session_id: Option<String>,
    protocol_version: String,
    next_id: u64,
}

impl McpSession {
    /// `initialize` + `notifications/initialized` at `url` (…/mcp) with `token`.
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        token: &str,
    ) -> Result<McpSession, String> {
        let mut session = McpSession {
            http: http.clone(),
            url: url.to_string(),
            authorization: format!("Bearer {token}"),
            session_id: None,
            protocol_version: PROTOCOL_VERSION.to_string(),
            next_id: 1,
        };
        let (result, headers) = session
            .request_with_headers(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": { "name": "credbroker-bench", "version": "0.1.0" },
                }),
            )
            .await?;
        session.session_id = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(v) = result.get("protocolVersion").and_then(Value::as_str) {
            session.protocol_version = v.to_string();
        }
        let response = session
            .post(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .send()
            .await
            .map_err(|e| format!("notifications/initialized: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "notifications/initialized: HTTP {}",
                response.status()
            ));
        }
        Ok(session)
    }

    /// The session id the server gave (`None` for a sessionless server).
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// `tools/call name(arguments)`; `Err` for a JSON-RPC error or a result with `isError`.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Value, String> {
        let (result, _) = self
            .request_with_headers(
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
            )
            .await?;
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            return Err(format!("tool {name} answered an error: {result}"));
        }
        Ok(result)
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("authorization", &self.authorization)
            .header("mcp-protocol-version", &self.protocol_version)
            .body(body.to_string());
        if let Some(id) = &self.session_id {
            request = request.header("mcp-session-id", id);
        }
        request
    }

    /// Any request of the session (e.g. `tools/list`): its `result`, or the error.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.request_with_headers(method, params)
            .await
            .map(|(result, _)| result)
    }

    async fn request_with_headers(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<(Value, reqwest::header::HeaderMap), String> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self
            .post(&body)
            .send()
            .await
            .map_err(|e| format!("{method}: {e}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let is_sse = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method}: reading the answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method}: HTTP {status}: {}", truncate(&text)));
        }
        let message = if is_sse {
            sse_message(&text, id).ok_or_else(|| {
                format!(
                    "{method}: no JSON-RPC answer in the event stream: {}",
                    truncate(&text)
                )
            })?
        } else {
            serde_json::from_str(&text)
                .map_err(|e| format!("{method}: answer is not JSON ({e}): {}", truncate(&text)))?
        };
        if let Some(error) = message.get("error") {
            return Err(format!("{method}: JSON-RPC error {error}"));
        }
        let result = message
            .get("result")
            .cloned()
            .ok_or_else(|| format!("{method}: answer without result: {message}"))?;
        Ok((result, headers))
    }
}

/// The JSON-RPC message answering `id` in an SSE body: events are separated by blank lines, an
/// event's `data:` lines are joined with newlines; events without JSON (priming events) are
/// skipped.
pub fn sse_message(body: &str, id: u64) -> Option<Value> {
    let body = body.replace("\r\n", "\n");
    body.split("\n\n").find_map(|event| {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return None;
        }
        let value: Value = serde_json::from_str(&data.join("\n")).ok()?;
        (value.get("id").and_then(Value::as_u64) == Some(id)).then_some(value)
    })
}

fn truncate(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_answer_among_sse_events() {
        let body = "id: 0\nretry: 3000\ndata:\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
                    event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"ok\":true}}\r\n\r\n";
        let message = sse_message(body, 7).unwrap();
        assert_eq!(message["result"]["ok"], json!(true));
        assert!(sse_message(body, 8).is_none());
    }
}
