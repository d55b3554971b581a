//! Adapter replicas serve any session (issue 19): three adapters behind a round-robin balancer
//! without stickiness (`e2e::round_robin`, each request to the next replica), two broker
//! replicas sharing one redis-server, moto with IAM enforcement (`e2e::fleet`).
//!
//! Before shared sessions, the second request of any session landed on a replica that had never
//! seen it and got 404 "Session not found": every test here fails on the old code at its first
//! tool call through the balancer (or, for the direct checks, on the first replica that did not
//! answer `initialize`).

use std::time::{Duration, Instant};

use e2e::fleet::Fleet;
use e2e::mcp::{Call, McpHttp, SESSION_VERSION};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADAPTERS: usize = 3;
const CALLS: usize = 50;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// The JSON-RPC code of the adapter's 404 for a session that ended (adapter/src/jsonrpc.rs).
const SESSION_GONE: i64 = -32004;

// ---------------------------------------------------------------------------------------------
// The Python client (tests/clients/python/mcp_plan.py)

/// Everything `mcp_plan.py` printed, one JSON value per line.
async fn run_python(plan: Value, mut on_step: impl FnMut(usize)) -> Vec<Value> {
    let mut run = e2e::mcp_plan::PlanRun::start(&plan).await;
    let mut events = Vec::new();
    let read_all = async {
        while let Some(event) = run.next_event().await {
            if let Some(step) = event.get("step").and_then(Value::as_u64) {
                on_step(step as usize);
            }
            events.push(event);
        }
    };
    tokio::time::timeout(CLIENT_TIMEOUT, read_all)
        .await
        .expect("mcp_plan.py finished in time");
    run.finish().await;
    events
}

fn list_plan(fleet: &Fleet, token: &str) -> Value {
    let call = json!({ "op": "call", "tool": "bucket_objects_list", "args": { "bucket": fleet.bucket() } });
    json!({
        "url": fleet.balancer.mcp_url(),
        "mode": "legacy",
        "token": token,
        "steps": vec![call; CALLS],
    })
}

