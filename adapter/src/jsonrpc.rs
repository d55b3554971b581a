//! Just enough JSON-RPC to decide about a request before rmcp sees it, and to answer with a
//! JSON-RPC error body when the adapter refuses one.
//!
//! The gate in front of rmcp needs the method names (which ones need a token) and the request id
//! (so a 401 names the request it refuses). It does not interpret anything else; rmcp parses the
//! same bytes again and stays the authority on the protocol. A body this module cannot read is
//! treated as needing a token (fail closed); rmcp then reports the parse error to authenticated
//! callers.

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// JSON-RPC error codes the adapter itself answers with (the implementation-defined server-error
/// range −32000…−32099, away from the codes rmcp uses).
pub(crate) mod code {
    /// No token, or a token the broker refused (HTTP 401).
    pub(crate) const UNAUTHORIZED: i64 = -32001;
    /// Token valid but not allowed: role not granted, or another user's session (HTTP 403).
    pub(crate) const FORBIDDEN: i64 = -32003;
    /// The session is revoked or unknown at the broker; start a new one (HTTP 404).
    pub(crate) const SESSION_GONE: i64 = -32004;
    /// The credential broker could not answer (HTTP 503).
    pub(crate) const BROKER_UNAVAILABLE: i64 = -32005;
    /// The adapter is at a limit (requests in flight, sessions without a token) (HTTP 503).
    pub(crate) const BUSY: i64 = -32006;
    /// The caller is over its rate limit at the broker (HTTP 429 with `Retry-After`).
    pub(crate) const RATE_LIMITED: i64 = -32007;
    /// Invalid request (body too large, malformed header, not a JSON-RPC message).
    pub(crate) const INVALID_REQUEST: i64 = -32600;
    /// The body is not JSON.
    pub(crate) const PARSE_ERROR: i64 = -32700;
    /// Same code and shape as rmcp's, so version negotiation in clients keeps working.
    pub(crate) const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// One message of a POST body, reduced to what the gate needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    Request {
        id: Value,
        method: String,
    },
    Notification {
        method: String,
    },
    /// A response or error the client sends back to a server request (no method).
    Reply,
}

/// What a request body holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Envelope {
    /// A POST without a body (rmcp refuses it).
    Empty,
    /// GET: the server's event stream of a session, new or resumed with `Last-Event-ID`. It
    /// carries results and server requests to whoever opens it, so it needs the session owner's
    /// token in every mode.
    Stream,
    /// DELETE: ending a session. Needs the session owner's token like a tool call: a session id
    /// alone is not proof of anything (MCP authorization: the token goes on every request).
    EndSession,
    /// One message (a JSON object).
    Messages(Vec<Message>),
    /// The messages of a batch (a JSON array), in order.
    Batch(Vec<Message>),
    /// Not JSON, or not JSON-RPC.
    Unreadable,
}

impl Envelope {
    pub(crate) fn parse(body: &[u8]) -> Self {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Envelope::Empty;
        }
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Envelope::Unreadable;
        };
        let (items, batch) = match value {
            Value::Array(items) if !items.is_empty() => (items, true),
            Value::Object(_) => (vec![value], false),
            _ => return Envelope::Unreadable,
        };
        let mut messages = Vec::with_capacity(items.len());
        for item in items {
            match Self::message(item) {
                Some(message) => messages.push(message),
                None => return Envelope::Unreadable,
            }
        }
        if batch {
            Envelope::Batch(messages)
        } else {
            Envelope::Messages(messages)
        }
    }

    /// The messages of a single message or a batch; none for the other kinds.
    pub(crate) fn messages(&self) -> &[Message] {
        match self {
            Envelope::Messages(messages) | Envelope::Batch(messages) => messages,
            _ => &[],
        }
    }

    fn message(value: Value) -> Option<Message> {
        let Value::Object(mut object) = value else {
            return None;
        };
        match (object.remove("method"), object.remove("id")) {
            (Some(Value::String(method)), Some(id)) => Some(Message::Request { id, method }),
            (Some(Value::String(method)), None) => Some(Message::Notification { method }),
            (Some(_), _) => None,
            (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
                Some(Message::Reply)
            }
            (None, _) => None,
        }
    }

    /// The id of the first request, for error answers; `null` when there is none.
    pub(crate) fn request_id(&self) -> Value {
        self.messages()
            .iter()
            .find_map(|message| match message {
                Message::Request { id, .. } => Some(id.clone()),
                _ => None,
            })
            .unwrap_or(Value::Null)
    }

    /// Method names of all requests and notifications.
    pub(crate) fn methods(&self) -> impl Iterator<Item = &str> {
        self.messages().iter().filter_map(|message| match message {
            Message::Request { method, .. } | Message::Notification { method } => {
                Some(method.as_str())
            }
            Message::Reply => None,
        })
    }

    /// True when the body is exactly one `tools/call` request: the only case in which a broker
    /// outage is reported by the tool itself (see `auth`).
    pub(crate) fn is_single_tool_call(&self) -> bool {
        matches!(self, Envelope::Messages(messages)
            if matches!(messages.as_slice(), [Message::Request { method, .. }] if method == "tools/call"))
    }
}

