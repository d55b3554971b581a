//! Secrecy end to end: both binaries at `RUST_LOG=debug` (every crate, the AWS SDK, hyper, h2,
//! tonic and rmcp included), a broad run of everything users and operators do — every tool,
//! sessions bound, rebound, refused and revoked, every broker RPC, grpcurl reflection, an STS
//! outage, refusals of bad tokens — then every secret that was used is looked for in every log
//! line, in every operator answer and in everything Redis holds. The count must be zero.
//!
//! Secrets: the JWTs (and their signatures alone), the HS256 secret, the Redis sealing key, the
//! broker's own AWS secret key, every secret access key and session token the broker issued, the
//! presigned URL's signature, and every raw session id (the adapter's `Mcp-Session-Id`s and the
//! ids given to the broker directly).

use std::time::Duration;

use e2e::adapter::AdapterBuilder;
use e2e::grpcurl::Grpcurl;
use e2e::leaks::{Secret, leaked};
use e2e::mcp::{Call, McpHttp, SESSION_VERSION};
use e2e::moto::Moto;
use e2e::redis::{RedisServer, keys_containing};
use e2e::rpc::{
    bind, describe_by_handle, describe_by_id, exchange, get_credentials, list_all, revoke_by_id,
};
use e2e::stack::{new_session_id, standard_broker, standard_minter};
use e2e::sts_proxy::{ProxyMode, StsProxy};
use e2e::tokens::{Claims, random_string};
use serde_json::json;

