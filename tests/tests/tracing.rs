//! OpenTelemetry traces across the real processes: a client's `traceparent` → the adapter's
//! request span → its broker RPC span → the broker's RPC span (through gRPC metadata) → store
//! and STS spans; the tool span → the S3 call. The adapter exports with OTLP/HTTP (protobuf), the
//! broker with OTLP/gRPC, each to a small receiver the test runs (`e2e::otlp`), so both
//! protocols are exercised end to end. Spans are awaited by content, not by time.

use std::time::Duration;

use e2e::adapter::AdapterBuilder;
use e2e::leaks::{Secret, assert_no_secrets};
use e2e::mcp::{Call, McpHttp, SESSION_VERSION, next_id, tool_call};
use e2e::otlp::{OtlpReceiver, Protocol, SpanRecord};
use e2e::process::Scratch;
use e2e::rpc::get_credentials;
use e2e::stack::BrokerStack;
use reqwest::StatusCode;
use serde_json::json;

/// How long exported spans may take to arrive (the batch delay is 100 ms; this is for a loaded
/// machine).
const ARRIVAL: Duration = Duration::from_secs(60);

/// A W3C trace id and span id the client made up, and the `traceparent` naming them (sampled).
fn client_context() -> (String, String, String) {
    let trace_id = hex::encode(rand::random::<[u8; 16]>());
    let span_id = hex::encode(rand::random::<[u8; 8]>());
    let header = format!("00-{trace_id}-{span_id}-01");
    (trace_id, span_id, header)
}

fn in_trace<'a>(spans: &'a [SpanRecord], trace_id: &str) -> Vec<&'a SpanRecord> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

fn named<'a>(spans: &[&'a SpanRecord], name: &str) -> Vec<&'a SpanRecord> {
    spans.iter().copied().filter(|s| s.name == name).collect()
}

const GET_CREDENTIALS: &str = "credbroker.v1.CredentialBroker/GetCredentials";

/// What the test expects of the tool call's trace, found in what the two receivers got.
struct ToolTrace {
    request: SpanRecord,
    broker_call: SpanRecord,
    tool: SpanRecord,
    s3: SpanRecord,
    broker_rpc: SpanRecord,
    store_lookup: SpanRecord,
}

fn tool_trace(
    adapter: &[SpanRecord],
    broker: &[SpanRecord],
    trace_id: &str,
    client_span: &str,
) -> Option<ToolTrace> {
    let adapter = in_trace(adapter, trace_id);
    let broker = in_trace(broker, trace_id);
    let request = named(&adapter, "POST /mcp")
        .into_iter()
        .find(|s| s.parent_span_id == client_span)?;
    let child_of = |spans: &[&SpanRecord], parent: &SpanRecord, name: &str| {
        spans
            .iter()
            .find(|s| s.parent_span_id == parent.span_id && s.name.starts_with(name))
            .map(|s| (*s).clone())
    };
    let broker_call = child_of(&adapter, request, GET_CREDENTIALS)?;
    let tool = child_of(&adapter, request, "tools/call bucket_objects_list")?;
    let s3 = child_of(&adapter, &tool, "S3.")?;
    let broker_rpc = child_of(&broker, &broker_call, GET_CREDENTIALS)?;
    let store_lookup = child_of(&broker, &broker_rpc, "store.get_session")?;
    Some(ToolTrace {
        request: request.clone(),
        broker_call,
        tool,
        s3,
        broker_rpc,
        store_lookup,
    })
}

