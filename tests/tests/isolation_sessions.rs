//! Isolation between users and sessions, end to end: two broker replicas sharing Redis, an adapter
//! in front of one of them.
//!
//! - another subject's token can neither use, rebind nor end someone's session, through the
//!   adapter or at either replica, and the session is unchanged afterwards;
//! - session ids minted by the adapter carry at least 128 random bits (measured over many ids);
//! - a revoked session serves nothing, on any replica and through the adapter, from the moment
//!   the revocation is acknowledged — also while clients keep hammering it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::adapter::{Adapter, AdapterBuilder};
use e2e::broker::Broker;
use e2e::mcp::{McpHttp, SESSION_VERSION};
use e2e::moto::Moto;
use e2e::redis::RedisServer;
use e2e::rpc::{bind, describe_by_id, exchange, expect_code, get_credentials, revoke_by_handle};
use e2e::stack::Replicas;
use e2e::sts_proxy::StsProxy;
use e2e::tokens::TokenMinter;
use serde_json::json;
use tonic::Code;

struct Fixture {
    adapter: Adapter,
    brokers: Vec<Broker>,
    minter: TokenMinter,
    rw: String,
    _proxy: StsProxy,
    _moto: Moto,
    _redis: RedisServer,
}

impl Fixture {
    async fn start() -> Fixture {
        let redis = RedisServer::start().await;
        let Replicas {
            brokers,
            proxy,
            moto,
            minter,
            ..
        } = Replicas::start(&redis.url(), 2).await;
        let adapter = AdapterBuilder::new(&brokers[0].endpoint())
            .s3_endpoint(&moto.endpoint())
            .start()
            .await;
        Fixture {
            adapter,
            brokers,
            minter,
            rw: moto.seed().roles.read_write.clone(),
            _proxy: proxy,
            _moto: moto,
            _redis: redis,
        }
    }

    fn token(&self, sub: &str) -> String {
        self.minter.for_role(sub, &self.rw)
    }

    /// The operator plane of replica `i`, as the harness's operator.
    async fn admin(&self, i: usize) -> e2e::rpc::Admin {
        let token = self
            .minter
            .mint(&e2e::tokens::Claims::new(e2e::broker::OPERATOR));
        self.brokers[i].admin(Some(&token)).await
    }
}

fn list() -> serde_json::Value {
    json!({"bucket": "demo-bucket"})
}

#[tokio::test]
async fn another_subjects_token_cannot_use_rebind_or_end_a_session() {
    let fx = Fixture::start().await;
    let mcp = McpHttp::new(&fx.adapter.mcp_url());
    let (alice, mallory) = (fx.token("alice"), fx.token("mallory"));
    let session = mcp.open_session(Some(&alice)).await;
    let first = mcp
        .call_tool(Some(&session), Some(&alice), "bucket_objects_list", list())
        .await
        .unwrap();
    assert!(first.is_tool_success(), "{}", first.text);
    let mut one = fx.brokers[0].client().await;
    let mut two = fx.brokers[1].client().await;
    let before = describe_by_id(&mut fx.admin(1).await, &session)
        .await
        .expect("bound at the broker");
    let alice_key = get_credentials(&mut two, &session, &alice, "")
        .await
        .expect("alice, replica 2")
        .credentials
        .unwrap()
        .access_key_id;
    let mallory_key = exchange(&mut one, &mallory, "")
        .await
        .expect("mallory's own credentials")
        .credentials
        .unwrap()
        .access_key_id;
    assert_ne!(alice_key, mallory_key);
    let mut attempts = 0;

    // Through the adapter: read and write with mallory's token on alice's session.
    for (tool, args) in [
        ("bucket_objects_list", list()),
        (
            "bucket_objects_put",
            json!({"bucket": "demo-bucket", "items": [{"key": "m.txt", "text": "m"}]}),
        ),
    ] {
        let answer = mcp
            .call_tool(Some(&session), Some(&mallory), tool, args)
            .await
            .unwrap();
        attempts += 1;
        assert_eq!(answer.status.as_u16(), 403, "{tool}: {}", answer.text);
        assert!(
            answer
                .header("www-authenticate")
                .unwrap_or("")
                .contains("insufficient_scope"),
            "{tool}: {:?}",
            answer.headers
        );
        assert!(!answer.text.contains(&alice_key));
    }
    // Ending alice's session with mallory's token.
    let delete = mcp
        .send(
            reqwest::Client::new()
                .delete(fx.adapter.mcp_url())
                .header("authorization", format!("Bearer {mallory}"))
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", SESSION_VERSION),
        )
        .await
        .unwrap();
    attempts += 1;
    assert_eq!(
        delete.status.as_u16(),
        403,
        "DELETE with another subject's token: {}",
        delete.text
    );

    // At both replicas: read and rebind.
    for (name, c) in [("replica 1", &mut one), ("replica 2", &mut two)] {
        expect_code(
            get_credentials(c, &session, &mallory, "").await,
            Code::PermissionDenied,
            &format!("{name}: GetCredentials with mallory's token"),
        );
        expect_code(
            bind(c, &session, &mallory, "").await,
            Code::PermissionDenied,
            &format!("{name}: BindSession with mallory's token"),
        );
        attempts += 2;
    }

    // The session is alice's, unchanged, and still works for her.
    let after = describe_by_id(&mut fx.admin(0).await, &session)
        .await
        .expect("still there");
    assert_eq!(after.subject, "alice");
    assert_eq!(
        after.rebind_count, before.rebind_count,
        "mallory did not rebind it"
    );
    let still = mcp
        .call_tool(Some(&session), Some(&alice), "bucket_objects_list", list())
        .await
        .unwrap();
    assert!(
        still.is_tool_success(),
        "alice still served: {}",
        still.text
    );
    let again = get_credentials(&mut one, &session, &alice, "")
        .await
        .unwrap();
    assert_eq!(again.credentials.unwrap().access_key_id, alice_key);
    println!(
        "isolation: {attempts} attempts with another subject's token on a session, 0 served, session unchanged"
    );
}

