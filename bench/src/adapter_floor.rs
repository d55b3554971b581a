//! The adapter's floor: a bare axum handler doing what one `tools/call bucket_objects_list` must
//! do at least — parse the JSON-RPC request, make the same `GetCredentials` call to the broker
//! (the same shared-session `CONTINUE` the adapter sends, over one kept-alive HTTP/2 channel),
//! the same `ListObjectsV2` with the same SDK (one S3 client per credential, one HTTP connector
//! for all of them, as the adapter builds them) and answer the same JSON — with no rmcp, no
//! session worker, no SSE, no authentication gate beyond what the broker checks.
//!
//! adapter ÷ floor CPU per call, measured in the same run with the same client, is the adapter's
//! own overhead, whatever the machine. Given the adapter's tool list, it also answers `tools/list`
//! after the same broker call: the least a `tools/list` costs where every request is checked at
//! the broker (issue 12). It is not an MCP server anyone should deploy: it answers
//! `initialize` with the least a client accepts and nothing else of the protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use credbroker_proto::v1::{GetCredentialsRequest, McpSessionUse, mcp_session_use::Action};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Idle timeout sent with the shared-session record (the adapter's default, 30 minutes).
const IDLE_MS: u64 = 30 * 60 * 1000;

/// What the floor needs: the broker channel, the S3 endpoint, the clients built so far.
#[derive(Clone)]
struct Floor {
    broker: CredentialBrokerClient<Channel>,
    s3_endpoint: String,
    http: aws_sdk_s3::config::SharedHttpClient,
    /// access key id → client, as the adapter caches them.
    clients: Arc<Mutex<HashMap<String, aws_sdk_s3::Client>>>,
    /// The `result` of the adapter's `tools/list`, when given.
    tools: Arc<Option<Value>>,
}

/// Serves the floor on `listener`, calling the broker at `broker` and S3 at `s3_endpoint`;
/// `tools` is the `result` it answers `tools/list` with (`None`: it answers no `tools/list`).
pub async fn run(
    listener: TcpListener,
    broker: &str,
    s3_endpoint: &str,
    tools: Option<Value>,
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(broker.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let floor = Floor {
        broker: CredentialBrokerClient::new(channel),
        s3_endpoint: s3_endpoint.to_string(),
        http: aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https(),
        clients: Arc::default(),
        tools: Arc::new(tools),
    };
    let app = Router::new().route("/mcp", post(handle)).with_state(floor);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

fn rpc_error(id: &Value, status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": message}}),
        ),
    )
        .into_response()
}

async fn handle(
    State(floor): State<Floor>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(&Value::Null, StatusCode::BAD_REQUEST, "not JSON");
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match message.get("method").and_then(Value::as_str) {
        Some("initialize") => initialize(&floor, &id, &message, token).await,
        Some("notifications/initialized") => StatusCode::ACCEPTED.into_response(),
        Some("tools/call") => match session {
            Some(session) => tools_call(&floor, &id, &message, session, token).await,
            None => rpc_error(&id, StatusCode::BAD_REQUEST, "Mcp-Session-Id required"),
        },
        Some("tools/list") if floor.tools.is_some() => match session {
            Some(session) => tools_list(&floor, &id, session, token).await,
            None => rpc_error(&id, StatusCode::BAD_REQUEST, "Mcp-Session-Id required"),
        },
        _ => rpc_error(
            &id,
            StatusCode::BAD_REQUEST,
            "the floor answers initialize, tools/call and (given a tool list) tools/list",
        ),
    }
}

async fn initialize(floor: &Floor, id: &Value, message: &Value, token: String) -> Response {
    let session = format!("floor-{}", e2e::tokens::random_string(43));
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let request = GetCredentialsRequest {
        session_id: session.clone(),
        token,
        role_arn: String::new(),
        mcp: Some(McpSessionUse {
            action: Action::Open as i32,
            initialize_params_json: params.to_string(),
            idle_ms: IDLE_MS,
        }),
    };
    if let Err(status) = floor.broker.clone().get_credentials(request).await {
        return rpc_error(id, StatusCode::UNAUTHORIZED, status.message());
    }
    let version = params
        .get("protocolVersion")
        .cloned()
        .unwrap_or(json!("2025-11-25"));
    let mut response = axum::Json(json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "protocolVersion": version,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "adapter-floor", "version": "0"},
        },
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&session) {
        response.headers_mut().insert("mcp-session-id", v);
    }
    response
}

