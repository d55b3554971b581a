//! The HTTP surface: rmcp's Streamable HTTP service on `/mcp` behind the gate, RFC 9728
//! Protected Resource Metadata, and `/healthz`.
//!
//! Every request to `/mcp` passes the gate, in this order, before rmcp sees it:
//! 0. a place among `ADAPTER_MAX_IN_FLIGHT` requests (503 with `Retry-After` when none is free),
//!    held until the answer is sent (for a POST, until its event stream ends; a GET stream gives
//!    it back once open), so bodies read before authentication never take more than
//!    `ADAPTER_MAX_IN_FLIGHT × ADAPTER_MAX_BODY`;
//! 1. body read up to `ADAPTER_MAX_BODY` (413 beyond it: a larger `Content-Length` is refused
//!    before reading, a stream is cut off at the limit), so the later steps can name the
//!    request's JSON-RPC id in their answers;
//! 2. `Origin` check (403 for a browser origin that is not configured);
//! 3. `MCP-Protocol-Version` check (400 for a revision this server does not speak);
//! 4. authentication ([`crate::auth`]): 401/403/404/503, or a [`crate::auth::Caller`] in the
//!    request extensions for the tool handlers;
//! 5. for an `initialize` without a token (`ADAPTER_REQUIRE_AUTH=tools`): 503 with `Retry-After`
//!    while `ADAPTER_MAX_ANONYMOUS_SESSIONS` sessions without an owner exist;
//! 6. after rmcp answered an `initialize` that carried a token: the new session is bound to the
//!    token at the broker and gets its owner before the client learns its id.
//!
//! rmcp then applies its own rules (Host allowlist against DNS rebinding, `Accept`, sessions,
//! 404 for an unknown session, DELETE ending a session with 202). Sessions exist for the
//! 2025-03-26 … 2025-11-25 revisions; rmcp serves 2026-07-28 requests without a session.
//! CORS answers (for browser frontends on an allowed origin) wrap all of it.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rmcp::model::ProtocolVersion;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::store::SessionStore,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use url::Url;

use crate::{
    auth::{Authenticator, Caller, bearer_token},
    broker::BrokerClient,
    config::{AnswerFormat, Config, SessionSharing},
    direct::JsonAnswer,
    jsonrpc::{self, Envelope, code, error_response},
    origin::{OriginPolicy, OriginRejection},
    protocol,
    s3::S3Clients,
    sessions::{SessionLimits, Sessions},
    tools::BucketTools,
};

/// Path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
const PRM_PATH: &str = "/.well-known/oauth-protected-resource";

/// What the `/mcp` gate needs.
struct Gate {
    origins: OriginPolicy,
    auth: Authenticator,
    max_body: usize,
    sessions: Arc<Sessions>,
    /// One permit per request in flight (`ADAPTER_MAX_IN_FLIGHT`).
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    max_anonymous: u32,
    /// `ADAPTER_SESSION_SHARING=broker`.
    shared: bool,
    /// `ADAPTER_ANSWER_FORMAT=json`: direct answers to a lone POSTed request come as one JSON
    /// body (`direct`).
    json_answers: bool,
}