#[tokio::test]
async fn a_session_cannot_be_ended_without_a_token() {
    let fx = Fixture::start().await;
    let mcp = McpHttp::new(&fx.adapter.mcp_url());
    let alice = fx.token("alice");
    let session = mcp.open_session(Some(&alice)).await;
    let delete = mcp
        .send(
            reqwest::Client::new()
                .delete(fx.adapter.mcp_url())
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", SESSION_VERSION),
        )
        .await
        .unwrap();
    let still = mcp
        .call_tool(Some(&session), Some(&alice), "bucket_objects_list", list())
        .await
        .unwrap();
    println!(
        "DELETE without a token: HTTP {}; the session's next tool call: HTTP {}",
        delete.status, still.status
    );
    assert!(
        still.is_tool_success(),
        "the session survived: HTTP {} {}",
        still.status,
        still.text
    );
    assert_eq!(
        delete.status.as_u16(),
        401,
        "DELETE without a token: {}",
        delete.text
    );
    // The owner, with the token, can end it.
    let owner = mcp
        .send(
            reqwest::Client::new()
                .delete(fx.adapter.mcp_url())
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", SESSION_VERSION)
                .header("authorization", format!("Bearer {alice}")),
        )
        .await
        .unwrap();
    assert!(
        owner.status.is_success(),
        "owner's DELETE: HTTP {}",
        owner.status
    );
    let gone = mcp
        .call_tool(Some(&session), Some(&alice), "bucket_objects_list", list())
        .await
        .unwrap();
    assert_eq!(gone.status.as_u16(), 404, "ended session: {}", gone.text);
}

/// Estimated random bits of a set of ids of one format: for each character position, log2 of the
/// number of distinct characters seen there (a fixed character contributes 0).
fn estimated_bits(ids: &[String]) -> f64 {
    let len = ids.iter().map(String::len).max().unwrap_or(0);
    let mut bits = 0.0;
    for i in 0..len {
        let seen: BTreeSet<u8> = ids
            .iter()
            .filter_map(|id| id.as_bytes().get(i).copied())
            .collect();
        if seen.len() > 1 {
            bits += (seen.len() as f64).log2();
        }
    }
    bits
}

#[tokio::test]
async fn adapter_session_ids_carry_at_least_128_random_bits() {
    // No broker here, so sessions open without a token: the `tools` compatibility mode, with room
    // for all of them, in this process only (shared sessions need the broker).
    let adapter = AdapterBuilder::unreachable_broker()
        .env("ADAPTER_REQUIRE_AUTH", "tools")
        .env("ADAPTER_SESSION_SHARING", "process")
        .env("ADAPTER_MAX_ANONYMOUS_SESSIONS", "600")
        .start()
        .await;
    let mcp = McpHttp::new(&adapter.mcp_url());
    let mut ids = Vec::new();
    for _ in 0..512 {
        ids.push(mcp.open_session(None).await);
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    let lengths: BTreeSet<usize> = ids.iter().map(String::len).collect();
    let bits = estimated_bits(&ids);
    println!(
        "session ids: {} minted, {} distinct, lengths {lengths:?}, example {:?}, estimated random bits {bits:.1}",
        ids.len(),
        distinct.len(),
        &ids[0][..8]
    );
    assert_eq!(distinct.len(), ids.len(), "no id repeats");
    assert!(
        bits >= 128.0,
        "session ids carry about {bits:.1} random bits, fewer than 128"
    );
}

#[test]
fn the_bit_estimate_is_right_for_known_formats() {
    let uuids: Vec<String> = (0..512)
        .map(|_| {
            let b: [u8; 16] = rand::random();
            let h = hex::encode(b);
            // version 4, variant 10xx
            let v = format!("{}4{}", &h[..12], &h[13..]);
            let variant = ["8", "9", "a", "b"][usize::from(b[8] % 4)];
            format!(
                "{}-{}-{}-{}{}-{}",
                &v[..8],
                &v[8..12],
                &v[12..16],
                variant,
                &v[17..20],
                &v[20..32]
            )
        })
        .collect();
    assert!(
        (estimated_bits(&uuids) - 122.0).abs() < 0.01,
        "{}",
        estimated_bits(&uuids)
    );
    let b64: Vec<String> = (0..512)
        .map(|_| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        })
        .collect();
    assert!(estimated_bits(&b64) > 250.0, "{}", estimated_bits(&b64));
}

