//! The MCP adapter end to end, driven by the official Python MCP client (PyPI `mcp` 2.3) through
//! `tests/clients/python/mcp_plan.py`, against the real broker and moto with IAM enforcement.
//!
//! Every scenario of the adapter issue runs in both client modes: `legacy` (initialize handshake,
//! `Mcp-Session-Id`; the adapter calls `GetCredentials(session, token)`) and `auto` (the client
//! probes `server/discover` and speaks 2026-07-28 without a session; the adapter calls
//! `ExchangeToken(token)`).
//!
//! Whose credentials did the S3 work is proven from three independent records: the adapter logs
//! the access key id of every broker answer it uses; `sts:GetCallerIdentity` on the broker's
//! credentials for the same token names the assumed role; and moto's `AccessKeyLastUsed` shows
//! the ambient IAM user's key was never presented to it.

use std::time::Duration;

use credbroker_proto::v1::ExchangeTokenRequest;
use e2e::adapter::AdapterBuilder;
use e2e::aws::{self, StaticCreds};
use e2e::leaks::{Secret, assert_no_secrets};
use e2e::stack::{AdapterStack, BrokerStack};
use e2e::tokens::Claims;
use serde_json::{Value, json};

const MODES: [&str; 2] = ["legacy", "auto"];
const PLAN_TIMEOUT: Duration = Duration::from_secs(120);

/// JSON-RPC codes the adapter answers with (see adapter/src/jsonrpc.rs).
const UNAUTHORIZED: i64 = -32001;
const FORBIDDEN: i64 = -32003;
const SESSION_GONE: i64 = -32004;

// ---------------------------------------------------------------------------------------------
// Fixture

/// moto + STS proxy + broker + adapter (pointed at moto's S3).
type Fixture = AdapterStack;

/// The credentials the broker issues for `token` (the same the adapter got: the broker keys its
/// credential cache by issuer, subject, role and scope).
async fn broker_credentials(fx: &Fixture, token: &str) -> StaticCreds {
    let mut client = fx.stack.broker.client().await;
    let answer = client
        .exchange_token(ExchangeTokenRequest {
            token: token.to_string(),
            role_arn: String::new(),
        })
        .await
        .expect("ExchangeToken")
        .into_inner();
    StaticCreds::from(&answer.credentials.expect("credentials"))
}

/// Fails if the adapter's log holds any of these secrets.
fn assert_log_clean(fx: &Fixture, secrets: &[Secret]) {
    assert_no_secrets("adapter log", &fx.adapter.log_text(), secrets);
}

fn token_secrets(tokens: &[&str]) -> Vec<Secret> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| Secret::new(format!("token #{i}"), *t))
        .collect()
}