/// Builds the whole HTTP application. `shutdown` ends rmcp's sessions and streams.
pub fn app(
    config: &Config,
    broker_tls: crate::config::BrokerTls,
    shutdown: CancellationToken,
) -> anyhow::Result<Router> {
    let broker = BrokerClient::connect_lazy(&config.broker_url, config.broker_timeout, broker_tls)?;
    let s3 = Arc::new(S3Clients::new(&config.region, config.s3_endpoint.as_ref()));
    let resource = config.resource();
    let metadata_url = resource_metadata_url(&resource);

    let listed_buckets = Arc::new(config.listed_buckets.clone());
    let sessions = Arc::new(
        Sessions::new(SessionLimits {
            idle: config.session_idle,
            anonymous_idle: config.anonymous_session_idle,
            max_anonymous: config.max_anonymous_sessions as usize,
            max_per_subject: config.max_sessions_per_subject as usize,
        })
        .with_direct(crate::direct::Direct::new(BucketTools::new(
            s3.clone(),
            listed_buckets.clone(),
        ))),
    );
    sessions.spawn_reaper();

    let hosts = config.effective_allowed_hosts();
    let mut rmcp_config = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(config.max_body)
        // Priming events come from `events`, only for the revisions that have them.
        .with_sse_retry(None)
        .with_cancellation_token(shutdown)
        // rmcp checks origins too; the gate already did with the same list. Explicit ports keep
        // rmcp's matching exact.
        .with_allowed_origins(config.allowed_origins.iter().map(|o| with_explicit_port(o)))
        .enforce_origin_validation();
    rmcp_config = if hosts.is_empty() {
        rmcp_config.disable_allowed_hosts()
    } else {
        rmcp_config.with_allowed_hosts(hosts)
    };
    // Sessions are shared by every replica through the broker (see `sessions`): rmcp restores a
    // session this process does not hold from the record the gate got in its broker call.
    let shared = config.session_sharing == SessionSharing::Broker;
    if shared {
        rmcp_config.session_store = Some(sessions.clone() as Arc<dyn SessionStore>);
    }
    let rmcp = Arc::new(StreamableHttpService::new(
        move || Ok(BucketTools::new(s3.clone(), listed_buckets.clone())),
        sessions.clone(),
        rmcp_config,
    ));
    // rmcp's service behind an `Arc`: axum clones a route's service for every request, and
    // rmcp's own clone copies its configuration (allowed hosts and origins) each time, twice per
    // request; `handle` needs only `&self`.
    let mcp = tower::service_fn(move |request: Request| {
        let rmcp = rmcp.clone();
        async move { Ok::<_, std::convert::Infallible>(rmcp.handle(request).await) }
    });

    let origins = OriginPolicy::new(config.allowed_origins.clone());
    let gate = Arc::new(Gate {
        origins: origins.clone(),
        auth: {
            let auth =
                Authenticator::new(broker, config.require_auth, metadata_url, sessions.clone());
            if shared {
                auth
            } else {
                auth.process_sessions_only()
            }
        },
        shared,
        json_answers: config.answer_format == AnswerFormat::Json,
        max_body: config.max_body,
        sessions,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight as usize)),
        max_in_flight: config.max_in_flight,
        max_anonymous: config.max_anonymous_sessions,
    });
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origins.allows_header(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            header::WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(600));
    let mcp_routes = Router::new()
        .route_service(MCP_PATH, mcp.clone())
        .route_service("/mcp/", mcp)
        .layer(middleware::from_fn_with_state(gate, mcp_gate))
        .layer(cors)
        .layer(middleware::from_fn(crate::telemetry::mcp_request));

    let metadata = Arc::new(protected_resource_metadata(
        &resource,
        &config.authorization_servers,
    ));
    let mut metadata_paths = vec![PRM_PATH.to_string(), format!("{PRM_PATH}{MCP_PATH}")];
    let derived = format!("{PRM_PATH}{}", resource.path().trim_end_matches('/'));
    if !metadata_paths.contains(&derived) {
        metadata_paths.push(derived);
    }
    let mut well_known = Router::new();
    for path in metadata_paths {
        well_known = well_known.route(&path, get(serve_metadata));
    }
    Ok(Router::new()
        .merge(mcp_routes)
        .merge(well_known.with_state(metadata))
        .route("/healthz", get(healthz)))
}

/// `https://h/.well-known/oauth-protected-resource/<path of the resource>` (RFC 9728 §3.1).
pub(crate) fn resource_metadata_url(resource: &Url) -> String {
    let mut base = resource.clone();
    base.set_query(None);
    base.set_fragment(None);
    let path = resource.path().trim_end_matches('/').to_string();
    base.set_path(&format!("{PRM_PATH}{path}"));
    base.to_string()
}

/// The RFC 9728 document.
pub(crate) fn protected_resource_metadata(resource: &Url, authorization_servers: &[Url]) -> Value {
    json!({
        "resource": resource.as_str(),
        "authorization_servers": authorization_servers
            .iter()
            .map(|url| url.as_str().trim_end_matches('/').to_string())
            .collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "resource_name": "S3 MCP adapter",
    })
}