#[tokio::test]
async fn a_revoked_session_serves_nothing_on_any_replica() {
    let fx = Fixture::start().await;
    let mcp = McpHttp::new(&fx.adapter.mcp_url());
    let alice = fx.token("alice");
    let session = mcp.open_session(Some(&alice)).await;
    let first = mcp
        .call_tool(Some(&session), Some(&alice), "bucket_objects_list", list())
        .await
        .unwrap();
    assert!(first.is_tool_success(), "{}", first.text);
    let mut two = fx.brokers[1].client().await;
    let info = get_credentials(&mut two, &session, &alice, "")
        .await
        .expect("the session is shared by replica 2")
        .session
        .unwrap();

    // Hammer the session on both replicas while it is revoked.
    let stop = Arc::new(AtomicBool::new(false));
    let revoked_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let served_after = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut pollers = Vec::new();
    for (r, broker) in fx.brokers.iter().enumerate() {
        for _ in 0..2 {
            let mut c = broker.client().await;
            let (stop, revoked_at, served_after, calls) = (
                stop.clone(),
                revoked_at.clone(),
                served_after.clone(),
                calls.clone(),
            );
            let (session, alice) = (session.clone(), alice.clone());
            pollers.push(tokio::spawn(async move {
                let mut codes: BTreeMap<String, usize> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = get_credentials(&mut c, &session, &alice, "").await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    let label = match &result {
                        Ok(_) => "served".to_string(),
                        Err(s) => format!("{:?}", s.code()),
                    };
                    *codes
                        .entry(format!("replica {}: {label}", r + 1))
                        .or_default() += 1;
                    let acknowledged = *revoked_at.lock().unwrap();
                    if result.is_ok() && acknowledged.is_some_and(|t| started > t) {
                        served_after.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                codes
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    revoke_by_handle(&mut fx.admin(1).await, &info.session_handle)
        .await
        .expect("revoked on replica 2");
    *revoked_at.lock().unwrap() = Some(Instant::now());
    // The adapter (in front of replica 1) right after.
    let through_adapter = mcp
        .call_tool(Some(&session), Some(&alice), "bucket_objects_list", list())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for p in pollers {
        for (k, v) in p.await.unwrap() {
            *codes.entry(k).or_default() += v;
        }
    }

    // Nothing binds it again, on either replica, even with a brand-new token of alice.
    let fresh = fx.token("alice");
    let mut one = fx.brokers[0].client().await;
    for (name, c) in [("replica 1", &mut one), ("replica 2", &mut two)] {
        expect_code(
            get_credentials(c, &session, &fresh, "").await,
            Code::NotFound,
            &format!("{name}: GetCredentials"),
        );
        expect_code(
            bind(c, &session, &fresh, "").await,
            Code::NotFound,
            &format!("{name}: BindSession"),
        );
    }
    let after_adapter = mcp
        .call_tool(Some(&session), Some(&fresh), "bucket_objects_list", list())
        .await
        .unwrap();
    // Alice herself is not locked out: a new session works.
    let new_session = mcp.open_session(Some(&fresh)).await;
    let works = mcp
        .call_tool(
            Some(&new_session),
            Some(&fresh),
            "bucket_objects_list",
            list(),
        )
        .await
        .unwrap();
    println!(
        "revocation: {} GetCredentials calls on the two replicas around it {codes:?}; served after the \
         revocation was acknowledged: {}; adapter right after: HTTP {}; adapter later: HTTP {}",
        calls.load(Ordering::Relaxed),
        served_after.load(Ordering::Relaxed),
        through_adapter.status,
        after_adapter.status
    );
    assert_eq!(
        served_after.load(Ordering::Relaxed),
        0,
        "credentials served after the revocation"
    );
    assert_eq!(
        through_adapter.status.as_u16(),
        404,
        "{}",
        through_adapter.text
    );
    assert_eq!(after_adapter.status.as_u16(), 404, "{}", after_adapter.text);
    assert!(
        works.is_tool_success(),
        "a new session works: {}",
        works.text
    );
}
