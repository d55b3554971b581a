//! Redis as the shared store (issue 3), with real redis-server processes this test starts:
//! replicas share sessions and revocations, coalesce STS calls, keep nothing readable in Redis,
//! fail closed while Redis is down and recover without a restart; and the same on a 3-master
//! Redis Cluster.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use e2e::broker::{BrokerBuilder, SERVICE};
use e2e::leaks::Secret;
use e2e::redis::{RedisCluster, RedisEntry, RedisServer, keys_containing};
use e2e::rpc::{bind, describe_by_id, exchange, expect_code, get_credentials, revoke_by_id};
use e2e::stack::{Replicas, new_session_id};
use e2e::tokens::random_string;
use futures::future::join_all;
use tokio::time::Instant;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Fails, naming labels only, when any secret occurs in any key or value.
fn assert_redis_clean(entries: &[RedisEntry], secrets: &[Secret]) {
    assert!(
        !entries.is_empty(),
        "the broker stored nothing in Redis: is it really using it?"
    );
    let mut leaks = Vec::new();
    for secret in secrets {
        let mut needles = vec![secret.value.as_bytes().to_vec()];
        if let Some((_, signature)) = secret.value.rsplit_once('.').filter(|(_, s)| s.len() >= 16) {
            needles.push(signature.as_bytes().to_vec());
        }
        for needle in needles {
            let keys = keys_containing(entries, &needle);
            if !keys.is_empty() {
                leaks.push(format!("{} in {keys:?}", secret.label));
            }
        }
    }
    assert!(leaks.is_empty(), "plaintext secrets in Redis: {leaks:?}");
}