async fn serve_metadata(State(metadata): State<Arc<Value>>) -> Response {
    let mut response = Json(metadata.as_ref().clone()).into_response();
    // Public metadata that browser clients fetch from other origins.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// The `/mcp` gate: in-flight limit, body, Origin, protocol version, authentication, the limit
/// on sessions without an owner; then rmcp; then the new session's owner.
async fn mcp_gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let Ok(permit) = gate.in_flight.clone().try_acquire_owned() else {
        tracing::warn!(
            limit = gate.max_in_flight,
            "refused a request: ADAPTER_MAX_IN_FLIGHT requests in flight"
        );
        return busy(format!(
            "the MCP adapter is serving its limit of {} requests at once (ADAPTER_MAX_IN_FLIGHT); retry shortly",
            gate.max_in_flight
        ));
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(&parts.headers, body, gate.max_body).await {
        Ok(bytes) => bytes,
        Err(response) => return *response,
    };
    let envelope = match parts.method {
        Method::DELETE => Envelope::EndSession,
        Method::GET => Envelope::Stream,
        _ => Envelope::parse(&bytes),
    };
    crate::telemetry::record_methods(envelope.methods());
    let id = envelope.request_id();

    if let Err(rejection) = gate.origins.check(&parts.headers) {
        let message = match rejection {
            OriginRejection::Malformed => "Forbidden: malformed Origin header".to_string(),
            OriginRejection::NotAllowed(origin) => {
                tracing::warn!(%origin, "refused a request from an origin that is not allowed");
                format!("Forbidden: origin {origin} is not allowed to use this MCP server")
            }
        };
        return error_response(StatusCode::FORBIDDEN, id, code::FORBIDDEN, message, None);
    }
    if let Err(response) = protocol::check(&parts.headers, &id) {
        return *response;
    }
    if let Envelope::Batch(messages) = &envelope {
        return batch(&gate, parts, &bytes, messages, next).await;
    }
    let opens_session = parts.method == Method::POST
        && !parts.headers.contains_key("mcp-session-id")
        && envelope.methods().any(|m| m == "initialize");
    let caller = match gate.auth.authenticate(&parts.headers, &envelope).await {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    // The token that opens a session also becomes its owner (step 6).
    let binding_token = match (&caller, opens_session) {
        (Caller::Authorized(_), true) => bearer_token(&parts.headers).ok().flatten(),
        _ => None,
    };
    if opens_session && matches!(caller, Caller::Anonymous) && gate.sessions.anonymous_full() {
        tracing::warn!(
            limit = gate.max_anonymous,
            "refused initialize without a token: ADAPTER_MAX_ANONYMOUS_SESSIONS reached"
        );
        return busy(format!(
            "too many MCP sessions without a token ({} open, ADAPTER_MAX_ANONYMOUS_SESSIONS); retry shortly, or send `Authorization: Bearer <JWT>` with initialize",
            gate.max_anonymous
        ));
    }
    if parts.method == Method::POST && envelope == Envelope::Unreadable {
        let (code, message) = jsonrpc::problem(&bytes);
        return error_response(StatusCode::BAD_REQUEST, Value::Null, code, message, None);
    }
    let sends_json = is_json(&parts.headers);
    if gate.shared
        && let Some(response) = resumption_elsewhere(&parts, &gate.sessions, &id)
    {
        return response;
    }
    let anonymous_open = opens_session && matches!(caller, Caller::Anonymous);
    parts.extensions.insert(caller);
    // Where a direct answer goes to be sent as one JSON body (`direct`): a lone request whose
    // client takes JSON (every client must, but the answer follows what it says).
    let json_answer = (gate.json_answers
        && parts.method == Method::POST
        && matches!(envelope, Envelope::Messages(_))
        && accepts_json(&parts.headers))
    .then(|| {
        let slot = JsonAnswer::default();
        parts.extensions.insert(slot.clone());
        slot
    });
    let is_delete = parts.method == Method::DELETE;
    let is_stream = parts.method == Method::GET;
    // A session this process held when the request went in (see `ended_meanwhile`).
    let held_session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .filter(|s| gate.sessions.holds(s))
        .map(str::to_owned);
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // Answered directly: rmcp's event stream is empty, the answer is sent here. A call the
    // client cancelled gives nothing, and rmcp's stream (which ends without an answer) is sent.
    if let Some(answer) = json_answer.and_then(|slot| slot.take())
        && let Some(body) = answer.await
    {
        response = json_body(response, body);
    }
    if let Some(token) = binding_token {
        let new_session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        if let Some(session_id) = new_session
            && let Err(refusal) = gate
                .auth
                .bind_new_session(&session_id, &token, id.clone())
                .await
        {
            return *refusal;
        }
    }
    // rmcp answers a JSON body it cannot read as a message with 415 and plain text; clients
    // expect 400 with a JSON-RPC error.
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE && sends_json {
        return error_response(
            StatusCode::BAD_REQUEST,
            id,
            code::INVALID_REQUEST,
            "Invalid Request: the message does not match the MCP schema for its method (check `params`)",
            None,
        );
    }
    if anonymous_open
        && let Some(session_id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
        && let Err(refusal) = gate
            .auth
            .open_anonymous_session(&session_id, id.clone())
            .await
    {
        return *refusal;
    }
    // A session that ended while this request was on its way to it (a DELETE, a revocation or an
    // idle expiry on another request): rmcp answers 500 ("Session service terminated"); the
    // client must start a new session, which the protocol says with 404.
    if ended_meanwhile(response.status(), held_session.as_deref(), |s| {
        gate.sessions.holds(s)
    }) {
        return crate::auth::session_gone(id, "the session ended while this request was in flight");
    }
    // rmcp ends a session with 202; the session is gone, nothing is pending, and clients (the
    // official Python SDK among them) expect 200 or 204 here.
    if is_delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    if is_stream {
        // A GET event stream lives as long as its session; it must not hold a place for good.
        drop(permit);
        return response;
    }
    // The place is given back when the answer is fully sent (or the client goes away): a tool
    // call's answer comes on the POST's event stream after rmcp returned.
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &permit;
            frame
        }))
    })
}

