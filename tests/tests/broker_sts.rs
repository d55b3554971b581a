//! How the broker uses STS, counted at a proxy in front of moto: once per credential key (every
//! scoping input in the key, nothing else), once for a burst of concurrent cold requests, fail
//! closed when STS is down or throttling, background refresh, and the web-identity mode.

use std::collections::HashSet;
use std::time::Duration;

use e2e::aws;
use e2e::moto::{ACCOUNT_ID, Moto};
use e2e::rpc::{bind, exchange, expect_code, get_credentials};
use e2e::stack::{
    BrokerStack, ISSUER, demo_roles_glob, new_session_id, standard_broker, standard_minter,
};
use e2e::sts_proxy::{ProxyMode, StsProxy};
use e2e::tokens::{Claims, now, random_string};
use futures::future::join_all;
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn ten_sessions_of_one_user_share_one_assume_role() {
    let stack = BrokerStack::start().await;
    let mut c = stack.broker.client().await;
    let mut keys = HashSet::new();
    for _ in 0..10 {
        let session_id = new_session_id();
        let token = stack.rw_token("alice");
        bind(&mut c, &session_id, &token, "").await.expect("bind");
        let creds = get_credentials(&mut c, &session_id, &token, "")
            .await
            .expect("get")
            .credentials
            .unwrap();
        keys.insert(creds.access_key_id);
    }
    assert_eq!(
        stack.proxy.assume_role_count(),
        1,
        "ten sessions, one principal: one STS call"
    );
    assert_eq!(
        keys.len(),
        1,
        "all ten sessions got the one cached credential"
    );
}