#[tokio::test]
async fn replicas_share_sessions_and_a_revocation_reaches_the_other_replica_within_a_second() {
    let redis = RedisServer::start().await;
    let stack = Replicas::start(&redis.url(), 2).await;
    let mut one = stack.brokers[0].client().await;
    let mut two = stack.brokers[1].client().await;

    let session_id = new_session_id();
    let token = stack.rw_token("alice");
    let info = bind(&mut one, &session_id, &token, "")
        .await
        .expect("bind on replica 1");
    let on_two = get_credentials(&mut two, &session_id, &token, "")
        .await
        .expect("replica 2 serves the session");
    assert_eq!(
        on_two.session.unwrap().session_handle,
        info.session_handle,
        "one handle on every replica"
    );
    assert_eq!(
        describe_by_id(&mut stack.admin(1).await, &session_id)
            .await
            .unwrap()
            .session_handle,
        info.session_handle
    );
    assert_eq!(
        stack.proxy.assume_role_count(),
        1,
        "replica 2 used replica 1's credential"
    );

    revoke_by_id(&mut stack.admin(0).await, &session_id)
        .await
        .expect("revoke on replica 1");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match get_credentials(&mut two, &session_id, &token, "").await {
            Err(status) if status.code() == Code::NotFound => break,
            other => assert!(
                Instant::now() < deadline,
                "replica 2 still answers a session revoked on replica 1 a second later: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `calls` of one command in `INFO commandstats` (0 when it was never run).
async fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let info = match redis.cmd(&["INFO", "commandstats"]).await {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO commandstats answered {other:?}"),
    };
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_warm_request_reads_only_its_session_from_redis_and_revocation_still_reaches_it() {
    let redis = RedisServer::start().await;
    let stack = Replicas::start(&redis.url(), 2).await;
    let mut one = stack.brokers[0].client().await;
    let mut two = stack.brokers[1].client().await;
    let session_id = new_session_id();
    let token = stack.rw_token("alice");
    bind(&mut one, &session_id, &token, "")
        .await
        .expect("bind on replica 1");
    // Replica 2's first call reads the credential record from Redis and keeps it.
    let first = get_credentials(&mut two, &session_id, &token, "")
        .await
        .unwrap();
    let key = first.credentials.unwrap().access_key_id;

    const CALLS: u64 = 40;
    let gets_before = command_calls(&redis, "get").await;
    for _ in 0..CALLS {
        let answer = get_credentials(&mut two, &session_id, &token, "")
            .await
            .unwrap();
        assert_eq!(
            answer.credentials.unwrap().access_key_id,
            key,
            "the shared credential"
        );
    }
    let gets = command_calls(&redis, "get").await - gets_before;
    println!("{CALLS} warm GetCredentials on replica 2: {gets} Redis GETs");
    assert!(
        gets <= CALLS + 2,
        "{CALLS} warm requests made {gets} Redis GETs: the credential record is read every time, \
         not only the session"
    );
    assert!(
        gets >= CALLS,
        "{CALLS} warm requests made only {gets} Redis GETs: the session must be read every time"
    );
    assert_eq!(stack.proxy.assume_role_count(), 1);

    // The session is still read on every call: a revocation on replica 1 reaches replica 2 at once.
    revoke_by_id(&mut stack.admin(0).await, &session_id)
        .await
        .unwrap();
    expect_code(
        get_credentials(&mut two, &session_id, &token, "").await,
        Code::NotFound,
        "replica 2 right after the revocation on replica 1",
    );
}

#[tokio::test]
async fn two_replicas_times_200_cold_requests_make_one_assume_role() {
    let redis = RedisServer::start().await;
    let stack = Replicas::start(&redis.url(), 2).await;
    let clients = [
        stack.brokers[0].client().await,
        stack.brokers[1].client().await,
    ];
    let calls = (0..400).map(|i| {
        let mut c = clients[i % 2].clone();
        let token = stack.rw_token("alice");
        async move { get_credentials(&mut c, &new_session_id(), &token, "").await }
    });
    let mut keys = HashSet::new();
    for result in join_all(calls).await {
        keys.insert(
            result
                .expect("every request succeeds")
                .credentials
                .unwrap()
                .access_key_id,
        );
    }
    assert_eq!(
        stack.proxy.assume_role_count(),
        1,
        "400 cold requests on 2 replicas: one STS call"
    );
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn redis_holds_no_plaintext_secret_and_plaintext_needs_an_explicit_flag() {
    let redis = RedisServer::start().await;
    let stack = Replicas::start(&redis.url(), 1).await;
    let mut c = stack.brokers[0].client().await;
    let mut secrets = vec![Secret::new("HS256 secret", stack.secret.clone())];
    for (i, sub) in ["alice", "bob"].iter().enumerate() {
        let session_id = new_session_id();
        let token = stack.rw_token(sub);
        let creds = get_credentials(&mut c, &session_id, &token, "")
            .await
            .expect("bind")
            .credentials
            .unwrap();
        secrets.extend(Secret::of_session(i, &session_id, &token, &creds));
    }
    let exchanged = exchange(&mut c, &stack.rw_token("svc"), "")
        .await
        .expect("exchange")
        .credentials
        .unwrap();
    secrets.push(Secret::new(
        "exchange secret key",
        exchanged.secret_access_key,
    ));
    secrets.push(Secret::new(
        "exchange session token",
        exchanged.session_token,
    ));
    assert_redis_clean(&redis.dump_all().await, &secrets);

    // A Redis store without a key is plaintext: refused unless asked for explicitly.
    let other = RedisServer::start().await;
    let (status, output) = BrokerBuilder::new()
        .hs256_secret(&random_string(48))
        .allowed_roles(&["arn:aws:iam::123456789012:role/demo-*"])
        .cache_url(&other.url())
        .start_expecting_exit()
        .await;
    assert!(!status.success());
    assert!(
        output.contains("BROKER_CACHE_KEY"),
        "the refusal names BROKER_CACHE_KEY:\n{output}"
    );
    let _insecure = BrokerBuilder::new()
        .hs256_secret(&random_string(48))
        .allowed_roles(&["arn:aws:iam::123456789012:role/demo-*"])
        .cache_url(&other.url())
        .arg("--insecure-plaintext-cache")
        .start()
        .await;
}

#[tokio::test]
async fn redis_down_fails_closed_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start().await;
    let stack = Replicas::start(&redis.url(), 1).await;
    let broker = &stack.brokers[0];
    let seed = stack.moto.seed().clone();
    let mut c = broker.client().await;
    let alice = stack.minter.for_role("alice", &seed.roles.read_write);
    let bob = stack.minter.for_role("bob", &seed.roles.read_only);
    let (alice_sid, bob_sid) = (new_session_id(), new_session_id());

    // Every answer, before, during and after the outage, is checked against its principal.
    let mut served: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut codes_while_down = HashSet::new();
    let ask = async |c: &mut e2e::rpc::Client,
                     down: bool,
                     served: &mut HashMap<&str, HashSet<String>>,
                     codes: &mut HashSet<Code>| {
        for (who, sid, token, role) in [
            ("alice", &alice_sid, &alice, &seed.roles.read_write),
            ("bob", &bob_sid, &bob, &seed.roles.read_only),
        ] {
            match get_credentials(c, sid, token, "").await {
                Ok(r) => {
                    let session = r.session.unwrap();
                    assert_eq!(session.subject, who, "a credential for the wrong subject");
                    assert_eq!(&session.role_arn, role, "a credential for the wrong role");
                    served
                        .entry(who)
                        .or_default()
                        .insert(r.credentials.unwrap().access_key_id);
                }
                Err(status) => {
                    assert!(down, "failed while Redis was up: {status:?}");
                    codes.insert(status.code());
                }
            }
        }
    };
    ask(&mut c, false, &mut served, &mut codes_while_down).await;

    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while broker.health(SERVICE).await != Some(ServingStatus::NotServing) {
        ask(&mut c, true, &mut served, &mut codes_while_down).await;
        assert!(
            Instant::now() < deadline,
            "health still SERVING 15 s after Redis died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        ask(&mut c, true, &mut served, &mut codes_while_down).await;
    }
    let status = expect_code(
        get_credentials(&mut c, &new_session_id(), &alice, "").await,
        Code::Unavailable,
        "a new session while Redis is down",
    );
    assert!(
        status.message().to_lowercase().contains("redis")
            || status.message().to_lowercase().contains("store"),
        "{}",
        status.message()
    );

    redis.restart().await;
    let restarted = Instant::now();
    while broker.health(SERVICE).await != Some(ServingStatus::Serving) {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "not SERVING 5 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = loop {
        if get_credentials(&mut c, &alice_sid, &alice, "")
            .await
            .is_ok()
        {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "requests still fail 5 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "recovered {recovered:?} after Redis restarted; codes while down: {codes_while_down:?}"
    );
    ask(&mut c, false, &mut served, &mut codes_while_down).await;
    assert!(
        codes_while_down.iter().all(|c| *c == Code::Unavailable),
        "failures while Redis is down are UNAVAILABLE: {codes_while_down:?}"
    );

    // No key was ever served to both, and each key really is its principal's role.
    let alice_keys = &served["alice"];
    let bob_keys = &served["bob"];
    assert!(alice_keys.is_disjoint(bob_keys));
}

#[tokio::test]
async fn a_three_master_cluster_is_a_shared_store_too() {
    let cluster = RedisCluster::start().await;
    let url = format!("redis+cluster://{}", cluster.host_ports());
    let stack = Replicas::start(&url, 2).await;
    let mut one = stack.brokers[0].client().await;
    let mut two = stack.brokers[1].client().await;
    let mut secrets = Vec::new();
    for i in 0..5 {
        let session_id = new_session_id();
        let token = stack.rw_token(&format!("user-{i}"));
        bind(&mut one, &session_id, &token, "")
            .await
            .expect("bind through replica 1");
        let creds = get_credentials(&mut two, &session_id, &token, "")
            .await
            .expect("served by replica 2")
            .credentials
            .unwrap();
        secrets.extend(Secret::of_session(i, &session_id, &token, &creds));
    }
    assert_eq!(stack.proxy.assume_role_count(), 5);
    assert_redis_clean(&cluster.dump_all().await, &secrets);
}