/// Asserts the Python run connected with a session and every tool call succeeded; returns the
/// session id.
fn assert_all_calls_ok(events: &[Value]) -> String {
    let connected = events
        .iter()
        .find(|e| e.get("connected").is_some())
        .unwrap_or_else(|| panic!("not connected: {events:?}"));
    let session = connected["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("legacy mode without a session: {connected}"))
        .to_string();
    let steps: Vec<&Value> = events.iter().filter(|e| e.get("step").is_some()).collect();
    assert_eq!(steps.len(), CALLS, "{events:?}");
    let failed: Vec<&&Value> = steps
        .iter()
        .filter(|s| s.get("error").is_some() || s["is_error"] != false)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {CALLS} calls failed: {failed:#?}",
        failed.len()
    );
    session
}

/// The client's own DELETE at exit (`__aexit__`) was answered 2xx.
fn assert_client_deleted(events: &[Value]) {
    let closed = events
        .iter()
        .find(|e| e.get("closed").is_some())
        .unwrap_or_else(|| panic!("no close: {events:?}"));
    let deletes: Vec<&Value> = closed["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["method"] == "DELETE")
        .collect();
    assert!(
        !deletes.is_empty() && deletes.iter().all(|d| d["status"].as_u64().unwrap() < 300),
        "the client's DELETE: {closed}"
    );
}

// ---------------------------------------------------------------------------------------------
// Direct requests to one replica

/// A `bucket_objects_list` in `session` sent to adapter `i` itself (not through the balancer).
async fn call_on(fleet: &Fleet, i: usize, session: &str, token: &str) -> (StatusCode, Value) {
    let answer = McpHttp::new(&fleet.adapters[i].mcp_url())
        .call_tool(
            Some(session),
            Some(token),
            "bucket_objects_list",
            json!({ "bucket": fleet.bucket() }),
        )
        .await
        .expect("the adapter answers");
    (answer.status, answer.message.clone().unwrap_or(Value::Null))
}

/// Every replica answers 404 with the session-gone error for `session`.
async fn assert_gone_everywhere(fleet: &Fleet, session: &str, token: &str) {
    for i in 0..ADAPTERS {
        let (status, body) = call_on(fleet, i, session, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "adapter {i}: {body}");
        assert_eq!(body["error"]["code"], SESSION_GONE, "adapter {i}: {body}");
    }
}

/// Every replica serves a tool call in `session`.
async fn assert_served_everywhere(fleet: &Fleet, session: &str, token: &str) {
    for i in 0..ADAPTERS {
        let (status, body) = call_on(fleet, i, session, token).await;
        assert_eq!(status, StatusCode::OK, "adapter {i}: {body}");
        assert_eq!(body["result"]["isError"], false, "adapter {i}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[tokio::test]
async fn python_legacy_session_of_50_calls_through_a_balancer_without_stickiness_has_no_error() {
    let fleet = Fleet::start(ADAPTERS, |b| b).await;
    let token = fleet.rw_token("alice-replicas");
    let events = run_python(list_plan(&fleet, &token), |_| {}).await;
    let session = assert_all_calls_ok(&events);
    let hits = fleet.balancer.hits();
    println!("requests per adapter: {hits:?}");
    assert!(
        hits.iter().all(|&h| h >= CALLS / ADAPTERS),
        "the balancer did not spread the session: {hits:?}"
    );
    let restored = fleet
        .adapters
        .iter()
        .filter(|a| {
            a.log_text()
                .contains("serving a session opened on another replica")
        })
        .count();
    assert!(
        restored >= ADAPTERS - 1,
        "replicas that did not open the session never served it: {restored}"
    );
    // The client's DELETE went through the balancer to one replica; all three refuse it now.
    assert_client_deleted(&events);
    assert_gone_everywhere(&fleet, &session, &token).await;
}

#[tokio::test]
async fn typescript_sdk_session_of_50_calls_through_a_balancer_without_stickiness_has_no_error() {
    let build = e2e::node::Build::new("replicas");
    let fleet = Fleet::start(ADAPTERS, |b| b).await;
    let out = e2e::node::run_script(
        &build.file("sdk_calls.mjs"),
        &json!({
            "url": fleet.balancer.mcp_url(),
            "bucket": fleet.bucket(),
            "token": fleet.rw_token("carol-replicas"),
            "calls": CALLS,
        }),
        CLIENT_TIMEOUT,
    )
    .await;
    assert_eq!(out["session_id"], true, "no session: {out}");
    let outcomes = out["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), CALLS, "{out}");
    let failed: Vec<&Value> = outcomes.iter().filter(|o| *o != "ok").collect();
    assert!(
        failed.is_empty(),
        "{} calls failed: {failed:?}",
        failed.len()
    );
    let answers = out["answers"].as_array().unwrap();
    for answer in answers {
        let status = answer["status"].as_u64().unwrap();
        // The standalone GET stream may be refused (405) by a replica that cannot resume it.
        assert!(
            (200..300).contains(&status) || (answer["method"] == "GET" && status == 405),
            "{answer}"
        );
    }
    assert!(
        answers
            .iter()
            .any(|a| a["method"] == "DELETE" && a["status"].as_u64().unwrap() < 300),
        "terminateSession's DELETE: {answers:?}"
    );
    let hits = fleet.balancer.hits();
    println!("requests per adapter: {hits:?}");
    assert!(hits.iter().all(|&h| h >= CALLS / ADAPTERS), "{hits:?}");
}

#[tokio::test]
async fn a_session_is_served_by_every_replica_and_a_delete_on_one_ends_it_on_all() {
    let fleet = Fleet::start(ADAPTERS, |b| b).await;
    let token = fleet.rw_token("dave-replicas");
    let session = McpHttp::new(&fleet.adapters[0].mcp_url())
        .open_session(Some(&token))
        .await;
    assert_served_everywhere(&fleet, &session, &token).await;

    // DELETE on replica 2 only.
    let answer = reqwest::Client::new()
        .delete(fleet.adapters[2].mcp_url())
        .header("authorization", format!("Bearer {token}"))
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", SESSION_VERSION)
        .send()
        .await
        .expect("DELETE reaches the adapter");
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_gone_everywhere(&fleet, &session, &token).await;
}

#[tokio::test]
async fn a_session_revoked_at_the_broker_is_refused_by_every_replica() {
    let fleet = Fleet::start(ADAPTERS, |b| b).await;
    let token = fleet.rw_token("erin-replicas");
    let session = McpHttp::new(&fleet.balancer.mcp_url())
        .open_session(Some(&token))
        .await;
    assert_served_everywhere(&fleet, &session, &token).await;
    let mut admin = fleet.brokers.admin(1).await;
    let revoked = e2e::rpc::revoke_by_id(&mut admin, &session)
        .await
        .expect("RevokeSession");
    assert!(revoked.revoked);
    assert_gone_everywhere(&fleet, &session, &token).await;
}

#[tokio::test]
async fn resuming_a_stream_on_a_replica_without_its_events_is_answered_at_once() {
    let fleet = Fleet::start(ADAPTERS, |b| b).await;
    let token = fleet.rw_token("frank-replicas");
    let session = McpHttp::new(&fleet.adapters[0].mcp_url())
        .open_session(Some(&token))
        .await;
    let answer = reqwest::Client::new()
        .get(fleet.adapters[1].mcp_url())
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {token}"))
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", SESSION_VERSION)
        .header("last-event-id", "0/1")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the adapter answers");
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = answer.json().await.expect("a JSON-RPC error body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not hold the events"),
        "{body}"
    );
    // The session itself lives on, there and everywhere.
    assert_served_everywhere(&fleet, &session, &token).await;
    // Without a token the same request is 401 like any other.
    let answer = reqwest::Client::new()
        .get(fleet.adapters[2].mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", SESSION_VERSION)
        .header("last-event-id", "0/1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_adapter_stopped_in_the_middle_of_a_run_costs_no_call() {
    let fleet = Fleet::start(ADAPTERS, |b| b).await;
    let token = fleet.rw_token("grace-replicas");
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let plan = list_plan(&fleet, &token);
    let client = tokio::spawn(async move {
        run_python(plan, move |step| {
            let _ = tx.send(step);
        })
        .await
    });
    // Mid-run: take replica 1 out of rotation (as an ALB deregisters a task ECS is stopping)
    // and SIGTERM it; calls it has in flight finish, the others go to the remaining two.
    rx.wait_for(|step| *step >= CALLS / 3)
        .await
        .expect("the client made progress");
    fleet.balancer.drain(1);
    let mut fleet = fleet;
    fleet.adapters[1].sigterm();
    let exit = fleet.adapters[1]
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the adapter exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    let events = client.await.expect("the client task");
    let session = assert_all_calls_ok(&events);
    let log = fleet.adapters[1].log_text();
    assert!(log.contains("draining requests in flight"), "{log}");
    assert_client_deleted(&events);
    for i in [0, 2] {
        let (status, _) = call_on(&fleet, i, &session, &token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "adapter {i}");
    }
}

#[tokio::test]
async fn an_idle_session_expires_on_every_replica() {
    let fleet = Fleet::start(ADAPTERS, |b| b.env("ADAPTER_SESSION_IDLE", "2s")).await;
    let token = fleet.rw_token("heidi-replicas");
    let session = McpHttp::new(&fleet.adapters[0].mcp_url())
        .open_session(Some(&token))
        .await;
    let (status, body) = call_on(&fleet, 1, &session, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Awaited in the shared store itself (asking a replica would count as use).
    let client = redis::Client::open(fleet.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("cb:v1:mcp:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the record never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_gone_everywhere(&fleet, &session, &token).await;
}

#[tokio::test]
async fn a_session_without_a_token_in_tools_mode_crosses_replicas_until_a_token_binds_it() {
    let fleet = Fleet::start(ADAPTERS, |b| b.env("ADAPTER_REQUIRE_AUTH", "tools")).await;
    let mcp = McpHttp::new(&fleet.balancer.mcp_url());
    // initialize and notifications/initialized without a token land on two replicas.
    let session = mcp.open_session(None).await;
    for i in 0..ADAPTERS {
        let answer = McpHttp::new(&fleet.adapters[i].mcp_url())
            .post(
                &json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/list" }),
                &Call {
                    token: None,
                    session: Some(&session),
                    version: Some(SESSION_VERSION),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "adapter {i}: {}",
            answer.text
        );
    }
    // A token binds it on replica 0; replica 2 then refuses token-less requests on it.
    let token = fleet.rw_token("ivan-replicas");
    let (status, body) = call_on(&fleet, 0, &session, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = McpHttp::new(&fleet.adapters[2].mcp_url())
        .post(
            &json!({ "jsonrpc": "2.0", "id": 8, "method": "tools/list" }),
            &Call {
                token: None,
                session: Some(&session),
                version: Some(SESSION_VERSION),
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    // Another user's token is refused on every replica.
    let mallory = fleet.rw_token("mallory-replicas");
    for i in 0..ADAPTERS {
        let (status, body) = call_on(&fleet, i, &session, &mallory).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "adapter {i}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// The broker's side of shared sessions, called directly (as anything on the network could)

/// `McpSessionWithoutToken` needs no token, so a broker serves it only when told to
/// (BROKER_MCP_TOKENLESS_SESSIONS=true, for adapters in `ADAPTER_REQUIRE_AUTH=tools`): by default
/// whoever reaches the broker cannot write session records, and an adapter in `tools` mode in
/// front of such a broker refuses a token-less initialize rather than open a session no replica
/// could see. A token-bearing session works as always.
#[tokio::test]
async fn a_default_broker_records_no_session_without_a_token() {
    use credbroker_proto::v1::{
        McpSessionUse, McpSessionWithoutTokenRequest, mcp_session_use::Action,
    };
    use tonic::Code;
    let stack =
        e2e::stack::BrokerStack::start_with(|b| b.without_env("BROKER_MCP_TOKENLESS_SESSIONS"))
            .await;
    let mut client = stack.broker.client().await;
    let refused = client
        .mcp_session_without_token(McpSessionWithoutTokenRequest {
            session_id: e2e::stack::new_session_id(),
            r#use: Some(McpSessionUse {
                action: Action::Open as i32,
                initialize_params_json: "{}".into(),
                idle_ms: 60_000,
            }),
        })
        .await;
    let status = e2e::rpc::expect_code(refused, Code::FailedPrecondition, "token-less OPEN");
    assert!(
        status.message().contains("BROKER_MCP_TOKENLESS_SESSIONS"),
        "the refusal names the setting: {}",
        status.message()
    );

    let adapter = e2e::adapter::AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .env("ADAPTER_REQUIRE_AUTH", "tools")
        .start()
        .await;
    let mcp = McpHttp::new(&adapter.mcp_url());
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": SESSION_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "e2e-default-broker", "version": "1" }
        }
    });
    let anonymous = mcp
        .post(&init, &Call::default())
        .await
        .expect("initialize reaches the adapter");
    assert_eq!(
        anonymous.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a token-less initialize the broker cannot record is refused: {}",
        anonymous.text
    );
    assert!(
        anonymous.header("mcp-session-id").is_none(),
        "no session id is handed out: {anonymous:?}"
    );
    let token = stack.rw_token("kim-default-broker");
    let session = mcp.open_session(Some(&token)).await;
    assert!(!session.is_empty());
}

#[tokio::test]
async fn the_broker_refuses_misuse_of_shared_session_records() {
    use credbroker_proto::v1::{
        GetCredentialsRequest, McpSessionUse, McpSessionWithoutTokenRequest,
        mcp_session_use::Action,
    };
    use tonic::Code;
    let redis = e2e::redis::RedisServer::start().await;
    let brokers = e2e::stack::Replicas::start(&redis.url(), 1).await;
    let mut client = brokers.brokers[0].client().await;
    let token = brokers.rw_token("judy-replicas");
    // CONTINUE without params: a replica that does not hold the session (with them, a holder
    // writes again a record the store lost; see the last check).
    let use_ = |action: Action, idle_ms: u64| McpSessionUse {
        action: action as i32,
        initialize_params_json: if action == Action::Continue {
            String::new()
        } else {
            "{}".into()
        },
        idle_ms,
    };
    let without_token = |id: &str, u: McpSessionUse| McpSessionWithoutTokenRequest {
        session_id: id.to_string(),
        r#use: Some(u),
    };
    let with_token = |id: &str, u: McpSessionUse| GetCredentialsRequest {
        session_id: id.to_string(),
        token: token.clone(),
        role_arn: String::new(),
        mcp: Some(u),
    };
    let unknown = e2e::stack::new_session_id();

    // An id no adapter opened: NOT_FOUND, and nothing is bound for it.
    let refused = client
        .get_credentials(with_token(&unknown, use_(Action::Continue, 60_000)))
        .await;
    e2e::rpc::expect_code(refused, Code::NotFound, "CONTINUE on an unknown id");
    let mut admin = brokers.admin(0).await;
    e2e::rpc::expect_code(
        e2e::rpc::describe_by_id(&mut admin, &unknown).await,
        Code::NotFound,
        "no binding was made for it",
    );
    let refused = client
        .mcp_session_without_token(without_token(&unknown, use_(Action::Continue, 60_000)))
        .await;
    e2e::rpc::expect_code(
        refused,
        Code::NotFound,
        "token-less CONTINUE on an unknown id",
    );

    // Ending needs the owner's token: never without one.
    let refused = client
        .mcp_session_without_token(without_token(&unknown, use_(Action::End, 60_000)))
        .await;
    e2e::rpc::expect_code(refused, Code::InvalidArgument, "END without a token");

    // Out-of-range idle timeouts are named.
    let refused = client
        .mcp_session_without_token(without_token(&unknown, use_(Action::Open, 0)))
        .await;
    let status = e2e::rpc::expect_code(refused, Code::InvalidArgument, "idle_ms 0");
    assert!(status.message().contains("idle_ms"), "{}", status.message());

    // A record is opened once: a replayed OPEN (to swap the initialize params) is refused.
    let id = e2e::stack::new_session_id();
    client
        .mcp_session_without_token(without_token(&id, use_(Action::Open, 60_000)))
        .await
        .expect("OPEN");
    let refused = client
        .mcp_session_without_token(without_token(&id, use_(Action::Open, 60_000)))
        .await;
    e2e::rpc::expect_code(refused, Code::AlreadyExists, "a second OPEN");
    let refused = client
        .get_credentials(with_token(&id, use_(Action::Open, 60_000)))
        .await;
    e2e::rpc::expect_code(refused, Code::AlreadyExists, "OPEN with a token");

    // Bound by a token: the token-less view says owned; another subject cannot end it.
    let answer = client
        .get_credentials(with_token(&id, use_(Action::Continue, 60_000)))
        .await
        .expect("CONTINUE with the token")
        .into_inner();
    assert!(answer.mcp_session.expect("the record").owned);
    let seen = client
        .mcp_session_without_token(without_token(&id, use_(Action::Continue, 60_000)))
        .await
        .expect("token-less CONTINUE")
        .into_inner();
    assert!(seen.owned);
    assert!(
        seen.initialize_params_json.is_empty(),
        "a token-less caller learns nothing of an owned session's initialize: {:?}",
        seen.initialize_params_json
    );
    let mallory = GetCredentialsRequest {
        token: brokers.rw_token("mallory-replicas"),
        ..with_token(&id, use_(Action::End, 60_000))
    };
    let refused = client.get_credentials(mallory).await;
    e2e::rpc::expect_code(
        refused,
        Code::PermissionDenied,
        "END with another user's token",
    );
    client
        .get_credentials(with_token(&id, use_(Action::End, 60_000)))
        .await
        .expect("END by the owner");
    let refused = client
        .get_credentials(with_token(&id, use_(Action::Continue, 60_000)))
        .await;
    e2e::rpc::expect_code(refused, Code::NotFound, "CONTINUE after END");
    // Not even from a replica that still holds it: the ended record stays a tombstone.
    let holder = McpSessionUse {
        initialize_params_json: "{}".into(),
        ..use_(Action::Continue, 60_000)
    };
    let refused = client
        .get_credentials(with_token(&id, holder.clone()))
        .await;
    e2e::rpc::expect_code(refused, Code::NotFound, "a holder's CONTINUE after END");
    let refused = client
        .mcp_session_without_token(without_token(&id, holder.clone()))
        .await;
    e2e::rpc::expect_code(
        refused,
        Code::NotFound,
        "a holder's token-less CONTINUE after END",
    );
    // A record the store lost (no tombstone) is written again by a holder.
    let lost = e2e::stack::new_session_id();
    let answer = client
        .get_credentials(with_token(&lost, holder))
        .await
        .expect("a holder's CONTINUE re-opens a lost record")
        .into_inner();
    assert!(answer.mcp_session.expect("the record").owned);

    // Two requests of one session reach the broker together after the store lost its record
    // (Redis restarted empty): one writes it again, the other must find it written, not be told
    // the session is gone (which makes the adapter end a live session). Many rounds, so that the
    // two really race.
    for round in 0..20 {
        let lost = e2e::stack::new_session_id();
        let holder = McpSessionUse {
            initialize_params_json: "{}".into(),
            ..use_(Action::Continue, 60_000)
        };
        let (mut a, mut b) = (client.clone(), client.clone());
        let (first, second) = tokio::join!(
            a.get_credentials(with_token(&lost, holder.clone())),
            b.get_credentials(with_token(&lost, holder.clone())),
        );
        for (which, answer) in [("first", first), ("second", second)] {
            let answer = answer
                .unwrap_or_else(|e| panic!("round {round}: the {which} of two concurrent holders' CONTINUE on a lost record: {e:?}"))
                .into_inner();
            assert!(answer.mcp_session.expect("the record").owned);
        }
        // The same race without a token (an `ADAPTER_REQUIRE_AUTH=tools` session not yet bound).
        let lost = e2e::stack::new_session_id();
        let (first, second) = tokio::join!(
            a.mcp_session_without_token(without_token(&lost, holder.clone())),
            b.mcp_session_without_token(without_token(&lost, holder.clone())),
        );
        for (which, answer) in [("first", first), ("second", second)] {
            answer.unwrap_or_else(|e| panic!("round {round}: the {which} of two concurrent token-less CONTINUE on a lost record: {e:?}"));
        }
    }
}