#[tokio::test]
async fn fifty_concurrent_cold_requests_for_one_principal_make_one_assume_role() {
    let stack = BrokerStack::start().await;
    let client = stack.broker.client().await;
    let calls = (0..50).map(|_| {
        let mut c = client.clone();
        let token = stack.rw_token("alice");
        async move { get_credentials(&mut c, &new_session_id(), &token, "").await }
    });
    let results = join_all(calls).await;
    let mut keys = HashSet::new();
    for result in results {
        keys.insert(
            result
                .expect("every concurrent request succeeds")
                .credentials
                .unwrap()
                .access_key_id,
        );
    }
    assert_eq!(
        stack.proxy.assume_role_count(),
        1,
        "single flight: 50 cold requests, one STS call"
    );
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn every_scoping_input_separates_credentials() {
    let stack = BrokerStack::start_with(|b| b.env("BROKER_TAG_CLAIMS", "team")).await;
    let seed = stack.seed().clone();
    let rw = seed.roles.read_write.clone();
    let mut c = stack.broker.client().await;
    let mut get = async |claims: Claims| {
        let r = exchange(&mut c, &stack.token(&claims), "")
            .await
            .expect("ExchangeToken");
        (r.credentials.unwrap().access_key_id, r.principal.unwrap())
    };

    let (wide, p) = get(Claims::new("alice").role_arn(&rw)).await;
    assert!(p.buckets.is_empty());
    let (narrow, p) = get(Claims::new("alice").role_arn(&rw).buckets(&["demo-bucket"])).await;
    assert_eq!(p.buckets, vec!["demo-bucket".to_string()]);
    let (tagged, p) = get(Claims::new("alice")
        .role_arn(&rw)
        .claim("team", "red".into()))
    .await;
    assert_eq!(p.tags.get("team").map(String::as_str), Some("red"));
    let (tagged_blue, _) = get(Claims::new("alice")
        .role_arn(&rw)
        .claim("team", "blue".into()))
    .await;
    let (bob, _) = get(Claims::new("bob").role_arn(&rw)).await;
    let (ro, _) = get(Claims::new("alice").role_arn(&seed.roles.read_only)).await;
    let all: HashSet<_> = [&wide, &narrow, &tagged, &tagged_blue, &bob, &ro]
        .into_iter()
        .collect();
    assert_eq!(
        all.len(),
        6,
        "six different scopes, six different credentials"
    );
    assert_eq!(stack.proxy.assume_role_count(), 6);

    // The same scope again, from a different token: cached.
    let (again, _) = get(Claims::new("alice").role_arn(&rw).buckets(&["demo-bucket"])).await;
    assert_eq!(again, narrow);
    assert_eq!(stack.proxy.assume_role_count(), 6);

    // Bucket names are validated before they go into a policy.
    let status = exchange(
        &mut c,
        &stack.token(&Claims::new("alice").role_arn(&rw).buckets(&["*"])),
        "",
    )
    .await;
    assert!(
        status.is_err(),
        "a wildcard bucket name must not become a policy"
    );
    let status = exchange(
        &mut c,
        &stack.token(&Claims::new("alice").role_arn(&rw).buckets(&["Bad\"Bucket"])),
        "",
    )
    .await;
    assert!(
        status.is_err(),
        "a malformed bucket name must not become a policy"
    );
    // A policy over STS's 2,048-character limit is an error, not a truncated policy.
    let many: Vec<String> = (0..80)
        .map(|i| format!("bucket-number-{i:04}-{}", "x".repeat(20)))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let status = exchange(
        &mut c,
        &stack.token(&Claims::new("alice").role_arn(&rw).buckets(&many)),
        "",
    )
    .await;
    assert!(
        status.is_err(),
        "an oversized session policy must be refused"
    );
    assert_eq!(
        stack.proxy.assume_role_count(),
        6,
        "refused scopes never reach STS"
    );
}

#[tokio::test]
async fn sts_down_is_unavailable_and_recovers_without_restart() {
    let stack = BrokerStack::start().await;
    let mut c = stack.broker.client().await;
    stack.proxy.set_down(true);
    let status = expect_code(
        exchange(&mut c, &stack.rw_token("alice"), "").await,
        Code::Unavailable,
        "STS down",
    );
    assert!(
        status.message().to_lowercase().contains("sts"),
        "the error names STS: {}",
        status.message()
    );
    let status = expect_code(
        get_credentials(&mut c, &new_session_id(), &stack.rw_token("alice"), "").await,
        Code::Unavailable,
        "STS down, GetCredentials",
    );
    assert!(
        status.message().to_lowercase().contains("sts"),
        "{}",
        status.message()
    );

    stack.proxy.set_down(false);
    served_once_the_pause_ends(&stack, &mut c, "STS back").await;
}

/// After STS failed, the credential pauses (BROKER_STS_COOLDOWN, at most 4 s by default): until
/// then requests get UNAVAILABLE saying when the next attempt is, without an STS call; then the
/// next request is served.
async fn served_once_the_pause_ends(stack: &BrokerStack, c: &mut e2e::rpc::Client, what: &str) {
    let back = std::time::Instant::now();
    let calls_before = stack.proxy.assume_role_count();
    let mut paused = 0;
    loop {
        match exchange(c, &stack.rw_token("alice"), "").await {
            Ok(_) => break,
            Err(status) => {
                assert!(
                    status.code() == Code::Unavailable
                        && status.message().contains("next STS attempt"),
                    "{what}: only a paused UNAVAILABLE is expected until the pause ends: {status:?}"
                );
                paused += 1;
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "{what}: still paused after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(
        stack.proxy.assume_role_count(),
        calls_before + 1,
        "{what}: no STS call during the pause ({paused} paused answers), one after it"
    );
    println!(
        "{what}: served {:.2?} later, after {paused} paused answers",
        back.elapsed()
    );
}

#[tokio::test]
async fn sts_throttling_is_retried_then_unavailable() {
    let stack = BrokerStack::start().await;
    let mut c = stack.broker.client().await;
    stack.proxy.set_mode(ProxyMode::Throttle);
    let status = expect_code(
        exchange(&mut c, &stack.rw_token("alice"), "").await,
        Code::Unavailable,
        "STS throttling",
    );
    assert!(
        stack.proxy.assume_role_count() >= 2,
        "throttling is retried (saw {})",
        stack.proxy.assume_role_count()
    );
    assert!(!status.message().is_empty());

    stack.proxy.set_mode(ProxyMode::Pass);
    served_once_the_pause_ends(&stack, &mut c, "throttling over").await;
}

#[tokio::test]
async fn an_sts_denial_is_not_retried_and_not_served() {
    // ops-admin is allowlisted here, but the broker's IAM user may not assume it: STS says no.
    let ops_glob = format!("arn:aws:iam::{ACCOUNT_ID}:role/ops-*");
    let stack =
        BrokerStack::start_with(|b| b.allowed_roles(&[&demo_roles_glob(), &ops_glob])).await;
    let mut c = stack.broker.client().await;
    let token = stack.token(&Claims::new("alice").role_arn(&stack.seed().roles.ops_admin));
    let result = exchange(&mut c, &token, "").await;
    let status = result.expect_err("STS refused: no credentials");
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(
        stack.proxy.assume_role_count(),
        1,
        "an AccessDenied is final: not retried"
    );
}

#[tokio::test]
async fn a_denied_role_pauses_and_is_answered_permission_denied_without_asking_sts_again() {
    // ops-admin is allowlisted, but its trust policy does not let the broker's IAM user assume
    // it: moto answers AccessDenied (in an EC2-style wrapper the SDK reads no code from).
    let ops_glob = format!("arn:aws:iam::{ACCOUNT_ID}:role/ops-*");
    let stack =
        BrokerStack::start_with(|b| b.allowed_roles(&[&demo_roles_glob(), &ops_glob])).await;
    let mut c = stack.broker.client().await;
    let token = stack.token(&Claims::new("mallory").role_arn(&stack.seed().roles.ops_admin));
    let first = expect_code(
        exchange(&mut c, &token, "").await,
        Code::PermissionDenied,
        "STS denied the role",
    );
    assert!(
        first.message().contains("AccessDenied"),
        "{}",
        first.message()
    );
    for i in 0..20 {
        let status = expect_code(
            exchange(&mut c, &token, "").await,
            Code::PermissionDenied,
            &format!("request {i} during the pause"),
        );
        assert!(
            status.message().contains("BROKER_STS_DENIED_PAUSE"),
            "{}",
            status.message()
        );
    }
    assert_eq!(
        stack.proxy.assume_role_count(),
        1,
        "21 requests for a denied role: one STS call, the rest answered from the pause"
    );
    // Other roles are not paused.
    exchange(&mut c, &stack.rw_token("alice"), "")
        .await
        .expect("another role is served");
}

#[tokio::test]
async fn credentials_are_never_served_after_the_tokens_exp() {
    let stack = BrokerStack::start_with(|b| b.env("BROKER_JWT_LEEWAY", "0s")).await;
    let seed = stack.seed().clone();
    let mut c = stack.broker.client().await;
    let session_id = new_session_id();
    let claims = Claims::new("alice")
        .role_arn(&seed.roles.read_write)
        .expires_in(3);
    let short = stack.token(&claims);
    get_credentials(&mut c, &session_id, &short, "")
        .await
        .expect("bind with a short token");
    let exp = claims.exp().unwrap();
    while now() <= exp + 1 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    expect_code(
        get_credentials(&mut c, &session_id, &short, "").await,
        Code::Unauthenticated,
        "the session's token has expired (same token: the fast path still checks exp)",
    );
    // A fresh token of the same subject re-authenticates the session.
    let response = get_credentials(&mut c, &session_id, &stack.rw_token("alice"), "")
        .await
        .expect("fresh token");
    assert!(response.rebound);
}

#[tokio::test]
async fn web_identity_mode_needs_no_aws_identity() {
    // moto under IAM enforcement answers an unsigned AssumeRoleWithWebIdentity with HTTP 500, so
    // this mode is exercised against a moto that checks nothing (real STS takes the call unsigned).
    let moto = Moto::start_without_iam_enforcement().await;
    let proxy = StsProxy::start(moto.port());
    let secret = random_string(48);
    let broker = standard_broker(moto.seed(), &proxy.endpoint(), &secret)
        .without_env("AWS_ACCESS_KEY_ID")
        .without_env("AWS_SECRET_ACCESS_KEY")
        .env("BROKER_STS_MODE", "web-identity")
        .start()
        .await;
    let minter = standard_minter(&secret);
    let mut c = broker.client().await;
    let rw = moto.seed().roles.read_write.clone();
    let response = exchange(
        &mut c,
        &minter.mint(&Claims::new("alice").role_arn(&rw)),
        "",
    )
    .await
    .expect("ExchangeToken in web-identity mode");
    assert_eq!(proxy.web_identity_count(), 1);
    assert_eq!(proxy.assume_role_count(), 0);
    let principal = response.principal.unwrap();
    assert_eq!(principal.issuer, ISSUER);
    assert!(
        principal.assumed_role_arn.starts_with(&format!(
            "arn:aws:sts::{ACCOUNT_ID}:assumed-role/demo-read-write/"
        )),
        "{}",
        principal.assumed_role_arn
    );
    let creds = response.credentials.unwrap();
    assert_eq!(
        aws::caller_arn(&moto.endpoint(), &creds).await,
        principal.assumed_role_arn
    );
    // The same token again: cached.
    let token = minter.mint(
        &Claims::new("alice")
            .role_arn(&rw)
            .claim("amr", json!(["mfa"])),
    );
    let first = exchange(&mut c, &token, "").await.expect("mfa token");
    let again = exchange(&mut c, &token, "")
        .await
        .expect("the same token again");
    assert_eq!(
        first.credentials.unwrap().access_key_id,
        again.credentials.unwrap().access_key_id
    );
    assert_eq!(proxy.web_identity_count(), 2);
    // Another token of the same subject and role: STS reads tags, source identity and trust-policy
    // conditions (aud, amr, …) from the token itself, so it gets its own credential, never the
    // first token's (issue 14).
    let other = minter.mint(
        &Claims::new("alice")
            .role_arn(&rw)
            .claim("amr", json!(["pwd"])),
    );
    let second = exchange(&mut c, &other, "").await.expect("another token");
    assert_eq!(proxy.web_identity_count(), 3, "one STS call per token");
    assert_ne!(
        second.credentials.unwrap().access_key_id,
        creds.access_key_id,
        "another token never receives this token's credential"
    );
}