/// What is wrong with a body [`Envelope::parse`] found unreadable: the JSON-RPC code and a
/// message naming the problem (never the body itself, which may hold anything).
pub(crate) fn problem(body: &[u8]) -> (i64, &'static str) {
    match serde_json::from_slice::<Value>(body) {
        Err(_) => (
            code::PARSE_ERROR,
            "Parse error: the request body is not JSON; send one JSON-RPC message (a JSON object)",
        ),
        Ok(Value::Array(items)) if items.is_empty() => (
            code::INVALID_REQUEST,
            "Invalid Request: an empty batch; send one JSON-RPC message (a JSON object)",
        ),
        Ok(_) => (
            code::INVALID_REQUEST,
            "Invalid Request: not a JSON-RPC message; a request needs `jsonrpc`, a string `method` and an `id`, a notification a `method`, a reply an `id` and `result` or `error`",
        ),
    }
}

/// The items of a JSON array body, each to be sent on alone (a batch).
pub(crate) fn batch_items(body: &[u8]) -> Option<Vec<Value>> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

/// The JSON-RPC messages in an event stream (`data:` lines of each event), in order; events
/// without data (priming) are skipped.
pub(crate) fn event_stream_messages(text: &str) -> Vec<Value> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            if data.is_empty() {
                return None;
            }
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

/// A JSON-RPC error answer with an HTTP status.
pub(crate) fn error_response(
    status: StatusCode,
    id: Value,
    code: i64,
    message: impl Into<String>,
    data: Option<Value>,
) -> Response {
    let mut error = json!({ "code": code, "message": message.into() });
    if let Some(data) = data {
        error["data"] = data;
    }
    let body = json!({ "jsonrpc": "2.0", "id": id, "error": error });
    let mut response = (status, Body::from(body.to_string())).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_notifications_and_replies() {
        let envelope =
            Envelope::parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#);
        assert!(envelope.is_single_tool_call());
        assert_eq!(envelope.request_id(), json!(7));
        assert_eq!(envelope.methods().collect::<Vec<_>>(), ["tools/call"]);

        let envelope =
            Envelope::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(envelope.request_id(), Value::Null);
        assert!(!envelope.is_single_tool_call());

        let envelope = Envelope::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#);
        assert_eq!(envelope, Envelope::Messages(vec![Message::Reply]));
    }

    #[test]
    fn batches_keep_every_method() {
        let envelope = Envelope::parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#,
        );
        assert_eq!(
            envelope.methods().collect::<Vec<_>>(),
            ["ping", "tools/call"]
        );
        assert!(!envelope.is_single_tool_call());
        assert_eq!(envelope.request_id(), json!(1));
    }

    #[test]
    fn junk_is_unreadable_and_nothing_is_empty() {
        assert_eq!(Envelope::parse(b"{not json"), Envelope::Unreadable);
        assert_eq!(Envelope::parse(b"[]"), Envelope::Unreadable);
        assert_eq!(Envelope::parse(b"42"), Envelope::Unreadable);
        assert_eq!(
            Envelope::parse(br#"{"jsonrpc":"2.0","id":1,"method":5}"#),
            Envelope::Unreadable
        );
        assert_eq!(Envelope::parse(b"  "), Envelope::Empty);
    }

    #[test]
    fn problems_name_parse_errors_and_invalid_messages() {
        assert_eq!(problem(b"{not json").0, code::PARSE_ERROR);
        assert_eq!(problem(b"[]").0, code::INVALID_REQUEST);
        assert_eq!(
            problem(br#"{"jsonrpc":"2.0","id":1}"#).0,
            code::INVALID_REQUEST
        );
        assert_eq!(problem(b"42").0, code::INVALID_REQUEST);
    }

    #[test]
    fn event_streams_yield_their_messages_and_skip_priming() {
        let text = "id: 0\nretry: 3000\ndata:\n\nid: 1\ndata: {\"id\":3,\"result\":{}}\n\n: keep-alive\n\n";
        assert_eq!(
            event_stream_messages(text),
            vec![json!({"id":3,"result":{}})]
        );
    }

    #[test]
    fn error_bodies_are_json_rpc() {
        let response = error_response(
            StatusCode::UNAUTHORIZED,
            json!(3),
            code::UNAUTHORIZED,
            "send a token",
            None,
        );
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
    }
}
