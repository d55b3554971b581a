//! Limits (issue 18, quotas), against real processes: broker replicas sharing a real
//! redis-server, moto behind the counting STS proxy, the adapter, MCP over HTTP.
//!
//! - one principal over `BROKER_RATE_PER_SUBJECT` is refused on every replica with
//!   RESOURCE_EXHAUSTED and a pushback, another principal is served, the store names nobody, and a
//!   store that cannot be reached fails the limit closed;
//! - through the adapter the over-limit client gets 429 with `Retry-After`;
//! - a burst of 200 new principals under `BROKER_STS_RATE` is held at the budget (counted: STS
//!   calls seen by the proxy, the broker's grant instants on Redis's clock, the metrics), and every
//!   principal ends with its own correct credential;
//! - a new principal the budget cannot serve before its deadline is told so at once (a tool error
//!   naming `BROKER_STS_RATE` through the adapter), while a cached principal is served;
//! - both limits are shared by replicas on Redis Cluster (the keys are hash-tagged).
//!
//! Determinism: the per-subject rate is one token an hour, so no token comes back while a test
//! runs, however slow the machine; the STS budget is checked on the instants the budget itself
//! decided by (Redis `TIME`), never on when answers arrived; a request refused by the budget is
//! asked again until served, so how many were refused on a loaded machine changes nothing asserted.

use std::collections::{HashMap, HashSet};

use credbroker_proto::v1::AwsCredentials;
use e2e::adapter::AdapterBuilder;
use e2e::mcp::McpHttp;
use e2e::redis::RedisServer;
use e2e::rpc::{bind, exchange, get_credentials};
use e2e::stack::{BrokerStack, Replicas, new_session_id};
use futures::StreamExt;
use futures::future::join_all;
use serde_json::json;
use tonic::{Code, Status};

/// One token an hour, six at once: nothing refills while a test runs.
const SUBJECT_RATE: &str = "1/h,burst=6";