/// Whether rmcp's answer is a 500 for a session this process held when the request came in and no
/// longer holds: it ended while the request was in flight.
fn ended_meanwhile(
    status: StatusCode,
    session: Option<&str>,
    holds: impl Fn(&str) -> bool,
) -> bool {
    status == StatusCode::INTERNAL_SERVER_ERROR && session.is_some_and(|s| !holds(s))
}

/// Whether the client takes an `application/json` answer (its `Accept`).
fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|range| range.split(';').next())
        .any(|range| matches!(range.trim(), "application/json" | "application/*" | "*/*"))
}

/// `body` (a direct answer) as the one JSON body of rmcp's `response` (an empty event stream):
/// its status and headers but the event stream's.
fn json_body(response: Response, body: crate::direct::JsonBody) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CACHE_CONTROL);
    parts.headers.remove("x-accel-buffering");
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match body {
        Ok(body) => Response::from_parts(parts, Body::from(body)),
        // Not seen: a message is a tree of JSON values with string keys.
        Err(error) => {
            tracing::error!(%error, "could not write an answer as JSON");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Whether the request says its body is JSON (rmcp's own 415 for another type stays).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Bytes of answers one batch may collect (its answer is one JSON document held in memory); a
/// batch whose answers are larger is refused with a message to send the large requests alone.
const MAX_BATCH_ANSWER: usize = 16 << 20;
/// Messages in one batch: each runs like a request of its own, so a batch must not be a way
/// around `ADAPTER_MAX_IN_FLIGHT`.
const MAX_BATCH_MESSAGES: usize = 32;
/// Messages of one batch running at once (the tools' own upload concurrency).
const BATCH_CONCURRENCY: usize = 4;

/// A JSON-RPC batch. The 2025-03-26 revision says servers MUST accept them; later revisions
/// removed them, and rmcp reads one message per request. So in a 2025-03-26 session every
/// message is authorized as if it came alone (its own broker check, its own [`Caller`]) —
/// all before any of them runs, and one refusal refuses the batch; the batch as a whole needs a
/// token first, as before — then each goes to rmcp
/// alone (at most [`BATCH_CONCURRENCY`] at once), and their answers return as one JSON array
/// (202 when the batch holds no request). At most [`MAX_BATCH_MESSAGES`] messages and
/// [`MAX_BATCH_ANSWER`] bytes of answers.
async fn batch(
    gate: &Gate,
    parts: http::request::Parts,
    bytes: &Bytes,
    messages: &[jsonrpc::Message],
    next: Next,
) -> Response {
    // A batch as a whole always needs a token (`auth`): refusals come before anything else.
    if let Err(refusal) = gate
        .auth
        .authenticate(&parts.headers, &Envelope::Batch(messages.to_vec()))
        .await
    {
        return *refusal;
    }
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok());
    let revision = session.and_then(|id| gate.sessions.streams.revision(id));
    let allowed = match (session, &revision) {
        (Some(_), Some(version)) => *version == ProtocolVersion::V_2025_03_26,
        // Not a live session here: each message gets rmcp's 404 below.
        (Some(id), None) => gate.sessions.owner(id).is_none(),
        (None, _) => false,
    };
    if !allowed {
        let revision = revision.map_or_else(|| "none (no session)".to_string(), |v| v.to_string());
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            code::INVALID_REQUEST,
            format!(
                "Invalid Request: JSON-RPC batches are accepted only in sessions on revision 2025-03-26 (this request's session: {revision}; initialize never goes in a batch); send one message per request"
            ),
            None,
        );
    }
    if messages.len() > MAX_BATCH_MESSAGES {
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            code::INVALID_REQUEST,
            format!(
                "Invalid Request: a batch of {} messages; at most {MAX_BATCH_MESSAGES} per batch",
                messages.len()
            ),
            None,
        );
    }
    let items = jsonrpc::batch_items(bytes).unwrap_or_default();
    let mut callers = Vec::with_capacity(messages.len());
    for message in messages {
        let alone = Envelope::Messages(vec![message.clone()]);
        match gate.auth.authenticate(&parts.headers, &alone).await {
            Ok(caller) => callers.push(caller),
            Err(refusal) => return *refusal,
        }
    }
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
            code::INVALID_REQUEST,
            format!(
                "the answers to this batch are larger than {MAX_BATCH_ANSWER} bytes; send the requests with large answers alone"
            ),
            None,
        )
    };
    let sends = items.into_iter().zip(callers).map(|(item, caller)| {
        let mut request = Request::new(Body::from(item.to_string()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        request.headers_mut().remove(header::CONTENT_LENGTH);
        *request.extensions_mut() = parts.extensions.clone();
        request.extensions_mut().insert(caller);
        let next = next.clone();
        async move {
            let response = next.run(request).await;
            match response.status() {
                StatusCode::ACCEPTED => return Ok(None),
                StatusCode::OK => {}
                _ => return Err(response),
            }
            let json = is_json(response.headers());
            let body = axum::body::to_bytes(response.into_body(), MAX_BATCH_ANSWER)
                .await
                .map_err(|_| too_large())?;
            Ok(Some((json, body)))
        }
    });
    let mut answers = Vec::new();
    let mut collected = 0usize;
    let mut results = std::pin::pin!(futures::stream::iter(sends).buffered(BATCH_CONCURRENCY));
    while let Some(result) = results.next().await {
        let (json, body) = match result {
            Ok(Some(answer)) => answer,
            Ok(None) => continue,
            Err(response) => return response,
        };
        collected += body.len();
        if collected > MAX_BATCH_ANSWER {
            return too_large();
        }
        let messages = if json {
            serde_json::from_slice(&body).into_iter().collect()
        } else {
            jsonrpc::event_stream_messages(&String::from_utf8_lossy(&body))
        };
        answers.extend(messages.into_iter().filter(|message: &Value| {
            message.get("id").is_some()
                && (message.get("result").is_some() || message.get("error").is_some())
        }));
    }
    if answers.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    Json(Value::Array(answers)).into_response()
}

/// A GET with `Last-Event-ID` for a session this replica does not hold (it was opened or last
/// streamed on another replica): the events are not here, so the answer is an immediate **405**
/// with a JSON-RPC error, never a stream that waits. 405 is what both official SDKs treat as "no
/// stream to resume here": the TypeScript client stops resuming quietly, the Python client
/// gives up after its bounded retries and fails the pending request, which its caller re-sends
/// (on any replica). An empty 200 stream instead (rmcp's answer to an unknown event id) makes
/// the Python client reconnect without end.
fn resumption_elsewhere(
    parts: &http::request::Parts,
    sessions: &Sessions,
    id: &Value,
) -> Option<Response> {
    if parts.method != Method::GET || !parts.headers.contains_key("last-event-id") {
        return None;
    }
    let session_id = parts.headers.get("mcp-session-id")?.to_str().ok()?;
    if sessions.holds(session_id) {
        return None;
    }
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        id.clone(),
        code::INVALID_REQUEST,
        "this MCP adapter replica does not hold the events of that stream (the session's streams were on another replica): resumption across replicas is not offered; re-send the request with POST",
        None,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    Some(response)
}

/// 503 with `Retry-After` for a request refused at one of the adapter's limits.
fn busy(message: String) -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Value::Null,
        code::BUSY,
        message,
        None,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The whole body, or 413 beyond `max` bytes.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, Box<Response>> {
    let too_large = || {
        Box::new(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
            code::INVALID_REQUEST,
            format!("request body larger than {max} bytes"),
            None,
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            code::INVALID_REQUEST,
            "could not read the request body",
            None,
        ))),
    }
}