#[tokio::test]
async fn one_trace_holds_the_clients_span_the_adapter_the_broker_and_s3_and_no_secret() {
    let adapter_receiver = OtlpReceiver::start(Protocol::HttpProtobuf).await;
    let broker_receiver = OtlpReceiver::start(Protocol::Grpc).await;
    let scratch = Scratch::new("tracing");
    let audit = scratch.join("audit.log");
    let stack = BrokerStack::start_with(|b| {
        b.env("OTEL_EXPORTER_OTLP_ENDPOINT", &broker_receiver.endpoint())
            .env(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                broker_receiver.protocol().env_value(),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("BROKER_AUDIT_LOG", audit.to_str().unwrap())
    })
    .await;
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &adapter_receiver.endpoint())
        .env(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            adapter_receiver.protocol().env_value(),
        )
        .env("OTEL_SERVICE_NAME", "mcp-adapter-e2e")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await;
    let mcp = McpHttp::new(&adapter.mcp_url());
    let token = stack.rw_token("alice@example.com");
    let bucket = stack.seed().buckets.demo.clone();

    // initialize with a traceparent of its own: the session is bound to the token in it.
    let (init_trace, _, init_parent) = client_context();
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": { "protocolVersion": SESSION_VERSION, "capabilities": {},
                    "clientInfo": { "name": "e2e-tracing", "version": "1" } }
    });
    let answer = mcp
        .send(
            mcp.request(
                init.to_string(),
                &Call {
                    token: Some(&token),
                    ..Call::default()
                },
            )
            .header("traceparent", &init_parent),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let session = answer.header("mcp-session-id").unwrap().to_string();
    let call = Call {
        token: Some(&token),
        session: Some(&session),
        version: Some(SESSION_VERSION),
    };
    let ack = mcp
        .post(
            &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            &call,
        )
        .await
        .unwrap();
    assert_eq!(ack.status, StatusCode::ACCEPTED, "{}", ack.text);

    // The tool call, in the client's trace.
    let (trace_id, client_span, traceparent) = client_context();
    let body = tool_call(
        next_id(),
        "bucket_objects_list",
        json!({ "bucket": bucket }),
    );
    let answer = mcp
        .send(
            mcp.request(body.to_string(), &call)
                .header("traceparent", &traceparent)
                .header("tracestate", "e2e=1"),
        )
        .await
        .unwrap();
    assert!(answer.is_tool_success(), "{}", answer.text);

    // Wait for both sides of the trace.
    let mut found = None;
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while found.is_none() && tokio::time::Instant::now() < deadline {
        found = tool_trace(
            &adapter_receiver.spans(),
            &broker_receiver.spans(),
            &trace_id,
            &client_span,
        );
        if found.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let Some(trace) = found else {
        let show = |spans: Vec<SpanRecord>| {
            spans
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {} <- {}",
                        s.trace_id, s.name, s.span_id, s.parent_span_id
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "trace {trace_id} (client span {client_span}) not found whole.\nadapter:\n{}\nbroker:\n{}",
            show(adapter_receiver.spans()),
            show(broker_receiver.spans())
        );
    };

    // The spans say what happened, in the agreed attributes, and who exported them.
    assert_eq!(trace.request.service, "mcp-adapter-e2e");
    assert_eq!(trace.broker_rpc.service, "credential-broker");
    assert_eq!(
        trace.request.attribute("mcp.method.name"),
        Some("tools/call")
    );
    assert_eq!(trace.request.attribute("http.request.method"), Some("POST"));
    let handle = trace
        .request
        .attribute("mcp.session.handle")
        .expect("the request span names the session by its handle");
    assert!(!handle.is_empty() && handle != session);
    assert_eq!(
        trace.broker_call.attribute("rpc.method"),
        Some("GetCredentials")
    );
    assert_eq!(
        trace.broker_rpc.attribute("rpc.grpc.status_code"),
        Some("0")
    );
    assert_eq!(
        trace.tool.attribute("gen_ai.tool.name"),
        Some("bucket_objects_list")
    );
    assert_eq!(trace.tool.attribute("aws.s3.bucket"), Some(bucket.as_str()));
    assert_eq!(trace.s3.name, "S3.ListObjectsV2");
    assert_eq!(
        trace.store_lookup.attribute("db.system.name"),
        Some("memory")
    );
    // The shared MCP session's record is a store lookup too (it ended before the RPC span did,
    // so it was queued no later than it).
    assert!(
        broker_receiver
            .spans()
            .iter()
            .any(|s| s.trace_id == trace_id
                && s.parent_span_id == trace.broker_rpc.span_id
                && s.name == "store.get_mcp_session"),
        "no store.get_mcp_session span under the broker's RPC span"
    );

    // The initialize's trace reached the broker's bind, and STS: its audit record names it.
    let init_spans = broker_receiver
        .wait_for(ARRIVAL, |spans| {
            in_trace(spans, &init_trace)
                .iter()
                .any(|s| s.name == "STS.AssumeRole")
        })
        .await;
    let init_broker = in_trace(&init_spans, &init_trace);
    for name in [
        "token.validate",
        "single_flight.wait",
        "single_flight.issue",
        "STS.AssumeRole",
        "store.swap_session",
    ] {
        assert!(
            init_broker.iter().any(|s| s.name == name),
            "no {name} span in the initialize's trace: {:?}",
            init_broker.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let bound = audit_text
        .lines()
        .find(|line| line.contains("\"session_bound\""))
        .expect("a session_bound audit record");
    assert!(
        bound.contains(&format!("\"trace_id\":\"{init_trace}\"")),
        "the bind's audit record carries the initialize's trace id: {bound}"
    );

    // Nothing secret anywhere in what either process exported.
    let mut client = stack.broker.client().await;
    let credentials = get_credentials(&mut client, &session, &token, "")
        .await
        .expect("the session's credentials")
        .credentials
        .unwrap();
    let secrets = [
        Secret::new("bearer token", token.clone()),
        Secret::new("raw session id", session.clone()),
        Secret::new("HS256 secret", stack.secret.clone()),
        Secret::new("secret access key", credentials.secret_access_key),
        Secret::new("session token", credentials.session_token),
    ];
    // Everything exported so far, including the spans of this last call.
    broker_receiver
        .wait_for(ARRIVAL, |spans| {
            spans
                .iter()
                .any(|s| s.name == GET_CREDENTIALS && s.parent_span_id.is_empty())
        })
        .await;
    for (who, receiver) in [("adapter", &adapter_receiver), ("broker", &broker_receiver)] {
        let payload = String::from_utf8_lossy(&receiver.payload()).into_owned();
        assert!(!payload.is_empty());
        assert_no_secrets(&format!("the {who}'s exported spans"), &payload, &secrets);
    }
}

#[tokio::test]
async fn an_unsupported_otlp_protocol_stops_both_binaries_naming_the_variable() {
    let (status, output) = e2e::broker::BrokerBuilder::new()
        .hs256_secret(&e2e::tokens::random_string(48))
        .allowed_roles(&["arn:aws:iam::123456789012:role/demo-*"])
        .sts_endpoint("http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .start_expecting_exit()
        .await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\"")
            && output.contains("grpc")
            && output.contains("http/protobuf"),
        "{output}"
    );

    let mut adapter = AdapterBuilder::new("http://127.0.0.1:9")
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317",
        )
        .env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")
        .spawn();
    let status = adapter
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the adapter exits");
    let output = adapter.log_text();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=\"thrift\""),
        "{output}"
    );
}