async fn tools_call(
    floor: &Floor,
    id: &Value,
    message: &Value,
    session: String,
    token: String,
) -> Response {
    let arguments = &message["params"]["arguments"];
    let Some(bucket) = arguments.get("bucket").and_then(Value::as_str) else {
        return rpc_error(id, StatusCode::BAD_REQUEST, "bucket required");
    };
    let bucket = bucket.trim_start_matches("s3://").to_string();
    let max_keys = arguments
        .get("max_keys")
        .and_then(Value::as_i64)
        .unwrap_or(100);
    let credentials = match continue_session(floor, session, token).await {
        Ok(credentials) => credentials,
        Err(status) => return rpc_error(id, StatusCode::UNAUTHORIZED, status.message()),
    };
    let client = floor.client(&credentials);
    let page = match client
        .list_objects_v2()
        .bucket(&bucket)
        .max_keys(max_keys as i32)
        .send()
        .await
    {
        Ok(page) => page,
        Err(e) => return rpc_error(id, StatusCode::BAD_GATEWAY, &format!("{e:?}")),
    };
    let objects: Vec<Value> = page
        .contents()
        .iter()
        .map(|o| {
            let key = o.key().unwrap_or_default();
            json!({
                "key": key,
                "s3_uri": format!("s3://{bucket}/{key}"),
                "size": o.size(),
                "last_modified": o
                    .last_modified()
                    .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
                "etag": o.e_tag(),
            })
        })
        .collect();
    let structured = json!({
        "bucket": bucket,
        "prefix": "",
        "count": objects.len(),
        "objects": objects,
        "is_truncated": page.is_truncated().unwrap_or(false),
        "next_continuation_token": page.next_continuation_token(),
    });
    axum::Json(json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "content": [{"type": "text", "text": structured.to_string()}],
            "structuredContent": structured,
            "isError": false,
        },
    }))
    .into_response()
}

/// The broker call the adapter makes on every request of a session: its credentials, after the
/// broker checked the token and the session (`CONTINUE`).
async fn continue_session(
    floor: &Floor,
    session: String,
    token: String,
) -> Result<credbroker_proto::v1::AwsCredentials, tonic::Status> {
    let request = GetCredentialsRequest {
        session_id: session,
        token,
        role_arn: String::new(),
        mcp: Some(McpSessionUse {
            action: Action::Continue as i32,
            initialize_params_json: String::new(),
            idle_ms: IDLE_MS,
        }),
    };
    let response = floor.broker.clone().get_credentials(request).await?;
    Ok(response.into_inner().credentials.unwrap_or_default())
}

/// `tools/list`: the broker's check, then the adapter's tool list, serialised per request as the
/// adapter does.
async fn tools_list(floor: &Floor, id: &Value, session: String, token: String) -> Response {
    if let Err(status) = continue_session(floor, session, token).await {
        return rpc_error(id, StatusCode::UNAUTHORIZED, status.message());
    }
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        jsonrpc: &'static str,
        id: &'a Value,
        result: &'a Value,
    }
    let result = floor.tools.as_ref().as_ref().unwrap_or(&Value::Null);
    axum::Json(Answer {
        jsonrpc: "2.0",
        id,
        result,
    })
    .into_response()
}

impl Floor {
    /// The S3 client for these credentials: built once per access key, on the shared connector.
    fn client(&self, c: &credbroker_proto::v1::AwsCredentials) -> aws_sdk_s3::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(c.access_key_id.clone())
            .or_insert_with(|| {
                let credentials = Credentials::new(
                    c.access_key_id.clone(),
                    c.secret_access_key.clone(),
                    Some(c.session_token.clone()),
                    None,
                    "broker",
                );
                let config = aws_sdk_s3::config::Builder::new()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new("us-east-1"))
                    .credentials_provider(SharedCredentialsProvider::new(credentials))
                    .http_client(self.http.clone())
                    .timeout_config(
                        aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(3))
                            .operation_timeout(Duration::from_secs(60))
                            .build(),
                    )
                    .endpoint_url(&self.s3_endpoint)
                    .force_path_style(true)
                    .build();
                aws_sdk_s3::Client::from_conf(config)
            })
            .clone()
    }
}
