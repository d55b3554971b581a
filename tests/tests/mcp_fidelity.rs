//! Issue 17: MCP transport rules the adapter used to break, against the real adapter, broker and
//! moto. Each test fails on the code before issue 17:
//!
//! - a JSON-RPC batch in a 2025-03-26 session got 415 "fail to deserialize request body";
//! - malformed JSON and messages without a method got 415 with a plain-text body;
//! - every standalone GET stream of a session started again at event id `0`;
//! - 2025-03-26 and 2025-06-18 sessions got empty-data priming events they cannot parse;
//! - a client whose connection dropped during a tool call and reconnected with `Last-Event-ID`
//!   got an empty stream instead of the result.
//!
//! Where a tool call must be in flight for sure, a [`HeldProxy`] between the adapter and moto's S3
//! holds its S3 request until the test releases it (no timing guesses).

use std::time::Duration;

use e2e::adapter::{Adapter, AdapterBuilder};
use e2e::held_proxy::HeldProxy;
use e2e::mcp::{ACCEPT, next_id, tool_call};
use e2e::stack::BrokerStack;
use e2e::tokens::random_string;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// A broker stack, an S3 relay the test can hold, an adapter (default `ADAPTER_REQUIRE_AUTH=all`)
/// and alice's object.
struct Fixture {
    // Field order is drop order: the adapter goes before the proxy and the broker.
    adapter: Adapter,
    s3: HeldProxy,
    stack: BrokerStack,
    http: reqwest::Client,
    alice: String,
    uri: String,
    text: String,
    metrics: String,
}

async fn fixture() -> Fixture {
    fixture_answering("json").await
}

/// [`fixture`] with `ADAPTER_ANSWER_FORMAT=event-stream`: every answer on a resumable stream.
async fn streamed_fixture() -> Fixture {
    fixture_answering("event-stream").await
}

async fn fixture_answering(answer_format: &str) -> Fixture {
    let stack = BrokerStack::start().await;
    let s3 = HeldProxy::start(stack.moto.port());
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&s3.endpoint())
        .metrics()
        .env("ADAPTER_LISTED_BUCKETS", &stack.seed().buckets.demo)
        .env("ADAPTER_ANSWER_FORMAT", answer_format)
        .start()
        .await;
    let alice = stack.rw_token("alice");
    let key = format!("alice-note-{}.txt", random_string(8));
    let text = format!("alice's note {}", random_string(16));
    let uri = stack.put_own_object(&alice, &key, &text).await;
    Fixture {
        metrics: adapter.metrics_url(),
        uri,
        adapter,
        s3,
        stack,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        alice,
        text,
    }
}