#[tokio::test]
async fn spans_still_queued_at_sigterm_are_exported_before_exit() {
    let receiver = OtlpReceiver::start(Protocol::Grpc).await;
    // A batch delay far beyond the test: only the shutdown flush can deliver the span.
    let mut adapter = AdapterBuilder::unreachable_broker()
        .env("ADAPTER_REQUIRE_AUTH", "tools")
        .env("ADAPTER_SESSION_SHARING", "process")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())
        .env(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            receiver.protocol().env_value(),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "3600000")
        .start()
        .await;
    let (trace_id, client_span, traceparent) = client_context();
    let mcp = McpHttp::new(&adapter.mcp_url());
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": { "protocolVersion": SESSION_VERSION, "capabilities": {},
                    "clientInfo": { "name": "e2e-tracing", "version": "1" } }
    });
    let answer = mcp
        .send(
            mcp.request(init.to_string(), &Call::default())
                .header("traceparent", &traceparent),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(
        receiver.spans().is_empty(),
        "nothing exported before the flush"
    );

    adapter.sigterm();
    let status = adapter
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the adapter exits after SIGTERM");
    assert!(status.success(), "{}", adapter.log_text());
    let spans = receiver.spans();
    assert!(
        spans.iter().any(|s| s.trace_id == trace_id
            && s.parent_span_id == client_span
            && s.name == "POST /mcp"
            && s.attribute("mcp.method.name") == Some("initialize")),
        "the initialize's span was flushed at shutdown: {spans:?}"
    );
}