#[tokio::test]
async fn no_secret_in_any_debug_log_line_operator_answer_or_redis_value() {
    // `E2E_SECRECY_LOG=trace` runs the same at trace level (not a promise of the README: trace
    // is for debugging the libraries themselves).
    let level = std::env::var("E2E_SECRECY_LOG").unwrap_or_else(|_| "debug".into());
    let redis = RedisServer::start().await;
    let moto = Moto::start().await;
    let proxy = StsProxy::start(moto.port());
    let hs_secret = random_string(48);
    let cache_key = e2e::stack::cache_key();
    let seed = moto.seed().clone();
    let broker = standard_broker(&seed, &proxy.endpoint(), &hs_secret)
        .cache_url(&redis.url())
        .env("BROKER_CACHE_KEY", &cache_key)
        .env("BROKER_TAG_CLAIMS", "team")
        .env("RUST_LOG", &level)
        .start()
        .await;
    let adapter = AdapterBuilder::new(&broker.endpoint())
        .s3_endpoint(&moto.endpoint())
        .env("RUST_LOG", &level)
        .start()
        .await;
    let minter = standard_minter(&hs_secret);
    let (rw, ro) = (seed.roles.read_write.clone(), seed.roles.read_only.clone());
    let demo = seed.buckets.demo.clone();
    let mut secrets: Vec<Secret> = vec![
        Secret::new("HS256 secret", hs_secret.clone()),
        Secret::new("Redis sealing key", cache_key.clone()),
        Secret::new(
            "broker's AWS secret key",
            seed.users.broker.secret_access_key.clone(),
        ),
    ];
    let mut add = |label: &str, value: &str| secrets.push(Secret::new(label, value));

    let alice1 = minter.mint(
        &Claims::new("alice")
            .role_arn(&rw)
            .claim("team", json!("sales")),
    );
    let alice2 = minter.mint(
        &Claims::new("alice")
            .role_arn(&rw)
            .claim("team", json!("sales")),
    );
    let bob = minter.for_role("bob", &ro);
    let mallory = minter.for_role("mallory", &rw);
    let expired = minter.mint(&Claims::new("alice").role_arn(&rw).expires_in(-3600));
    let forged = {
        let (head, _) = alice1.rsplit_once('.').unwrap();
        format!("{head}.{}", random_string(43))
    };
    for (label, t) in [
        ("alice token 1", &alice1),
        ("alice token 2", &alice2),
        ("bob token", &bob),
        ("mallory token", &mallory),
        ("expired token", &expired),
        ("forged token", &forged),
    ] {
        add(label, t);
    }

    // --- through the adapter --------------------------------------------------------------------
    let mcp = McpHttp::new(&adapter.mcp_url());
    let session = mcp.open_session(Some(&alice1)).await;
    add("adapter session id (alice)", &session);
    let mut tool_answers = 0;
    let mut presigned = String::new();
    let calls = [
        ("bucket_objects_list", json!({"bucket": demo})),
        (
            "bucket_objects_put",
            json!({"bucket": demo, "items": [
                {"key": "secrecy/a.txt", "text": "hello"},
                {"key": "secrecy/b.bin", "data": "AAEC", "metadata": {"owner": "alice"}}
            ]}),
        ),
        (
            "bucket_object_info",
            json!({"s3_uri": format!("s3://{demo}/secrecy/a.txt")}),
        ),
        (
            "bucket_object_text",
            json!({"s3_uri": format!("s3://{demo}/secrecy/a.txt")}),
        ),
        (
            "bucket_object_fetch",
            json!({"s3_uri": format!("s3://{demo}/secrecy/b.bin")}),
        ),
        (
            "bucket_object_link",
            json!({"s3_uri": format!("s3://{demo}/secrecy/a.txt"), "expiration": 600}),
        ),
        ("bucket_access_check", json!({"bucket": demo})),
    ];
    for (tool, args) in &calls {
        let answer = mcp
            .call_tool(Some(&session), Some(&alice1), tool, args.clone())
            .await
            .expect("adapter answers");
        assert!(answer.is_tool_success(), "{tool}: {}", answer.text);
        if *tool == "bucket_object_link" {
            presigned = answer.structured()["url"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        tool_answers += 1;
    }
    assert!(presigned.contains("X-Amz-Signature="), "{presigned}");
    let signature = presigned
        .split("X-Amz-Signature=")
        .nth(1)
        .unwrap_or_default()
        .split('&')
        .next()
        .unwrap_or_default()
        .to_string();
    add("presigned URL", &presigned);
    add("presigned URL signature", &signature);
    // A new token of the same user rebinds; another user's token is refused; no token is a 401.
    for (token, expect) in [
        (Some(&alice2), 200),
        (Some(&mallory), 403),
        (None, 401),
        (Some(&expired), 401),
        (Some(&forged), 401),
    ] {
        let answer = mcp
            .call_tool(
                Some(&session),
                token.map(String::as_str),
                "bucket_objects_list",
                json!({"bucket": demo}),
            )
            .await
            .expect("adapter answers");
        assert_eq!(answer.status.as_u16(), expect, "{}", answer.text);
        tool_answers += 1;
    }
    // Without a session (2026-07-28), bob read-only: a list, and a refused write.
    let listed = mcp
        .call_tool(
            None,
            Some(&bob),
            "bucket_objects_list",
            json!({"bucket": demo}),
        )
        .await
        .expect("adapter answers");
    assert!(listed.is_tool_success(), "{}", listed.text);
    let refused = mcp
        .call_tool(
            None,
            Some(&bob),
            "bucket_objects_put",
            json!({"bucket": demo, "items": [{"key": "x", "text": "x"}]}),
        )
        .await
        .expect("adapter answers");
    assert_eq!(
        refused.tool_error_code(),
        Some("AccessDenied"),
        "{}",
        refused.text
    );
    tool_answers += 2;
    // A second session, ended by DELETE.
    let session2 = mcp.open_session(Some(&bob)).await;
    add("adapter session id (bob)", &session2);
    let ended = mcp
        .send(
            reqwest::Client::new()
                .delete(adapter.mcp_url())
                .header("authorization", format!("Bearer {bob}"))
                .header("mcp-session-id", &session2)
                .header("mcp-protocol-version", SESSION_VERSION),
        )
        .await
        .expect("DELETE answered");
    assert!(ended.status.is_success(), "{}", ended.text);
    let _ = mcp
        .post(
            &json!({"jsonrpc":"2.0","id":9,"method":"ping"}),
            &Call {
                token: Some(&bob),
                session: Some(&session2),
                version: Some(SESSION_VERSION),
            },
        )
        .await;

    // --- the broker directly, as the adapter and operators use it ---------------------------------
    let mut c = broker.client().await;
    let direct = new_session_id();
    add("direct session id", &direct);
    let info = bind(&mut c, &direct, &bob, "").await.expect("BindSession");
    let mut issued = Vec::new();
    for token in [&alice1, &alice2, &bob, &mallory] {
        let creds = exchange(&mut c, token, "")
            .await
            .expect("ExchangeToken")
            .credentials
            .unwrap();
        issued.push(creds);
    }
    issued.push(
        get_credentials(&mut c, &direct, &bob, "")
            .await
            .expect("GetCredentials")
            .credentials
            .unwrap(),
    );
    for (i, creds) in issued.iter().enumerate() {
        add(&format!("secret access key #{i}"), &creds.secret_access_key);
        add(&format!("session token #{i}"), &creds.session_token);
    }
    let ops_token = minter.mint(&Claims::new(e2e::broker::OPERATOR));
    add("operator token", &ops_token);
    let mut ops = broker.admin(Some(&ops_token)).await;
    let mut operator_text = String::new();
    operator_text.push_str(&format!("{info:?}\n"));
    operator_text.push_str(&format!(
        "{:?}\n",
        describe_by_id(&mut ops, &direct)
            .await
            .expect("describe by id")
    ));
    operator_text.push_str(&format!(
        "{:?}\n",
        describe_by_handle(&mut ops, &info.session_handle)
            .await
            .expect("describe by handle")
    ));
    let listed = list_all(&mut ops, 2, "").await;
    assert!(
        listed.len() >= 2,
        "ListSessions lists the sessions: {}",
        listed.len()
    );
    operator_text.push_str(&format!("{listed:?}\n"));
    revoke_by_id(&mut ops, &direct).await.expect("revoke");
    let gone = get_credentials(&mut c, &direct, &bob, "")
        .await
        .expect_err("revoked");
    operator_text.push_str(&format!("{gone:?}\n"));
    for token in [&expired, &forged] {
        let refused = exchange(&mut c, token, "").await.expect_err("refused");
        operator_text.push_str(&format!("{refused:?}\n"));
    }
    let grpcurl = Grpcurl::new(broker.addr());
    for output in [
        grpcurl.list(None).await,
        grpcurl.describe("credbroker.v1.CredentialBroker").await,
        grpcurl.describe("credbroker.v1.AwsCredentials").await,
        grpcurl.describe("credbroker.v1.SessionAdmin").await,
        grpcurl
            .call_as(
                &ops_token,
                "credbroker.v1.SessionAdmin/ListSessions",
                &json!({"page_size": 50}),
            )
            .await,
        grpcurl
            .call_as(
                &ops_token,
                "credbroker.v1.SessionAdmin/DescribeSession",
                &json!({"session_handle": info.session_handle}),
            )
            .await,
    ] {
        operator_text.push_str(&output.stdout);
        operator_text.push_str(&output.stderr);
    }

    // An STS outage, so failure paths log too.
    proxy.set_mode(ProxyMode::Throttle);
    let carol = minter.for_role("carol", &rw);
    add("carol token", &carol);
    let _ = exchange(&mut c, &carol, "")
        .await
        .expect_err("STS throttled");
    let _ = mcp
        .call_tool(
            None,
            Some(&carol),
            "bucket_objects_list",
            json!({"bucket": demo}),
        )
        .await;
    proxy.set_mode(ProxyMode::Pass);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // --- scan ------------------------------------------------------------------------------------
    let redis_entries = redis.dump_all().await;
    let mut hits: Vec<String> = Vec::new();
    let mut lines = 0usize;
    let mut sdk_lines = 0usize;
    for (name, log) in [
        ("broker log", broker.log_text()),
        ("adapter log", adapter.log_text()),
    ] {
        for (n, line) in log.lines().enumerate() {
            lines += 1;
            if line.contains("aws_smithy")
                || line.contains("aws_sdk")
                || line.contains("aws_config")
            {
                sdk_lines += 1;
            }
            for label in leaked(line, &secrets) {
                hits.push(format!("{name} line {}: {label}", n + 1));
            }
        }
    }
    for label in leaked(&operator_text, &secrets) {
        hits.push(format!("operator answers: {label}"));
    }
    let mut redis_values = 0usize;
    for entry in &redis_entries {
        redis_values += entry.values.len();
    }
    for secret in &secrets {
        let mut needles = vec![secret.value.clone()];
        if let Some((_, sig)) = secret.value.rsplit_once('.').filter(|(_, s)| s.len() >= 16) {
            needles.push(sig.to_string());
        }
        for needle in needles {
            let keys = keys_containing(&redis_entries, needle.as_bytes());
            if !keys.is_empty() {
                hits.push(format!("Redis: {} in {keys:?}", secret.label));
            }
        }
    }
    println!(
        "secrecy: {} secrets looked for in {lines} {level} log lines ({sdk_lines} from the AWS SDK), \
         {} bytes of operator answers (Describe, List, grpcurl reflection), {} Redis keys / {redis_values} values; \
         {tool_answers} tool calls, {} credentials issued; {} hits",
        secrets.len(),
        operator_text.len(),
        redis_entries.len(),
        issued.len(),
        hits.len()
    );
    assert!(
        lines > 100,
        "the logs are really at debug level ({lines} lines)"
    );
    assert!(!redis_entries.is_empty(), "the broker really used Redis");
    assert!(hits.is_empty(), "secrets found: {hits:#?}");
}