fn creds_secrets(creds: &StaticCreds) -> Vec<Secret> {
    vec![
        Secret::new("secret access key", creds.secret_access_key.clone()),
        Secret::new(
            "session token",
            creds.session_token.clone().unwrap_or_default(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The Python client

/// What `mcp_plan.py` printed.
#[derive(Debug)]
struct Run {
    connected: Value,
    steps: Vec<Value>,
}

impl Run {
    fn step(&self, index: usize) -> &Value {
        &self.steps[index]
    }
    fn session_id(&self) -> Option<String> {
        self.connected["session_id"].as_str().map(str::to_string)
    }
}

/// Runs a plan; `on_pause` is called (and awaited) for every `pause` step.
async fn run_plan_with<F, Fut>(plan: Value, mut on_pause: F) -> Run
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut run = e2e::mcp_plan::PlanRun::start(&plan).await;
    let mut connected = Value::Null;
    let mut steps = Vec::new();
    let read_all = async {
        while let Some(event) = run.next_event().await {
            if let Some(name) = event.get("paused").and_then(Value::as_str) {
                on_pause(name.to_string()).await;
                run.resume().await;
            } else if event.get("connected").is_some() || event.get("connect_error").is_some() {
                connected = event;
            } else if event.get("step").is_some() {
                steps.push(event);
            }
        }
    };
    tokio::time::timeout(PLAN_TIMEOUT, read_all)
        .await
        .expect("mcp_plan.py finished in time");
    run.finish().await;
    Run { connected, steps }
}

async fn run_plan(plan: Value) -> Run {
    run_plan_with(plan, |_| async {}).await
}

fn plan(url: &str, mode: &str, token: Option<&str>, steps: Vec<Value>) -> Value {
    json!({ "url": url, "mode": mode, "token": token, "steps": steps })
}

fn call(tool: &str, args: Value) -> Value {
    json!({ "op": "call", "tool": tool, "args": args })
}

fn set_token(token: Option<&str>) -> Value {
    json!({ "op": "token", "token": token })
}

/// The connection worked, at the protocol revision the mode should negotiate.
fn assert_connected(run: &Run, mode: &str) {
    let version = run.connected["connected"]["protocol_version"].as_str();
    assert!(
        version.is_some(),
        "{mode}: not connected: {}",
        run.connected
    );
    match mode {
        "legacy" => {
            assert_ne!(
                version,
                Some("2026-07-28"),
                "legacy mode must use a handshake revision"
            );
            assert!(
                run.session_id().is_some(),
                "legacy mode must get an Mcp-Session-Id"
            );
        }
        _ => {
            assert_eq!(
                version,
                Some("2026-07-28"),
                "auto mode must negotiate 2026-07-28"
            );
            assert!(run.session_id().is_none(), "2026-07-28 has no sessions");
        }
    }
}

/// The step succeeded as a tool call without isError; returns its structured content.
fn ok(run: &Run, index: usize) -> &Value {
    let step = run.step(index);
    assert!(step.get("error").is_none(), "step {index} failed: {step}");
    assert_eq!(
        step["is_error"], false,
        "step {index} is an error result: {step}"
    );
    &step["structured"]
}

/// The step is a tool result with isError and this `error.code`.
fn tool_error(run: &Run, index: usize, code: &str) {
    let step = run.step(index);
    assert!(
        step.get("error").is_none(),
        "step {index}: JSON-RPC error, expected a tool error: {step}"
    );
    assert_eq!(step["is_error"], true, "step {index}: {step}");
    assert_eq!(
        step["structured"]["error"]["code"], code,
        "step {index}: {step}"
    );
}

/// The step got a JSON-RPC error with `code`, from an HTTP answer with `status`; returns the
/// HTTP answer.
fn refused(run: &Run, index: usize, code: i64, status: u16) -> &Value {
    let step = run.step(index);
    assert_eq!(step["error"]["code"], code, "step {index}: {step}");
    step["http"]
        .as_array()
        .and_then(|answers| answers.iter().find(|a| a["status"] == status))
        .unwrap_or_else(|| panic!("step {index}: no HTTP {status}: {step}"))
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[tokio::test]
async fn initialize_without_a_token_is_401_by_default_and_in_tools_mode_the_tool_call_is() {
    // The compatibility mode for clients that connect before they have a token.
    let fx = Fixture::start_with(|b| b.env("ADAPTER_REQUIRE_AUTH", "tools")).await;
    // The default (`all`), on the same broker: not even initialize without a token.
    let strict = AdapterBuilder::new(&fx.stack.broker.endpoint())
        .name("mcp-adapter-default")
        .s3_endpoint(&fx.stack.aws_endpoint())
        .start()
        .await;
    for mode in MODES {
        let run = run_plan(plan(&strict.mcp_url(), mode, None, vec![])).await;
        assert!(
            run.connected.get("connect_error").is_some(),
            "{mode}: connected without a token: {}",
            run.connected
        );
        let first = &run.connected["http"][0];
        assert_eq!(first["status"], 401, "{mode}: {}", run.connected);
        assert_eq!(
            first["www_authenticate"],
            format!(
                r#"Bearer resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#,
                strict.url()
            ),
            "{mode}"
        );
    }
    for mode in MODES {
        let run = run_plan(plan(
            &fx.adapter.mcp_url(),
            mode,
            None,
            vec![
                json!({ "op": "list_tools" }),
                call("bucket_objects_list", json!({ "bucket": fx.bucket() })),
                call(
                    "bucket_objects_put",
                    json!({ "bucket": fx.bucket(), "items": [{ "key": "x", "text": "x" }] }),
                ),
            ],
        ))
        .await;
        assert_connected(&run, mode);
        let tools = run.step(0)["tools"]
            .as_array()
            .expect("tools listed without a token")
            .len();
        assert_eq!(tools, 7, "{mode}");
        for index in [1, 2] {
            let answer = refused(&run, index, UNAUTHORIZED, 401);
            assert_eq!(
                answer["www_authenticate"],
                format!(r#"Bearer resource_metadata="{}""#, fx.metadata_url()),
                "{mode}"
            );
            let message = run.step(index)["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("Authorization: Bearer <JWT>"),
                "{mode}: {message}"
            );
        }
    }
    let log = fx.adapter.log_text();
    assert!(
        log.contains("no auth header, allowing initialization"),
        "{log}"
    );

    // The metadata the challenge points to.
    let doc: Value = reqwest::get(fx.metadata_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], fx.adapter.mcp_url());
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
}

#[tokio::test]
async fn a_read_write_token_lists_and_puts_as_the_assumed_role() {
    let fx = Fixture::start().await;
    let bucket = fx.bucket();
    for mode in MODES {
        let token = fx.stack.rw_token(&format!("alice-{mode}"));
        let key = format!("from-mcp/{mode}.txt");
        let uri = format!("s3://{bucket}/{key}");
        let run = run_plan(plan(
            &fx.adapter.mcp_url(),
            mode,
            Some(&token),
            vec![
                call("bucket_objects_list", json!({ "bucket": format!("s3://{bucket}"), "max_keys": 5 })),
                call("bucket_objects_put", json!({ "bucket": bucket, "items": [
                    { "key": key, "text": format!("written in {mode} mode"), "metadata": { "mode": mode } },
                ] })),
                call("bucket_object_text", json!({ "s3_uri": uri })),
                call("bucket_object_info", json!({ "s3_uri": uri })),
                call("bucket_object_fetch", json!({ "s3_uri": uri, "max_bytes": 7 })),
                call("bucket_object_link", json!({ "s3_uri": uri, "expiration": 300 })),
                call("bucket_access_check", json!({ "bucket_name": bucket })),
                call("bucket_objects_list", json!({ "bucket": bucket, "prefix": "from-mcp/" })),
            ],
        ))
        .await;
        assert_connected(&run, mode);

        let list = ok(&run, 0);
        assert_eq!(list["bucket"], bucket.as_str());
        assert!(list["count"].as_u64().unwrap() >= 1, "{list}");
        assert!(
            list["objects"][0]["s3_uri"]
                .as_str()
                .unwrap()
                .starts_with(&format!("s3://{bucket}/"))
        );

        let put = ok(&run, 1);
        assert_eq!(
            (
                put["requested"].as_u64(),
                put["uploaded"].as_u64(),
                put["failed"].as_u64()
            ),
            (Some(1), Some(1), Some(0)),
            "{put}"
        );

        assert_eq!(ok(&run, 2)["text"], format!("written in {mode} mode"));
        let info = ok(&run, 3);
        assert_eq!(info["metadata"]["mode"], mode);
        assert_eq!(info["content_type"], "text/plain; charset=utf-8");
        let fetch = ok(&run, 4);
        assert_eq!(fetch["data"], "d3JpdHRlbg=="); // the first 7 bytes: "written"
        assert_eq!(fetch["truncated"], true);

        // The presigned URL is signed with the caller's broker credentials for 300 s. (It cannot
        // be fetched here: moto 5.2.5 under IAM enforcement answers every query-signed request
        // with HTTP 500, KeyError 'HTTP_AUTHORIZATION'.)
        let link = ok(&run, 5);
        let url = reqwest::Url::parse(link["url"].as_str().unwrap()).unwrap();
        let query: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        let signer = broker_credentials(&fx, &token).await;
        assert!(url.path().ends_with(&format!("/{bucket}/{key}")), "{url}");
        assert!(query["X-Amz-Credential"].starts_with(&format!("{}/", signer.access_key_id)));
        assert_eq!(query["X-Amz-Expires"], "300");
        assert_eq!(
            Some(&query["X-Amz-Security-Token"]),
            signer.session_token.as_ref()
        );
        assert_eq!(link["expires_in"], 300);

        let access = ok(&run, 6);
        assert_eq!(
            access["access_summary"],
            json!({ "can_read": true, "can_write": true, "can_list": true }),
            "{access}"
        );
        let listed = ok(&run, 7);
        let keys: Vec<&str> = listed["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains(&key.as_str()), "{keys:?}");
        assert!(
            !keys.iter().any(|k| k.starts_with(".mcp-adapter-probe/")),
            "write probe left behind: {keys:?}"
        );

        // Whose credentials wrote it: the adapter used the key the broker issues for this token,
        // and that key is the demo-read-write role's STS session.
        let creds = broker_credentials(&fx, &token).await;
        let log = fx.adapter.log_text();
        assert!(
            log.contains(&format!("access_key_id={}", creds.access_key_id)),
            "the adapter did not use the broker's credentials for this token"
        );
        let arn = aws::caller_arn(&fx.stack.aws_endpoint(), creds.clone()).await;
        assert!(arn.contains(":assumed-role/demo-read-write/"), "{arn}");
        let stored = aws::get_object(
            &aws::s3(&fx.stack.aws_endpoint(), creds.clone()),
            &bucket,
            &key,
        )
        .await;
        assert_eq!(
            stored.unwrap(),
            format!("written in {mode} mode").into_bytes()
        );

        let mut secrets = token_secrets(&[&token]);
        secrets.extend(creds_secrets(&creds));
        if let Some(id) = run.session_id() {
            secrets.push(Secret::new("raw session id", id));
        }
        assert_log_clean(&fx, &secrets);
    }
    let log = fx.adapter.log_text();
    assert!(
        log.contains("session bound to the token of its initialize"),
        "legacy binds the session when it opens"
    );
    assert!(
        log.contains("using cached credentials for session"),
        "later calls reuse the binding"
    );
}

#[tokio::test]
async fn a_read_only_token_lists_but_put_is_access_denied() {
    let fx = Fixture::start().await;
    let bucket = fx.bucket();
    for mode in MODES {
        let token = fx.stack.ro_token(&format!("rita-{mode}"));
        let run = run_plan(plan(
            &fx.adapter.mcp_url(),
            mode,
            Some(&token),
            vec![
                call("bucket_objects_list", json!({ "bucket": bucket })),
                call(
                    "bucket_objects_put",
                    json!({ "bucket": bucket, "items": [{ "key": "ro.txt", "text": "no" }] }),
                ),
                call(
                    "bucket_access_check",
                    json!({ "bucket": bucket, "operations": ["write", "list"] }),
                ),
                call(
                    "bucket_objects_list",
                    json!({ "bucket": fx.stack.seed().buckets.other }),
                ),
                call(
                    "bucket_object_text",
                    json!({ "s3_uri": format!("s3://{bucket}/does-not-exist") }),
                ),
            ],
        ))
        .await;
        assert_connected(&run, mode);
        assert!(ok(&run, 0)["count"].as_u64().unwrap() >= 1);
        tool_error(&run, 1, "AccessDenied");
        let put = &run.step(1)["structured"]["error"];
        assert_eq!(
            (put["uploaded"].as_u64(), put["failed"].as_u64()),
            (Some(0), Some(1)),
            "{put}"
        );
        assert_eq!(put["results"][0]["error"]["code"], "AccessDenied");
        let access = ok(&run, 2);
        assert_eq!(
            access["access_summary"],
            json!({ "can_read": null, "can_write": false, "can_list": true }),
            "{access}"
        );
        tool_error(&run, 3, "AccessDenied");
        tool_error(&run, 4, "NoSuchKey");
    }
}

#[tokio::test]
async fn invalid_arguments_are_tool_errors_naming_the_argument() {
    let fx = Fixture::start().await;
    let token = fx.stack.rw_token("ivan");
    let bucket = fx.bucket();
    let run = run_plan(plan(
        &fx.adapter.mcp_url(),
        "legacy",
        Some(&token),
        vec![
            call("bucket_objects_list", json!({ "bucket": bucket, "max_keys": 0 })),
            call("bucket_objects_list", json!({ "bucket": bucket, "max_keys": 1001 })),
            call("bucket_object_info", json!({ "s3_uri": "https://example.com/x" })),
            call("bucket_objects_put", json!({ "bucket": bucket, "items": [{ "key": "s3://other-bucket/k", "text": "x" }] })),
            call("bucket_object_link", json!({ "s3_uri": format!("s3://{bucket}/README.txt"), "expiration": 604801 })),
        ],
    ))
    .await;
    for (index, argument) in [
        (0, "max_keys"),
        (1, "max_keys"),
        (2, "s3_uri"),
        (3, "items[0].key"),
        (4, "expiration"),
    ] {
        tool_error(&run, index, "InvalidArgument");
        assert_eq!(
            run.step(index)["structured"]["error"]["argument"],
            argument,
            "step {index}"
        );
    }
}

#[tokio::test]
async fn a_new_token_of_the_same_user_rebinds_and_another_users_token_is_403() {
    let fx = Fixture::start().await;
    let bucket = fx.bucket();
    let role = fx.stack.seed().roles.read_write.clone();
    let first = fx.stack.rw_token("alice");
    let renewed = fx.stack.token(&Claims::new("alice").role_arn(&role));
    let mallory = fx.stack.rw_token("mallory");
    let list = || call("bucket_objects_list", json!({ "bucket": bucket }));
    let run = run_plan(plan(
        &fx.adapter.mcp_url(),
        "legacy",
        Some(&first),
        vec![
            list(),
            list(),
            set_token(Some(&renewed)),
            list(),
            set_token(Some(&mallory)),
            list(),
            set_token(Some(&renewed)),
            list(),
            set_token(None),
            list(),
        ],
    ))
    .await;
    assert_connected(&run, "legacy");
    ok(&run, 0);
    ok(&run, 1);
    ok(&run, 3);
    let denied = refused(&run, 5, FORBIDDEN, 403);
    let challenge = denied["www_authenticate"].as_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(challenge.contains(&fx.metadata_url()), "{challenge}");
    ok(&run, 7); // the session still belongs to alice
    refused(&run, 9, UNAUTHORIZED, 401); // a session is never a token

    let log = fx.adapter.log_text();
    assert_eq!(
        log.matches("session bound to the token of its initialize")
            .count(),
        1,
        "bound when it opened"
    );
    assert_eq!(
        log.matches("new token for session, re-authenticating")
            .count(),
        1,
        "rebound once"
    );
    assert!(log.contains("using cached credentials for session"));
    let mut secrets = token_secrets(&[&first, &renewed, &mallory]);
    secrets.push(Secret::new("raw session id", run.session_id().unwrap()));
    assert_log_clean(&fx, &secrets);
}

#[tokio::test]
async fn a_session_revoked_at_the_broker_is_refused_and_told_to_start_over() {
    let fx = Fixture::start().await;
    let bucket = fx.bucket();
    let token = fx.stack.rw_token("victor");
    let list = || call("bucket_objects_list", json!({ "bucket": bucket }));
    let broker = &fx.stack.broker;
    let run = run_plan_with(
        plan(
            &fx.adapter.mcp_url(),
            "legacy",
            Some(&token),
            vec![
                list(),
                json!({ "op": "pause", "say": "bound" }),
                list(),
                list(),
            ],
        ),
        |_| async {
            // An operator revokes victor's session by handle (never by the raw id).
            let mut ops = broker.admin(Some(&fx.stack.operator_token())).await;
            let sessions = e2e::rpc::list(&mut ops, 10, "", "victor")
                .await
                .expect("ListSessions")
                .sessions;
            assert_eq!(sessions.len(), 1, "victor has one bound session");
            let revoked = e2e::rpc::revoke_by_handle(&mut ops, &sessions[0].session_handle)
                .await
                .expect("RevokeSession");
            assert!(revoked.revoked);
        },
    )
    .await;
    ok(&run, 0);
    refused(&run, 2, SESSION_GONE, 404);
    let message = run.step(2)["error"]["message"].as_str().unwrap();
    assert!(message.contains("start a new session"), "{message}");
    // The adapter closed the MCP session as well: it stays refused.
    let step = run.step(3);
    assert!(
        step.get("error").is_some(),
        "revoked session served again: {step}"
    );
    assert!(
        step["http"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["status"] == 404),
        "{step}"
    );
}

/// The incident: a server that had an identity of its own fell back to it. This adapter has valid
/// AWS keys in its environment and in `~/.aws` and must never use them.
#[tokio::test]
async fn ambient_aws_credentials_are_never_used() {
    let stack = BrokerStack::start().await;
    let ambient = stack.seed().users.ambient.clone();
    // The `tools` compatibility mode, so that clients connect without a token (or with one the
    // dead broker cannot check) and get as far as the tool calls; the default refuses earlier.
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .ambient_credentials(&ambient.access_key_id, &ambient.secret_access_key)
        .env("ADAPTER_REQUIRE_AUTH", "tools")
        .start()
        .await;
    // A second adapter with the same ambient identity whose broker is unreachable. Its sessions
    // live in this process (with shared sessions a dead broker refuses even `initialize`, 503):
    // so the tool calls reach the tool handlers, the last place a fallback could hide.
    let nobody = e2e::ports::closed_port();
    let dead_broker = format!("http://{}", nobody.addr());
    let orphan = AdapterBuilder::new(&dead_broker)
        .name("mcp-adapter-no-broker")
        .s3_endpoint(&stack.aws_endpoint())
        .ambient_credentials(&ambient.access_key_id, &ambient.secret_access_key)
        .env("ADAPTER_REQUIRE_AUTH", "tools")
        .env("ADAPTER_SESSION_SHARING", "process")
        .env("ADAPTER_BROKER_TIMEOUT", "1s")
        .start()
        .await;
    let bucket = stack.seed().buckets.demo.clone();
    let token = stack.rw_token("carol");
    let tool_calls = || {
        vec![
            call("bucket_objects_list", json!({ "bucket": bucket })),
            call(
                "bucket_objects_put",
                json!({ "bucket": bucket, "items": [{ "key": "ambient.txt", "text": "x" }] }),
            ),
            call("bucket_access_check", json!({ "bucket": bucket })),
        ]
    };
    for mode in MODES {
        // No token: refused before any AWS request.
        let run = run_plan(plan(&adapter.mcp_url(), mode, None, tool_calls())).await;
        assert_connected(&run, mode);
        for index in 0..3 {
            refused(&run, index, UNAUTHORIZED, 401);
        }
        // A token, but no broker: a tool error naming the broker, no fallback.
        let run = run_plan(plan(&orphan.mcp_url(), mode, Some(&token), tool_calls())).await;
        for index in 0..3 {
            tool_error(&run, index, "CredentialBrokerUnavailable");
            let message = run.step(index)["text"][0].as_str().unwrap();
            assert!(
                message.contains(&format!("credential broker at {dead_broker} unavailable")),
                "{message}"
            );
        }
    }

    // moto saw no request signed with the ambient key...
    let used = stack.moto.key_last_used(&ambient.access_key_id).await;
    assert_eq!(
        used,
        json!({ "used": false, "service": null }),
        "the adapter used its ambient identity"
    );
    // ...and would have noticed one (the check can fail).
    let denied = aws::list_keys(&aws::s3(&stack.aws_endpoint(), &ambient), &bucket).await;
    assert_eq!(denied.err().as_deref(), Some("AccessDenied"));
    let used = stack.moto.key_last_used(&ambient.access_key_id).await;
    assert_eq!(
        used["used"], true,
        "moto did not record a request it received: {used}"
    );

    let secrets = vec![
        Secret::new("ambient secret", ambient.secret_access_key.clone()),
        Secret::new("token", token.clone()),
    ];
    assert_no_secrets("adapter log", &adapter.log_text(), &secrets);
    assert_no_secrets("adapter log", &orphan.log_text(), &secrets);
}

/// Issue 17: the Python client reads an S3 object as a resource, completes a key of the
/// `s3://{bucket}/{+key}` template, and gets one progress notification per item of a put of 20.
#[tokio::test]
async fn the_python_client_reads_a_resource_completes_a_key_and_gets_progress() {
    let fx = Fixture::start().await;
    let bucket = fx.bucket();
    for mode in MODES {
        let token = fx.stack.rw_token(&format!("carol-{mode}"));
        let prefix = format!("resources-{mode}/");
        let key = format!("{prefix}note.txt");
        let text = format!("a note read as a resource in {mode} mode");
        let items: Vec<Value> = (0..20)
            .map(|i| json!({ "key": format!("{prefix}item-{i}.txt"), "text": format!("item {i}") }))
            .collect();
        let run = run_plan(plan(
            &fx.adapter.mcp_url(),
            mode,
            Some(&token),
            vec![
                call(
                    "bucket_objects_put",
                    json!({ "bucket": bucket, "items": [{ "key": key, "text": text }] }),
                ),
                json!({ "op": "read_resource", "uri": format!("s3://{bucket}/{key}") }),
                json!({ "op": "complete", "argument": "key", "value": prefix,
                        "context": { "bucket": bucket } }),
                json!({ "op": "call", "tool": "bucket_objects_put", "progress": true,
                        "args": { "bucket": bucket, "items": items } }),
            ],
        ))
        .await;
        assert_connected(&run, mode);
        ok(&run, 0);
        let read = run.step(1);
        assert_eq!(read["contents"][0]["text"], text.as_str(), "{mode}: {read}");
        let completion = run.step(2);
        let values = completion["values"]
            .as_array()
            .unwrap_or_else(|| panic!("{mode}: {completion}"));
        assert!(values.contains(&json!(key)), "{mode}: {completion}");
        let put = run.step(3);
        assert_eq!(put["structured"]["uploaded"], 20, "{mode}: {put}");
        let progress = put["progress"]
            .as_array()
            .unwrap_or_else(|| panic!("{mode}: {put}"));
        assert_eq!(progress.len(), 20, "{mode}: {put}");
        assert_eq!(
            progress[19]["progress"].as_f64(),
            Some(20.0),
            "{mode}: {put}"
        );
        assert_eq!(progress[19]["total"].as_f64(), Some(20.0), "{mode}: {put}");
    }
}