/// `https://a.example` → `https://a.example:443`, for rmcp's origin matcher.
fn with_explicit_port(origin: &str) -> String {
    if origin == "null" {
        return origin.into();
    }
    match origin.parse::<http::Uri>() {
        Ok(uri) if uri.port().is_none() => match uri.scheme_str() {
            Some("https") => format!("{origin}:443"),
            Some("http") => format!("{origin}:80"),
            _ => origin.into(),
        },
        _ => origin.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use tower::ServiceExt;

    #[test]
    fn metadata_url_is_formed_as_rfc_9728_says() {
        let url = |s: &str| resource_metadata_url(&Url::parse(s).unwrap());
        assert_eq!(
            url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            url("http://127.0.0.1:8000/mcp/"),
            "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            url("https://mcp.example.com"),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            url("https://h/tools/mcp"),
            "https://h/.well-known/oauth-protected-resource/tools/mcp"
        );
    }

    #[test]
    fn metadata_document_has_the_required_fields() {
        let doc = protected_resource_metadata(
            &Url::parse("https://mcp.example.com/mcp").unwrap(),
            &[Url::parse("https://idp.example.com/").unwrap()],
        );
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://idp.example.com"])
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }

    #[test]
    fn a_500_for_a_session_no_longer_held_is_a_session_that_ended() {
        let held = |s: &str| s == "live";
        let e500 = StatusCode::INTERNAL_SERVER_ERROR;
        assert!(ended_meanwhile(e500, Some("gone"), held));
        assert!(
            !ended_meanwhile(e500, Some("live"), held),
            "a real fault stays 500"
        );
        assert!(!ended_meanwhile(e500, None, held), "no session named");
        assert!(!ended_meanwhile(StatusCode::OK, Some("gone"), held));
    }

    #[test]
    fn json_answers_only_for_clients_that_take_json() {
        let accept = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::ACCEPT, HeaderValue::from_str(value).unwrap());
            }
            accepts_json(&headers)
        };
        assert!(accept(&["application/json, text/event-stream"]));
        assert!(accept(&["text/event-stream", "application/json;q=0.9"]));
        assert!(accept(&["*/*"]));
        assert!(!accept(&["text/event-stream"]));
        assert!(!accept(&["application/jsonl, text/event-stream"]));
        assert!(!accept(&[]));
    }

    #[test]
    fn explicit_ports_for_rmcp() {
        assert_eq!(
            with_explicit_port("https://a.example"),
            "https://a.example:443"
        );
        assert_eq!(
            with_explicit_port("http://a.example:8080"),
            "http://a.example:8080"
        );
        assert_eq!(with_explicit_port("null"), "null");
    }

    fn test_app(extra: &[&str]) -> Router {
        let mut args = vec![
            "mcp-adapter",
            "--broker-url",
            "http://127.0.0.1:1",
            "--broker-timeout",
            "200ms",
        ];
        args.extend_from_slice(extra);
        let config = Config::load_from(args).unwrap();
        app(&config, Default::default(), CancellationToken::new()).unwrap()
    }

    fn post(body: &str) -> http::request::Builder {
        let _ = body;
        http::Request::post(MCP_PATH)
            .header(header::HOST, "127.0.0.1:8000")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
    }

    /// Tools mode with sessions in this process: these tests have no broker (sharing through
    /// the broker is tested end to end, tests/tests/adapter_replicas.rs).
    const TOOLS: &[&str] = &["--require-auth", "tools", "--session-sharing", "process"];
    const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    const TOOL_CALL: &str = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"bucket_objects_list","arguments":{"bucket":"demo-bucket"}}}"#;

    async fn send(app: Router, request: http::Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        // SSE answers stay open; read only what is there.
        let body = tokio::time::timeout(
            Duration::from_millis(500),
            to_bytes(response.into_body(), 1 << 20),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
        (status, headers, body)
    }

    #[tokio::test]
    async fn initialize_without_a_token_is_401_by_default_and_opens_a_session_in_tools_mode() {
        let (status, headers, _) = send(
            test_app(&[]),
            post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("resource_metadata=")
        );
        let (status, headers, _) = send(
            test_app(TOOLS),
            post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.contains_key("mcp-session-id"));
    }

    #[tokio::test]
    async fn with_shared_sessions_a_session_the_broker_cannot_record_is_refused() {
        // Tools mode, sessions shared through a broker that is down: the new session could not be
        // served by any other replica, so it is closed and the initialize is 503 naming the broker.
        let (status, headers, body) = send(
            test_app(&["--require-auth", "tools"]),
            post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!headers.contains_key("mcp-session-id"));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("credential broker"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_token_less_event_stream_is_401_in_tools_mode_too() {
        let app = test_app(TOOLS);
        let (status, headers, _) = send(
            app.clone(),
            post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let session = headers["mcp-session-id"].clone();
        for last_event_id in [None, Some("0")] {
            let mut request = http::Request::get(MCP_PATH)
                .header(header::HOST, "127.0.0.1:8000")
                .header(header::ACCEPT, "text/event-stream")
                .header("mcp-session-id", session.clone())
                .header("mcp-protocol-version", "2025-11-25");
            if let Some(last) = last_event_id {
                request = request.header("last-event-id", last);
            }
            let (status, headers, _) =
                send(app.clone(), request.body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{last_event_id:?}");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        }
    }

    #[tokio::test]
    async fn requests_past_the_in_flight_limit_are_503_with_retry_after() {
        let app = test_app(&["--max-in-flight", "1"]);
        // A request whose body never ends holds the only place while the gate reads it.
        let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let first = tokio::spawn(
            app.clone()
                .oneshot(post("").body(Body::from_stream(rx)).unwrap()),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, headers, body) = send(
                app.clone(),
                post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
            )
            .await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(headers[header::RETRY_AFTER], "1");
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("ADAPTER_MAX_IN_FLIGHT"),
                    "{body}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never refused: {status}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(tx);
        first.await.unwrap().unwrap();
        // The place is free again: the next request reaches the gate (401: no token).
        let (status, _, _) =
            send(app, post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn ownerless_sessions_past_the_limit_are_503_with_retry_after() {
        let app = test_app(&[
            "--require-auth",
            "tools",
            "--session-sharing",
            "process",
            "--max-anonymous-sessions",
            "2",
        ]);
        for _ in 0..2 {
            let (status, _, _) = send(
                app.clone(),
                post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, headers, body) = send(
            app.clone(),
            post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ADAPTER_MAX_ANONYMOUS_SESSIONS"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_tool_call_without_a_token_is_401_with_the_challenge() {
        let (status, headers, body) = send(
            test_app(&[]),
            post(TOOL_CALL).body(Body::from(TOOL_CALL)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Bearer resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp""#
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["id"], 9);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer <JWT>")
        );
    }

    #[tokio::test]
    async fn foreign_origins_are_403_and_listed_ones_pass() {
        let request = post(INITIALIZE)
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::from(INITIALIZE))
            .unwrap();
        let (status, _, body) = send(test_app(TOOLS), request).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["id"], 1);

        let request = post(INITIALIZE)
            .header(header::ORIGIN, "https://app.example.com")
            .body(Body::from(INITIALIZE))
            .unwrap();
        let (status, headers, _) = send(
            test_app(&[
                "--require-auth",
                "tools",
                "--session-sharing",
                "process",
                "--allowed-origins",
                "https://app.example.com",
            ]),
            request,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
    }

    #[tokio::test]
    async fn unknown_protocol_versions_are_400() {
        let request = post(INITIALIZE)
            .header("mcp-protocol-version", "1999-01-01")
            .body(Body::from(INITIALIZE))
            .unwrap();
        let (status, _, body) = send(test_app(&[]), request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
            code::UNSUPPORTED_PROTOCOL_VERSION
        );
    }

    #[tokio::test]
    async fn large_bodies_are_413() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":"{}"}}}}"#,
            "a".repeat(5000)
        );
        let (status, _, _) = send(
            test_app(&["--max-body", "4KiB"]),
            post(&big).body(Body::from(big.clone())).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // Without Content-Length (a stream), too.
        let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(big))]);
        let (status, _, _) = send(
            test_app(&["--max-body", "4KiB"]),
            post("").body(Body::from_stream(stream)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_tool_call_with_the_broker_down_is_a_tool_error_naming_it() {
        let app = test_app(TOOLS);
        let (status, headers, _) = send(
            app.clone(),
            post(INITIALIZE).body(Body::from(INITIALIZE)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let session = headers["mcp-session-id"].clone();
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let request = post(initialized)
            .header("mcp-session-id", session.clone())
            .header("mcp-protocol-version", "2025-11-25")
            .body(Body::from(initialized))
            .unwrap();
        assert_eq!(send(app.clone(), request).await.0, StatusCode::ACCEPTED);
        let request = post(TOOL_CALL)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25")
            .header(header::AUTHORIZATION, "Bearer a.b.c")
            .body(Body::from(TOOL_CALL))
            .unwrap();
        let (status, _, body) = send(app, request).await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains(r#"\"isError\":true"#) || text.contains(r#""isError":true"#),
            "{text}"
        );
        assert!(text.contains("CredentialBrokerUnavailable"), "{text}");
    }

    #[tokio::test]
    async fn metadata_and_health() {
        let app = test_app(&["--authorization-servers", "https://idp.example.com"]);
        for path in [PRM_PATH, "/.well-known/oauth-protected-resource/mcp"] {
            let (status, headers, body) = send(
                app.clone(),
                http::Request::get(path).body(Body::empty()).unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            let doc: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(doc["resource"], "http://127.0.0.1:8000/mcp");
            assert_eq!(
                doc["authorization_servers"],
                json!(["https://idp.example.com"])
            );
        }
        let (status, _, _) = send(
            app,
            http::Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn hosts_outside_the_allowlist_are_refused_by_rmcp() {
        let request = http::Request::post(MCP_PATH)
            .header(header::HOST, "attacker.example")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Body::from(INITIALIZE))
            .unwrap();
        assert_eq!(
            send(test_app(TOOLS), request).await.0,
            StatusCode::FORBIDDEN
        );
        let request = http::Request::post(MCP_PATH)
            .header(header::HOST, "mcp.internal:8000")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Body::from(INITIALIZE))
            .unwrap();
        assert_eq!(
            send(
                test_app(&[
                    "--require-auth",
                    "tools",
                    "--session-sharing",
                    "process",
                    "--allowed-hosts",
                    "mcp.internal"
                ]),
                request
            )
            .await
            .0,
            StatusCode::OK
        );
    }
}
