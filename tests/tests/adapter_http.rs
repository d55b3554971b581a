//! The adapter's HTTP surface, on the real binary, with plain HTTP requests: what a load
//! balancer, a browser or a misbehaving client sees before any MCP client library gets involved.
//!
//! None of this needs AWS; the broker URL points at a closed port unless a test needs a broker.
//! Without a broker no token can be accepted, so these adapters run in the `tools` compatibility
//! mode (connecting without a token) unless a test says otherwise.

use std::time::{Duration, Instant};

use e2e::adapter::{Adapter, AdapterBuilder};
use e2e::mcp::McpHttp;
use e2e::stack::AdapterStack;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACCEPT: &str = "application/json, text/event-stream";

fn initialize(version: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": version, "capabilities": {}, "clientInfo": { "name": "e2e", "version": "1" } }
    })
}

fn tool_call(id: i64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "bucket_objects_list", "arguments": { "bucket": "demo-bucket" } }
    })
}

async fn adapter_without_broker(
    configure: impl FnOnce(AdapterBuilder) -> AdapterBuilder,
) -> Adapter {
    configure(
        AdapterBuilder::unreachable_broker()
            .env("ADAPTER_BROKER_TIMEOUT", "500ms")
            .env("ADAPTER_REQUIRE_AUTH", "tools")
            // Without a broker, sessions can only live in this process (shared sessions need
            // the broker's store: tests/tests/adapter_replicas.rs).
            .env("ADAPTER_SESSION_SHARING", "process"),
    )
    .start()
    .await
}