impl Fixture {
    /// Waits until the adapter counted `n` finished calls of `tool` (its metrics endpoint).
    async fn tool_calls_finished(&self, tool: &str, n: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let label = format!("tool=\"{tool}\"");
        loop {
            if let Ok(response) = reqwest::get(&self.metrics).await
                && let Ok(text) = response.text().await
            {
                let done: f64 = text
                    .lines()
                    .filter(|line| line.starts_with("mcp_adapter_tool_calls_total{"))
                    .filter(|line| line.contains(&label))
                    .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                if done >= n {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{tool} did not finish within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A POST to `/mcp` with the standard headers.
    fn post(
        &self,
        body: String,
        token: Option<&str>,
        session: Option<&str>,
        version: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(self.adapter.mcp_url())
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(version) = version {
            request = request.header("mcp-protocol-version", version);
        }
        request
    }

    /// A GET of the session's event stream.
    fn get(
        &self,
        token: Option<&str>,
        session: &str,
        version: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .get(self.adapter.mcp_url())
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", version);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request
    }

    /// Opens a session on `version` with alice's token. 2025-03-26 requests carry no
    /// `MCP-Protocol-Version` header (that revision has none).
    async fn open(&self, version: &str) -> String {
        self.open_with_answer(version).await.0
    }

    /// [`Fixture::open`], also returning the initialize answer's `result`.
    async fn open_with_answer(&self, version: &str) -> (String, Value) {
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": { "name": "e2e-fidelity", "version": "1" }
            }
        });
        let answer = self
            .post(init.to_string(), Some(&self.alice), None, None)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let session = answer.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let body = answer.text().await.unwrap();
        assert!(
            body.contains(&format!("\"protocolVersion\":\"{version}\"")),
            "{body}"
        );
        let result = events(&body)
            .into_iter()
            .filter_map(|(_, data)| serde_json::from_str::<Value>(&data?).ok())
            .find_map(|m| m.get("result").cloned())
            .unwrap_or_default();
        let header = (version != "2025-03-26").then_some(version);
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let ack = self
            .post(
                initialized.to_string(),
                Some(&self.alice),
                Some(&session),
                header,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(ack.status(), StatusCode::ACCEPTED);
        (session, result)
    }

    /// One request in a 2025-11-25 session with alice's token; all JSON-RPC messages of the answer.
    async fn request(&self, session: &str, method: &str, params: Value) -> Vec<Value> {
        self.request_as(session, method, params).await.1
    }

    /// [`Fixture::request`], also returning the answer's `Content-Type`.
    async fn request_as(&self, session: &str, method: &str, params: Value) -> (String, Vec<Value>) {
        let body = json!({ "jsonrpc": "2.0", "id": next_id(), "method": method, "params": params });
        let answer = self
            .post(
                body.to_string(),
                Some(&self.alice),
                Some(session),
                Some("2025-11-25"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{method}");
        let content_type = content_type(&answer);
        let text = answer.text().await.unwrap();
        let messages = messages(&content_type, &text);
        (content_type, messages)
    }

    /// The `result` of [`Fixture::request`]'s answer; panics on an error answer.
    async fn result(&self, session: &str, method: &str, params: Value) -> Value {
        let messages = self.request(session, method, params).await;
        let answer = messages
            .iter()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("{method}: no answer in {messages:?}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }
}

/// The `Content-Type` of an answer ("" without one).
fn content_type(answer: &reqwest::Response) -> String {
    answer
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The JSON-RPC messages of an answer: one JSON body, or the `data` of an SSE body's events.
fn messages(content_type: &str, text: &str) -> Vec<Value> {
    if content_type.starts_with("application/json") {
        return vec![serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))];
    }
    events(text)
        .into_iter()
        .filter_map(|(_, data)| serde_json::from_str(&data?).ok())
        .collect()
}

/// The events of an SSE body: `(id, data)` per event that has either.
fn events(text: &str) -> Vec<(Option<String>, Option<String>)> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let mut id = None;
            let mut data: Option<Vec<&str>> = None;
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().to_string());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.get_or_insert_with(Vec::new)
                        .push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            let data = data.map(|lines| lines.join("\n"));
            (id.is_some() || data.is_some()).then_some((id, data))
        })
        .collect()
}

/// Reads a streaming answer until its first complete event; returns that event.
async fn first_event(response: &mut reqwest::Response) -> (Option<String>, Option<String>) {
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(60), response.chunk())
            .await
            .expect("an event within 60 s")
            .expect("stream readable")
            .expect("stream still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.replace("\r\n", "\n").contains("\n\n")
            && let Some(event) = events(&text).into_iter().next()
        {
            return event;
        }
    }
}