/// The pushback of a RESOURCE_EXHAUSTED answer, in milliseconds.
fn pushback_ms(status: &Status) -> u64 {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap_or_else(|| panic!("RESOURCE_EXHAUSTED without grpc-retry-pushback-ms: {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn one_principal_over_its_rate_on_two_replicas_is_refused_with_a_pushback_and_others_are_served()
 {
    let mut redis = RedisServer::start().await;
    let fleet = Replicas::start_with(&redis.url(), 2, |b| {
        b.env("BROKER_RATE_PER_SUBJECT", SUBJECT_RATE)
    })
    .await;
    let mut c = [
        fleet.brokers[0].client().await,
        fleet.brokers[1].client().await,
    ];
    let alice = fleet.rw_token("alice@quota.test");
    let sid = new_session_id();

    // Six requests of every credential-serving kind, alternating replicas: the burst.
    bind(&mut c[0], &sid, &alice, "").await.expect("1: bind");
    get_credentials(&mut c[1], &sid, &alice, "")
        .await
        .expect("2: the session on replica 2");
    exchange(&mut c[0], &alice, "").await.expect("3: exchange");
    exchange(&mut c[1], &alice, "").await.expect("4: exchange");
    get_credentials(&mut c[0], &sid, &alice, "")
        .await
        .expect("5: the session again");
    bind(&mut c[1], &sid, &alice, "")
        .await
        .expect("6: bind again");

    // The seventh on either replica, by any RPC, is refused: the bucket is the fleet's.
    let refusals = [
        get_credentials(&mut c[0], &sid, &alice, "")
            .await
            .unwrap_err(),
        get_credentials(&mut c[1], &sid, &alice, "")
            .await
            .unwrap_err(),
        exchange(&mut c[0], &alice, "").await.unwrap_err(),
        exchange(&mut c[1], &alice, "").await.unwrap_err(),
        bind(&mut c[0], &sid, &alice, "").await.unwrap_err(),
    ];
    for status in &refusals {
        let ms = pushback_ms(status);
        // The next token is an hour after the first grant, less the time the test took.
        assert!(
            (3_000_000..=3_600_000).contains(&ms),
            "pushback {ms} ms: {status:?}"
        );
        let message = status.message();
        assert!(
            message.contains("BROKER_RATE_PER_SUBJECT=1/h,burst=6") && message.contains("retry in"),
            "the message names the limit and the wait: {message}"
        );
        assert!(!message.contains("alice"), "{message}");
    }
    assert_eq!(
        fleet.proxy.assume_role_count(),
        1,
        "one credential for alice, issued once; refused requests made no STS call"
    );

    // Another principal is served on both replicas, by every RPC.
    let bob = fleet.rw_token("bob@quota.test");
    let bob_sid = new_session_id();
    bind(&mut c[1], &bob_sid, &bob, "")
        .await
        .expect("bob binds");
    get_credentials(&mut c[0], &bob_sid, &bob, "")
        .await
        .expect("bob on replica 1");
    exchange(&mut c[1], &bob, "").await.expect("bob exchanges");

    // The buckets are in Redis under keyed hashes: nothing there names either principal.
    let entries = redis.dump_all().await;
    let rate_keys: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.key).into_owned())
        .filter(|k| k.starts_with("cb:v1:rate:"))
        .collect();
    assert_eq!(
        rate_keys.len(),
        2,
        "one bucket per principal: {rate_keys:?}"
    );
    for name in ["alice@quota.test", "bob@quota.test", "quota.test"] {
        let found = e2e::redis::keys_containing(&entries, name.as_bytes());
        assert!(found.is_empty(), "{name} readable in Redis: {found:?}");
    }

    // Redis gone: the limit cannot be checked, and the request fails closed naming the store.
    redis.stop();
    let down = exchange(&mut c[0], &bob, "").await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(
        down.message().contains(&redis.host_port()) && down.message().contains("token bucket"),
        "names the store and what failed: {}",
        down.message()
    );
}

#[tokio::test]
async fn through_the_adapter_the_over_limit_client_gets_429_with_retry_after() {
    let stack = BrokerStack::start_with(|b| b.env("BROKER_RATE_PER_SUBJECT", SUBJECT_RATE)).await;
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .start()
        .await;
    let mcp = McpHttp::new(&adapter.mcp_url());
    let bucket = stack.seed().buckets.demo.clone();
    let list = json!({ "bucket": bucket });

    // Alice opens a session and calls tools until the broker's limit refuses one: every MCP
    // request with a token is a credential request, so within the burst of six.
    let alice = stack.rw_token("alice@quota.test");
    let session = mcp.open_session(Some(&alice)).await;
    let mut served = 0;
    let refused = loop {
        let answer = mcp
            .call_tool(
                Some(&session),
                Some(&alice),
                "bucket_objects_list",
                list.clone(),
            )
            .await
            .expect("the adapter answers");
        if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            break answer;
        }
        assert!(
            answer.is_tool_success(),
            "before the limit: {}",
            answer.text
        );
        served += 1;
        assert!(served < 6, "no refusal within the burst of six");
    };
    assert!(served >= 1, "the limit left room for a tool call");
    let retry_after: u64 = refused
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {refused:?}"))
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(
        (3000..=3600).contains(&retry_after),
        "Retry-After {retry_after} s: an hour's refill less the test's time"
    );
    assert_eq!(refused.error()["code"], -32007, "{}", refused.text);
    let message = refused.error()["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("BROKER_RATE_PER_SUBJECT") && message.contains("retry after"),
        "{message}"
    );

    // Without a session (2026-07-28) it is the same principal and the same answer.
    let sessionless = mcp
        .call_tool(None, Some(&alice), "bucket_objects_list", list.clone())
        .await
        .expect("the adapter answers");
    assert_eq!(sessionless.status, reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert!(sessionless.header("retry-after").is_some());

    // Another principal is not affected.
    let bob = stack.rw_token("bob@quota.test");
    let answer = mcp
        .call_tool(None, Some(&bob), "bucket_objects_list", list)
        .await
        .expect("the adapter answers");
    assert!(answer.is_tool_success(), "bob: {}", answer.text);
}

/// The `budget_at_us` of every "STS budget: call granted" line in `log`.
fn grants(log: &str) -> Vec<i64> {
    log.lines()
        .filter(|l| l.contains("STS budget: call granted"))
        .map(|l| {
            l.split_whitespace()
                .find_map(|field| field.strip_prefix("budget_at_us="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a grant line without budget_at_us: {l}"))
        })
        .collect()
}

/// The sum of a metric's samples whose line starts with `prefix` (0 when none), over the
/// `/metrics` URLs of several brokers.
async fn metric(urls: &[String], prefix: &str) -> f64 {
    let mut total = 0.0;
    for url in urls {
        let body = reqwest::get(url)
            .await
            .expect("metrics endpoint")
            .text()
            .await
            .expect("metrics body");
        total += body
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

#[tokio::test]
async fn a_burst_of_200_new_principals_is_held_at_the_sts_budget_and_every_one_is_served() {
    const PRINCIPALS: usize = 200;
    // 50 calls a second, 10 at once (2 of them kept for refreshes).
    const INTERVAL_US: i64 = 20_000;
    const BURST: i64 = 10;
    let redis = RedisServer::start().await;
    let fleet = Replicas::start_with(&redis.url(), 2, |b| {
        b.env("BROKER_STS_RATE", "50/s,burst=10")
            .env("BROKER_STS_MAX_WAIT", "10s")
            .metrics()
    })
    .await;
    let metrics_urls: Vec<String> = fleet.brokers.iter().map(|b| b.metrics_url()).collect();
    let clients = [
        fleet.brokers[0].client().await,
        fleet.brokers[1].client().await,
    ];
    let principals: Vec<(String, String, String)> = (0..PRINCIPALS)
        .map(|i| {
            let sub = format!("p{i:03}@burst.test");
            let token = fleet.rw_token(&sub);
            (sub, token, new_session_id())
        })
        .collect();

    // All at once, half on each replica; whoever the budget refuses asks again until served.
    let mut served: HashMap<String, AwsCredentials> = HashMap::new();
    let mut refused_by_budget = 0usize;
    let mut round = 0;
    while served.len() < PRINCIPALS {
        round += 1;
        assert!(round <= 20, "not everyone served after 20 rounds");
        let pending: Vec<_> = principals
            .iter()
            .enumerate()
            .filter(|(_, (sub, _, _))| !served.contains_key(sub))
            .map(|(i, (sub, token, sid))| {
                let mut c = clients[i % 2].clone();
                let (sub, token, sid) = (sub.clone(), token.clone(), sid.clone());
                tokio::spawn(async move {
                    let answer = get_credentials(&mut c, &sid, &token, "").await;
                    (sub, answer)
                })
            })
            .collect();
        for outcome in join_all(pending).await {
            let (sub, answer) = outcome.expect("request task");
            match answer {
                Ok(r) => {
                    served.insert(sub, r.credentials.expect("credentials"));
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{sub}: {status:?}");
                    assert!(
                        status.message().contains(
                            "STS budget exhausted (BROKER_STS_RATE=50/s,burst=10,reserve=2)"
                        ),
                        "a refusal names the budget and its variable: {}",
                        status.message()
                    );
                    refused_by_budget += 1;
                }
            }
        }
    }

    // Every principal was issued exactly once: 200 STS calls, no more (no duplicate, no
    // retry that reached STS) and no less (nobody served someone else's credential).
    assert_eq!(fleet.proxy.assume_role_count(), PRINCIPALS);
    let keys: HashSet<&String> = served.values().map(|c| &c.access_key_id).collect();
    assert_eq!(
        keys.len(),
        PRINCIPALS,
        "200 principals, 200 distinct credentials"
    );

    // The rate held: every STS call was granted by the budget, at instants on Redis's clock (the
    // one both replicas decided by); in any window no more than rate × window + burst.
    let mut at: Vec<i64> = fleet
        .brokers
        .iter()
        .flat_map(|b| grants(&b.log_text()))
        .collect();
    assert_eq!(at.len(), PRINCIPALS, "one grant per STS call");
    at.sort_unstable();
    for i in 0..at.len() {
        for j in i..at.len() {
            let window = at[j] - at[i];
            let calls = (j - i + 1) as i64;
            assert!(
                calls <= window / INTERVAL_US + BURST,
                "{calls} STS calls within {window} µs: over 50/s with a burst of 10"
            );
        }
    }
    // So the burst took at least (200 − 10) / 50 s of budget time.
    let span_us = at[PRINCIPALS - 1] - at[0];
    assert!(span_us >= (PRINCIPALS as i64 - BURST) * INTERVAL_US);
    eprintln!(
        "200 principals: {round} round(s), {refused_by_budget} refusal(s) by the budget, STS calls granted over {:.2} s",
        span_us as f64 / 1e6
    );

    // The metrics say the same: 200 grants of the first-issue class, the refusals the test saw.
    assert_eq!(
        metric(
            &metrics_urls,
            r#"credbroker_sts_budget_wait_seconds_count{class="first_issue"}"#
        )
        .await,
        PRINCIPALS as f64
    );
    assert_eq!(
        metric(
            &metrics_urls,
            r#"credbroker_limit_refusals_total{limit="sts_budget"}"#
        )
        .await,
        refused_by_budget as f64
    );

    // No served credential is lost or wrong: asked again on the other replica, each principal
    // gets the same credential from the store (no STS call), and STS itself says whose it is.
    for (i, (sub, token, sid)) in principals.iter().enumerate() {
        let again = get_credentials(&mut clients[(i + 1) % 2].clone(), sid, token, "")
            .await
            .unwrap_or_else(|s| panic!("{sub} again: {s:?}"));
        assert_eq!(
            again.credentials.unwrap().access_key_id,
            served[sub].access_key_id
        );
    }
    assert_eq!(fleet.proxy.assume_role_count(), PRINCIPALS);
    let endpoint = fleet.moto.endpoint();
    let checks = futures::stream::iter(principals.iter().map(|(sub, _, _)| {
        let creds = e2e::aws::StaticCreds::from(&served[sub]);
        let endpoint = endpoint.clone();
        let sub = sub.clone();
        async move { (sub, e2e::aws::caller_arn(&endpoint, creds).await) }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    for (sub, arn) in checks {
        let session_name = arn.rsplit('/').next().unwrap_or_default();
        assert!(
            session_name.starts_with(&format!("{sub}-")),
            "{sub}'s credential is {arn}"
        );
    }
}

#[tokio::test]
async fn a_new_principal_the_budget_cannot_serve_in_time_is_told_so_at_once_and_cached_ones_are_served()
 {
    // One STS call an hour, two at once, one of them kept for refreshes: the first new principal
    // takes the only first-issue token; the next would wait an hour.
    let stack = BrokerStack::start_with(|b| b.env("BROKER_STS_RATE", "1/h,burst=2")).await;
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .start()
        .await;
    let mcp = McpHttp::new(&adapter.mcp_url());
    let list = json!({ "bucket": stack.seed().buckets.demo });
    let alice = stack.rw_token("alice@budget.test");
    let first = mcp
        .call_tool(None, Some(&alice), "bucket_objects_list", list.clone())
        .await
        .expect("the adapter answers");
    assert!(first.is_tool_success(), "alice: {}", first.text);

    // Bob is new: no STS call for him within his deadline, so the broker says so without
    // waiting, and the adapter answers the tool call with an error naming the budget.
    let bob = stack.rw_token("bob@budget.test");
    let refused = mcp
        .call_tool(None, Some(&bob), "bucket_objects_list", list.clone())
        .await
        .expect("the adapter answers");
    assert!(refused.is_tool_error(), "bob: {}", refused.text);
    assert_eq!(
        refused.tool_error_code(),
        Some("CredentialBrokerUnavailable")
    );
    let text = refused.visible_text();
    assert!(
        text.contains("STS budget exhausted (BROKER_STS_RATE=1/h,burst=2,reserve=1)"),
        "{text}"
    );

    // Alice's credential is in the store: served without waiting for the budget.
    let again = mcp
        .call_tool(None, Some(&alice), "bucket_objects_list", list)
        .await
        .expect("the adapter answers");
    assert!(again.is_tool_success(), "alice again: {}", again.text);
    assert_eq!(stack.proxy.assume_role_count(), 1, "one STS call: alice's");
}

#[tokio::test]
async fn on_redis_cluster_both_limits_are_shared_by_the_replicas() {
    let cluster = e2e::redis::RedisCluster::start().await;
    let url = format!("redis+cluster://{}", cluster.host_ports());
    let fleet = Replicas::start_with(&url, 2, |b| {
        b.env("BROKER_RATE_PER_SUBJECT", "1/h,burst=2")
            .env("BROKER_STS_RATE", "1/h,burst=3,reserve=1")
    })
    .await;
    let mut c = [
        fleet.brokers[0].client().await,
        fleet.brokers[1].client().await,
    ];
    // The principal's bucket: two requests on two replicas, then refused on either.
    let alice = fleet.rw_token("alice@cluster.test");
    exchange(&mut c[0], &alice, "").await.expect("alice 1");
    exchange(&mut c[1], &alice, "").await.expect("alice 2");
    for client in &mut c {
        let refused = exchange(client, &alice, "").await.unwrap_err();
        assert!(pushback_ms(&refused) > 3_000_000, "{refused:?}");
    }
    // The STS budget: first issues get two tokens of three (alice took one), whichever replica
    // asks; the next new principal is refused naming the budget.
    let bob = fleet.rw_token("bob@cluster.test");
    exchange(&mut c[1], &bob, "")
        .await
        .expect("bob: the second first issue");
    let carol = fleet.rw_token("carol@cluster.test");
    for client in &mut c {
        let refused = exchange(client, &carol, "").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("STS budget exhausted"),
            "{refused:?}"
        );
    }
    assert_eq!(
        fleet.proxy.assume_role_count(),
        2,
        "alice's and bob's STS calls only"
    );
}