fn post(adapter: &Adapter, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(adapter.mcp_url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(body.to_string())
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length); returns the status code.
async fn chunked_post_status(adapter: &Adapter, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", adapter.port()))
        .await
        .unwrap();
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: {ACCEPT}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(1000) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            String::from_utf8_lossy(chunk)
        ));
    }
    request.push_str("0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// Opens a legacy session (initialize + initialized); returns its id.
async fn open_session(adapter: &Adapter) -> String {
    let response = post(adapter, &initialize("2025-11-25"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let initialized = post(
        adapter,
        &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .header("mcp-session-id", &session)
    .header("mcp-protocol-version", "2025-11-25")
    .send()
    .await
    .unwrap();
    assert_eq!(initialized.status(), StatusCode::ACCEPTED);
    session
}

#[tokio::test]
async fn protected_resource_metadata_and_health() {
    let adapter = adapter_without_broker(|b| {
        b.env("ADAPTER_RESOURCE_URL", "https://mcp.example.com/mcp")
            .env(
                "ADAPTER_AUTHORIZATION_SERVERS",
                "https://idp.example.com,https://idp2.example.com/",
            )
    })
    .await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let response = reqwest::get(format!("{}{path}", adapter.url()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let doc: Value = response.json().await.unwrap();
        assert_eq!(
            doc,
            json!({
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://idp.example.com", "https://idp2.example.com"],
                "bearer_methods_supported": ["header"],
                "resource_name": "S3 MCP adapter",
            }),
            "{path}"
        );
    }
    let health = reqwest::get(format!("{}/healthz", adapter.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // The challenge names the configured resource's metadata, not the listen address.
    let response = post(&adapter, &tool_call(3)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 3);
}

#[tokio::test]
async fn origin_version_and_size_rules() {
    let adapter = adapter_without_broker(|b| {
        b.env("ADAPTER_ALLOWED_ORIGINS", "https://app.example.com")
            .env("ADAPTER_MAX_BODY", "8KiB")
    })
    .await;

    // A browser on a foreign origin: 403 with a JSON-RPC error naming the request.
    let response = post(&adapter, &initialize("2025-11-25"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.json::<Value>().await.unwrap()["id"], 1);
    // The allowed origin, with CORS answers a browser can read.
    let response = post(&adapter, &initialize("2025-11-25"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"),
        "{exposed}"
    );
    // A preflight with the Authorization header.
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, adapter.mcp_url())
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, mcp-session-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );

    // Unknown protocol revision: 400 with rmcp's negotiation error shape.
    let response = post(&adapter, &tool_call(4))
        .header("mcp-protocol-version", "2099-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32022);
    assert!(
        body["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );

    // Body limit: 413, declared or streamed.
    let big = json!({ "jsonrpc": "2.0", "id": 5, "method": "ping", "params": { "pad": "x".repeat(9000) } });
    assert_eq!(
        post(&adapter, &big).send().await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(chunked_post_status(&adapter, &big.to_string()).await, 413);

    // A Host the adapter does not serve (DNS rebinding).
    let response = post(&adapter, &initialize("2025-11-25"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn delete_without_a_token_is_refused_and_the_session_lives_on() {
    // Ending a session is an act of its owner: like a tool call it needs the token (the MCP
    // authorization rule). Ending it with the owner's token is covered with the broker in
    // isolation_sessions.rs.
    let adapter = adapter_without_broker(|b| b).await;
    let session = open_session(&adapter).await;
    let client = reqwest::Client::new();
    let deleted = client
        .delete(adapter.mcp_url())
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::UNAUTHORIZED);
    assert!(deleted.headers().contains_key("www-authenticate"));
    let after = post(
        &adapter,
        &json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
    )
    .header("mcp-session-id", &session)
    .header("mcp-protocol-version", "2025-11-25")
    .send()
    .await
    .unwrap();
    assert_eq!(
        after.status(),
        StatusCode::OK,
        "the session still serves its owner"
    );
    assert!(
        !adapter.log_text().contains(&session),
        "raw session id in the log"
    );
}

#[tokio::test]
async fn by_default_even_initialize_needs_a_token() {
    // No ADAPTER_REQUIRE_AUTH: the default is `all`, the MCP authorization spec.
    let adapter = adapter_without_broker(|b| b.without_env("ADAPTER_REQUIRE_AUTH")).await;
    let response = post(&adapter, &initialize("2025-11-25"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    // With a token but no broker to check it: 503 naming the broker, never a pass.
    let response = post(&adapter, &initialize("2025-11-25"))
        .header("authorization", "Bearer aaa.bbb.ccc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credential broker"),
        "{body}"
    );
}

#[tokio::test]
async fn a_bad_setting_fails_the_start_with_one_line_naming_it() {
    for (variable, value) in [
        ("ADAPTER_MAX_BODY", "lots"),
        ("ADAPTER_REQUIRE_AUTH", "sometimes"),
        ("ADAPTER_BROKER_TIMEOUT", "forever"),
        ("ADAPTER_ALLOWED_ORIGINS", "https://app.example.com/path"),
    ] {
        let mut adapter = AdapterBuilder::new("http://127.0.0.1:1")
            .env(variable, value)
            .spawn();
        let status = adapter
            .wait_exit(Duration::from_secs(20))
            .await
            .expect("exits");
        assert_eq!(status.code(), Some(2), "{variable}");
        let log = adapter.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{variable}: {log}");
        assert!(
            lines[0].contains(&format!("{variable}:")),
            "{variable}: {log}"
        );
    }
}

#[tokio::test]
async fn sigterm_stops_it_promptly_with_an_open_event_stream() {
    // An event stream needs the session owner's token, so this one has a broker.
    let mut fx = AdapterStack::start().await;
    let token = fx.stack.rw_token("alice");
    let session = McpHttp::new(&fx.adapter.mcp_url())
        .open_session(Some(&token))
        .await;
    let adapter = &mut fx.adapter;
    // A client holding the GET event stream open, as MCP clients do.
    let stream = reqwest::Client::new()
        .get(adapter.mcp_url())
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {token}"))
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let started = Instant::now();
    adapter.sigterm();
    let status = adapter
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(adapter.log_text().contains("mcp-adapter stopped"));
    drop(stream);
}