fn json_error_code(text: &str) -> i64 {
    let body: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    body["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test]
async fn batches_work_in_2025_03_26_sessions_with_every_message_authorized_alone() {
    let fx = fixture().await;
    let session = fx.open("2025-03-26").await;
    let batch = json!([
        { "jsonrpc": "2.0", "id": 3, "method": "ping" },
        { "jsonrpc": "2.0", "id": 4, "method": "tools/list" },
        { "jsonrpc": "2.0", "method": "notifications/roots/list_changed" }
    ]);
    let answer = fx
        .post(batch.to_string(), Some(&fx.alice), Some(&session), None)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let answers: Value = serde_json::from_str(&text).unwrap();
    let answers = answers.as_array().expect("a JSON array of answers");
    assert_eq!(answers.len(), 2, "one answer per request: {text}");
    let by_id = |id: i64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer for {id}: {text}"))
    };
    assert_eq!(by_id(3)["result"], json!({}));
    assert!(
        by_id(4)["result"]["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty()),
        "{text}"
    );

    // Each message is authorized as if sent alone: a tool call in a batch without a token is
    // refused like a lone tool call (401 with the challenge), and nothing in the batch runs.
    let batch = json!([
        { "jsonrpc": "2.0", "id": 5, "method": "ping" },
        tool_call(6, "bucket_object_text", json!({ "s3_uri": fx.uri })),
    ]);
    let answer = fx
        .post(batch.to_string(), None, Some(&session), None)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(answer.headers().contains_key("www-authenticate"));
    assert!(!answer.text().await.unwrap().contains(&fx.text));
    assert_eq!(fx.s3.held(), 0, "no S3 request was made");

    // A tool call with the token in a batch runs on the caller's credentials.
    fx.s3.release();
    let answer = fx
        .post(batch.to_string(), Some(&fx.alice), Some(&session), None)
        .send()
        .await
        .unwrap();
    let text = answer.text().await.unwrap();
    assert!(text.contains(&fx.text), "{text}");

    // A batch is bounded: 33 messages are refused before any runs.
    let big: Vec<Value> = (0..33)
        .map(|i| json!({ "jsonrpc": "2.0", "id": 100 + i, "method": "ping" }))
        .collect();
    let answer = fx
        .post(
            Value::Array(big).to_string(),
            Some(&fx.alice),
            Some(&session),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let text = answer.text().await.unwrap();
    assert!(text.contains("at most 32"), "{text}");

    // Later revisions removed batches: a clear 400, never a 415.
    let later = fx.open("2025-11-25").await;
    let answer = fx
        .post(
            json!([{ "jsonrpc": "2.0", "id": 7, "method": "ping" }]).to_string(),
            Some(&fx.alice),
            Some(&later),
            Some("2025-11-25"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let text = answer.text().await.unwrap();
    assert_eq!(json_error_code(&text), INVALID_REQUEST);
    assert!(text.contains("2025-03-26"), "{text}");
}

#[tokio::test]
async fn malformed_json_and_messages_without_a_method_are_400_with_json_rpc_errors() {
    let fx = fixture().await;
    let session = fx.open("2025-11-25").await;
    for (body, code) in [
        ("{not json".to_string(), PARSE_ERROR),
        (
            json!({ "jsonrpc": "2.0", "id": 5 }).to_string(),
            INVALID_REQUEST,
        ),
        (
            json!({ "jsonrpc": "2.0", "id": 6, "method": 42 }).to_string(),
            INVALID_REQUEST,
        ),
    ] {
        let answer = fx
            .post(
                body.clone(),
                Some(&fx.alice),
                Some(&session),
                Some("2025-11-25"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            answer.headers()["content-type"],
            "application/json",
            "{body}"
        );
        let text = answer.text().await.unwrap();
        assert_eq!(json_error_code(&text), code, "{body}: {text}");
    }
}

/// With `ADAPTER_ANSWER_FORMAT=event-stream`, so that POST answers are event streams too.
#[tokio::test]
async fn event_ids_never_repeat_in_a_session_and_priming_follows_the_revision() {
    let fx = streamed_fixture().await;
    let session = fx.open("2025-11-25").await;
    let mut ids = Vec::new();
    // Two standalone streams one after the other, and two POST streams.
    for _ in 0..2 {
        let mut stream = fx
            .get(Some(&fx.alice), &session, "2025-11-25", None)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let (id, data) = first_event(&mut stream).await;
        assert_eq!(
            data.as_deref(),
            Some(""),
            "a priming event opens the stream"
        );
        ids.push(id.expect("the priming event has an id"));
    }
    for _ in 0..2 {
        let body = json!({ "jsonrpc": "2.0", "id": next_id(), "method": "tools/list" });
        let text = fx
            .post(
                body.to_string(),
                Some(&fx.alice),
                Some(&session),
                Some("2025-11-25"),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        ids.extend(events(&text).into_iter().filter_map(|(id, _)| id));
    }
    assert!(ids.len() >= 6, "{ids:?}");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "event ids repeat: {ids:?}");

    // Older revisions get no priming event: every event carries a JSON-RPC message.
    for version in ["2025-03-26", "2025-06-18"] {
        let session = fx.open(version).await;
        let header = (version != "2025-03-26").then_some(version);
        let body = json!({ "jsonrpc": "2.0", "id": next_id(), "method": "tools/list" });
        let answer = fx
            .post(body.to_string(), Some(&fx.alice), Some(&session), header)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let text = answer.text().await.unwrap();
        let all = events(&text);
        assert!(!all.is_empty(), "{version}: {text}");
        for (_, data) in all {
            let data = data.unwrap_or_default();
            assert!(
                serde_json::from_str::<Value>(&data).is_ok(),
                "{version}: an event without a JSON message: {text:?}"
            );
        }
    }
}

/// With `ADAPTER_ANSWER_FORMAT=event-stream`: resumption is for answers on an event stream (a JSON
/// answer has no event id; its client sends the request again).
#[tokio::test]
async fn a_dropped_tool_call_is_resumed_by_its_owner_and_by_nobody_else() {
    let fx = streamed_fixture().await;
    let session = fx.open("2025-11-25").await;
    let call = tool_call(next_id(), "bucket_object_text", json!({ "s3_uri": fx.uri }));
    let mut answer = fx
        .post(
            call.to_string(),
            Some(&fx.alice),
            Some(&session),
            Some("2025-11-25"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let (priming_id, data) = first_event(&mut answer).await;
    assert_eq!(data.as_deref(), Some(""));
    let priming_id = priming_id.expect("priming id");
    // The call waits for S3; the client's connection drops.
    fx.s3.wait_for(1, Duration::from_secs(60)).await;
    drop(answer);

    // Someone else reconnecting with the id gets nothing: no token, or another subject's.
    let mallory = fx.stack.rw_token("mallory");
    for (who, token) in [("no token", None), ("mallory", Some(mallory.as_str()))] {
        let refused = fx
            .get(token, &session, "2025-11-25", Some(&priming_id))
            .send()
            .await
            .unwrap();
        let status = refused.status();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            "{who}: {status}"
        );
        let text = tokio::time::timeout(Duration::from_secs(30), refused.text())
            .await
            .expect("a refusal ends")
            .unwrap();
        assert!(!text.contains(&fx.text), "{who} got alice's result");
    }

    // The result arrives while nobody is connected (the call has finished for sure before the
    // reconnect); alice reconnects and gets it.
    fx.s3.release();
    fx.tool_calls_finished("bucket_object_text", 1.0).await;
    let resumed = fx
        .get(Some(&fx.alice), &session, "2025-11-25", Some(&priming_id))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    let text = tokio::time::timeout(Duration::from_secs(60), resumed.text())
        .await
        .expect("the resumed stream ends with its request")
        .unwrap();
    let messages: Vec<Value> = events(&text)
        .into_iter()
        .filter_map(|(_, data)| serde_json::from_str(&data?).ok())
        .collect();
    let result = messages
        .iter()
        .find(|m| m["id"] == call["id"])
        .unwrap_or_else(|| panic!("no result on the resumed stream: {text}"));
    assert_eq!(
        result["result"]["structuredContent"]["text"], fx.text,
        "{text}"
    );
}

#[tokio::test]
async fn s3_objects_are_resources_with_completions_progress_and_logging() {
    let fx = fixture().await;
    fx.s3.release();
    let bucket = fx.stack.seed().buckets.demo.clone();
    let (session, init) = fx.open_with_answer("2025-11-25").await;
    for capability in ["resources", "completions", "logging", "tools"] {
        assert!(
            init["capabilities"].get(capability).is_some(),
            "{capability} not declared: {init}"
        );
    }

    let templates = fx
        .result(&session, "resources/templates/list", json!({}))
        .await;
    assert_eq!(
        templates["resourceTemplates"][0]["uriTemplate"], "s3://{bucket}/{+key}",
        "{templates}"
    );

    // Text (a text/* object): UTF-8 text with S3's content type.
    let text_key = format!("text-{}.txt", random_string(8));
    let text = format!("héllo {}", random_string(8));
    let put = fx
        .result(
            &session,
            "tools/call",
            json!({ "name": "bucket_objects_put", "arguments": {
                "bucket": bucket, "items": [{ "key": text_key, "text": text }]
            }}),
        )
        .await;
    assert_ne!(put["isError"], true, "{put}");
    let text_uri = format!("s3://{bucket}/{text_key}");
    let read = fx
        .result(&session, "resources/read", json!({ "uri": text_uri }))
        .await;
    assert_eq!(read["contents"][0]["uri"], text_uri, "{read}");
    assert_eq!(read["contents"][0]["text"], text, "{read}");
    assert!(
        read["contents"][0]["mimeType"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/plain")),
        "{read}"
    );

    // Binary: base64, with S3's content type.
    let key = format!("blob-{}.bin", random_string(8));
    let bytes: Vec<u8> = vec![0xff, 0x00, 0xfe, 0x10, 0x80];
    let data = base64_encode(&bytes);
    let put = fx
        .result(
            &session,
            "tools/call",
            json!({ "name": "bucket_objects_put", "arguments": {
                "bucket": bucket,
                "items": [{ "key": key, "data": data, "content_type": "application/octet-stream" }]
            }}),
        )
        .await;
    assert_ne!(put["isError"], true, "{put}");
    let uri = format!("s3://{bucket}/{key}");
    let read = fx
        .result(&session, "resources/read", json!({ "uri": uri }))
        .await;
    assert_eq!(read["contents"][0]["blob"], data, "{read}");
    assert_eq!(
        read["contents"][0]["mimeType"], "application/octet-stream",
        "{read}"
    );

    // A missing object is "resource not found".
    let missing = fx
        .request(
            &session,
            "resources/read",
            json!({ "uri": format!("s3://{bucket}/no-such-{}", random_string(8)) }),
        )
        .await;
    assert!(
        missing.iter().any(|m| m["error"]["code"] == -32002),
        "{missing:?}"
    );

    // resources/list: the objects of ADAPTER_LISTED_BUCKETS (alice's token has no buckets claim).
    let mut uris = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let params = match &cursor {
            Some(cursor) => json!({ "cursor": cursor }),
            None => json!({}),
        };
        let page = fx.result(&session, "resources/list", params).await;
        uris.extend(
            page["resources"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r["uri"].as_str().map(str::to_string)),
        );
        cursor = page["nextCursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert!(uris.contains(&fx.uri), "{uris:?}");
    assert!(uris.contains(&uri), "{uris:?}");

    // Completions: the template's bucket and key.
    let reference = json!({ "type": "ref/resource", "uri": "s3://{bucket}/{+key}" });
    let buckets = fx
        .result(
            &session,
            "completion/complete",
            json!({ "ref": reference, "argument": { "name": "bucket", "value": &bucket[..3] } }),
        )
        .await;
    assert!(
        buckets["completion"]["values"]
            .as_array()
            .unwrap()
            .contains(&json!(bucket)),
        "{buckets}"
    );
    let note_key = fx.uri.rsplit('/').next().unwrap().to_string();
    let keys = fx
        .result(
            &session,
            "completion/complete",
            json!({ "ref": reference, "argument": { "name": "key", "value": "alice-note-" },
                    "context": { "arguments": { "bucket": bucket } } }),
        )
        .await;
    let values = keys["completion"]["values"].as_array().unwrap();
    assert!(values.contains(&json!(note_key)), "{keys}");
    assert!(values.len() <= 100);
    assert!(keys["completion"]["hasMore"].is_boolean(), "{keys}");

    // Progress from a put of 20 items, on the request's own stream; the log message about it
    // comes on the session's standalone stream (it belongs to no request).
    let mut stream = fx
        .get(Some(&fx.alice), &session, "2025-11-25", None)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut log = LogReader::default();
    fx.result(&session, "logging/setLevel", json!({ "level": "info" }))
        .await;
    let messages = fx
        .request(
            &session,
            "tools/call",
            json!({ "name": "bucket_objects_put", "arguments": { "bucket": bucket, "items": items(20) },
                    "_meta": { "progressToken": "put-20" } }),
        )
        .await;
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 20, "{messages:?}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "put-20"
                && p["params"]["total"].as_f64() == Some(20.0)),
        "{progress:?}"
    );
    assert_eq!(
        progress.last().unwrap()["params"]["progress"].as_f64(),
        Some(20.0)
    );
    let result = messages.iter().find(|m| m.get("result").is_some()).unwrap();
    assert_eq!(result["result"]["structuredContent"]["uploaded"], 20);
    // (A new standalone stream first gets what the session logged before it was opened.)
    let message = loop {
        let message = log.next_message(&mut stream).await;
        if message["params"]["data"]["uploaded"] == 20 {
            break message;
        }
    };
    assert_eq!(message["params"]["level"], "info", "{message}");

    // Below the level set, nothing is sent: after a quiet put of 1 item at level `error`, the
    // next message is the one about a put of 2 items at level `info` again.
    fx.result(&session, "logging/setLevel", json!({ "level": "error" }))
        .await;
    let messages = fx
        .request(
            &session,
            "tools/call",
            json!({ "name": "bucket_objects_put", "arguments": { "bucket": bucket, "items": items(1) } }),
        )
        .await;
    assert!(
        !messages
            .iter()
            .any(|m| m["method"] == "notifications/progress"),
        "no progress without a progressToken: {messages:?}"
    );
    fx.result(&session, "logging/setLevel", json!({ "level": "info" }))
        .await;
    fx.request(
        &session,
        "tools/call",
        json!({ "name": "bucket_objects_put", "arguments": { "bucket": bucket, "items": items(2) } }),
    )
    .await;
    let message = log.next_message(&mut stream).await;
    assert_eq!(message["params"]["data"]["uploaded"], 2, "{message}");
    drop(stream);

    // Resources need the caller's token like tools.
    let refused = fx
        .post(
            json!({ "jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": { "uri": fx.uri } })
                .to_string(),
            None,
            Some(&session),
            Some("2025-11-25"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(!refused.text().await.unwrap().contains(&fx.text));
}

/// `n` small text items for `bucket_objects_put`.
fn items(n: usize) -> Vec<Value> {
    let prefix = random_string(6);
    (0..n)
        .map(|i| json!({ "key": format!("put-{prefix}/{i}.txt"), "text": format!("item {i}") }))
        .collect()
}

/// Reads `notifications/message` events off a standalone stream.
#[derive(Default)]
struct LogReader {
    text: String,
    seen: usize,
}

impl LogReader {
    /// The next `notifications/message` on the stream (waits up to 60 s).
    async fn next_message(&mut self, stream: &mut reqwest::Response) -> Value {
        loop {
            let messages: Vec<Value> = events(&self.text)
                .into_iter()
                .filter_map(|(_, data)| serde_json::from_str::<Value>(&data?).ok())
                .filter(|m| m["method"] == "notifications/message")
                .collect();
            if let Some(message) = messages.get(self.seen) {
                self.seen += 1;
                return message.clone();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), stream.chunk())
                .await
                .expect("a log message within 60 s")
                .expect("stream readable")
                .expect("stream open");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Issue 16: `tools/list` and the tools that send no notifications are answered without rmcp's
/// session worker (`adapter/src/direct.rs`); a request with `_meta` still goes to the worker.
/// Same results on both paths; by default (`ADAPTER_ANSWER_FORMAT=json`) the direct ones come as
/// one `application/json` body, with `event-stream` on the same event stream as the worker's.
#[tokio::test]
async fn direct_answers_are_the_session_workers_answers() {
    for (format, fx) in [
        ("json", fixture().await),
        ("event-stream", streamed_fixture().await),
    ] {
        direct_answers_match(format, &fx).await;
    }
}

async fn direct_answers_match(format: &str, fx: &Fixture) {
    fx.s3.release();
    let session = fx.open("2025-11-25").await;
    let worker_meta = json!({ "progressToken": "via-worker" });
    for (method, params) in [
        ("tools/list", json!({})),
        (
            "tools/call",
            json!({ "name": "bucket_object_text", "arguments": { "s3_uri": fx.uri } }),
        ),
        (
            "tools/call",
            json!({ "name": "bucket_objects_list", "arguments": { "bucket": fx.uri.rsplit_once('/').unwrap().0 } }),
        ),
        (
            "tools/call",
            json!({ "name": "bucket_object_info", "arguments": { "s3_uri": "s3://no-such-bucket-here/x" } }),
        ),
    ] {
        let (direct_type, direct) = fx.request_as(&session, method, params.clone()).await;
        let mut via_worker = params.clone();
        via_worker["_meta"] = worker_meta.clone();
        let (worker_type, worker) = fx.request_as(&session, method, via_worker).await;
        assert!(
            worker_type.starts_with("text/event-stream"),
            "{method} via the worker: {worker_type}"
        );
        let expected = match format {
            "json" => "application/json",
            _ => "text/event-stream",
        };
        assert!(
            direct_type.starts_with(expected),
            "{format}: {method} answered as {direct_type}"
        );
        assert_eq!(
            direct.len(),
            worker.len(),
            "{format}: {method}: {direct:?} / {worker:?}"
        );
        let answer = |messages: &[Value]| {
            let mut answer = messages
                .iter()
                .find(|m| m.get("result").is_some() || m.get("error").is_some())
                .unwrap_or_else(|| panic!("{method}: no answer in {messages:?}"))
                .clone();
            answer.as_object_mut().unwrap().remove("id");
            answer
        };
        let (direct, worker) = (answer(&direct), answer(&worker));
        if method == "tools/call" && params["arguments"]["s3_uri"] == fx.uri {
            assert_eq!(direct["result"]["structuredContent"]["text"], fx.text);
        }
        assert_eq!(direct, worker, "{format}: {method} {params}");
    }
    // A tool that sends notifications (progress) answers on an event stream in either format.
    let (fetch_type, fetched) = fx
        .request_as(
            &session,
            "tools/call",
            json!({ "name": "bucket_object_fetch", "arguments": { "s3_uri": fx.uri } }),
        )
        .await;
    assert!(
        fetch_type.starts_with("text/event-stream"),
        "{format}: bucket_object_fetch answered as {fetch_type}"
    );
    assert!(
        fetched.iter().any(|m| m.get("result").is_some()),
        "{format}: {fetched:?}"
    );
}

/// A direct tool call stops on `notifications/cancelled` as the MCP spec asks (no answer follows),
/// and the session goes on: in both answer formats.
#[tokio::test]
async fn notifications_cancelled_stops_a_direct_tool_call() {
    for (format, fx) in [
        ("json", fixture().await),
        ("event-stream", streamed_fixture().await),
    ] {
        cancel_a_direct_call(format, &fx).await;
    }
}

async fn cancel_a_direct_call(format: &str, fx: &Fixture) {
    let session = fx.open("2025-11-25").await;
    let call = tool_call(next_id(), "bucket_object_text", json!({ "s3_uri": fx.uri }));
    // In a task: a JSON answer's headers come with the answer.
    let post = fx.post(
        call.to_string(),
        Some(&fx.alice),
        Some(&session),
        Some("2025-11-25"),
    );
    let answer = tokio::spawn(async move {
        let answer = post.send().await.unwrap();
        let status = answer.status();
        let content_type = content_type(&answer);
        (status, content_type, answer.text().await.unwrap())
    });
    fx.s3.wait_for(1, Duration::from_secs(60)).await;
    let cancel = json!({
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": { "requestId": call["id"], "reason": "the user pressed stop" }
    });
    let ack = fx
        .post(
            cancel.to_string(),
            Some(&fx.alice),
            Some(&session),
            Some("2025-11-25"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), StatusCode::ACCEPTED);
    let (status, content_type, rest) = tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .expect("the cancelled call's answer ends")
        .unwrap();
    // An event stream that ends without an answer (with its priming event where it has one).
    assert_eq!(status, StatusCode::OK, "{format}: {rest}");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{format}: {content_type}: {rest}"
    );
    assert!(
        !rest.contains(&fx.text) && !rest.contains("\"result\""),
        "{format}: a cancelled call answered: {rest}"
    );
    fx.s3.release();
    let result = fx
        .result(
            &session,
            "tools/call",
            json!({ "name": "bucket_object_text", "arguments": { "s3_uri": fx.uri } }),
        )
        .await;
    assert_eq!(result["structuredContent"]["text"], fx.text, "{format}");
}
