//! The broker's Redis store against real redis-server processes (standalone and a 3-master
//! cluster), driven through the library: the same contract as the in-memory store (which is run
//! here too, as the reference), plus what only Redis has — sealing, key rotation, values moved
//! between keys, a dead server, a restarted server.

use std::time::{Duration, Instant};

use credential_broker::credentials::CredentialRecord;
use credential_broker::hashing::{KeyedHasher, SessionHandle};
use credential_broker::secret::{Key32, Secret};
use credential_broker::sessions::SessionRecord;
use credential_broker::store::{MemoryStore, RedisStore, Store, StoreError};
use e2e::redis::{RedisCluster, RedisServer, keys_containing};
use e2e::tokens::random_string;

fn new_key() -> Key32 {
    let mut k = [0u8; 32];
    rand::fill(&mut k);
    Key32::from(k)
}

fn now_ms() -> i64 {
    credential_broker::clock::now_ms()
}

fn credential(secret: &str, expires_in_ms: i64) -> CredentialRecord {
    let now = now_ms();
    CredentialRecord {
        access_key_id: format!("ASIA{}", random_string(16).to_uppercase()),
        secret_access_key: Secret::new(secret),
        session_token: Secret::new(format!("session-token-{}", random_string(64))),
        expires_at_ms: now + expires_in_ms,
        issued_at_ms: now,
        refresh_at_ms: now + expires_in_ms / 2,
        assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/demo-read-write/alice-1234"
            .into(),
        role_session_name: "alice-1234".into(),
    }
}

fn session(subject: &str) -> SessionRecord {
    SessionRecord {
        subject: subject.into(),
        issuer: "https://auth.e2e.test/".into(),
        credential_id: random_string(40).to_lowercase().into(),
        token_fingerprint: random_string(40).to_lowercase(),
        token_expires_at: now_ms() / 1000 + 3600,
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
        ..SessionRecord::default()
    }
}

fn handle(hasher: &KeyedHasher, id: &str) -> SessionHandle {
    hasher.session_handle(id)
}

async fn redis_store(url: &str, keys: &[Key32]) -> RedisStore {
    RedisStore::connect(&Secret::new(url), keys, false)
        .await
        .expect("connect the Redis store")
}

/// The store contract, identical for every backend.
async fn contract(store: &impl Store) {
    let hasher = KeyedHasher::new(random_string(16).as_bytes());
    let minute = 60_000;

    // Credentials: absent, stored, read back equal; one already expired is not served.
    let id = random_string(40).to_lowercase();
    assert_eq!(store.get_credential(&id).await.unwrap(), None);
    let rec = credential("secret-1", 30 * minute);
    store.put_credential(&id, &rec).await.unwrap();
    assert_eq!(store.get_credential(&id).await.unwrap(), Some(rec.clone()));
    store
        .put_credential(&id, &credential("secret-2", -1000))
        .await
        .unwrap();
    assert_eq!(
        store.get_credential(&id).await.unwrap(),
        None,
        "an expired credential is served"
    );
    let short = random_string(40).to_lowercase();
    store
        .put_credential(&short, &credential("secret-3", 300))
        .await
        .unwrap();
    assert!(store.get_credential(&short).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.get_credential(&short).await.unwrap(),
        None,
        "a credential outlived its expiry"
    );

    // Locks: one holder; a foreign token does not release; the holder does; the TTL does.
    let lock_id = random_string(40).to_lowercase();
    let other_id = random_string(40).to_lowercase();
    let token = store
        .try_lock(&lock_id, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free lock");
    assert!(
        store
            .try_lock(&lock_id, Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "lock taken twice"
    );
    let foreign = store
        .try_lock(&other_id, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("other lock");
    store.unlock(&lock_id, &foreign).await.unwrap();
    assert!(
        store
            .try_lock(&lock_id, Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "released by a stranger"
    );
    store.unlock(&lock_id, &token).await.unwrap();
    let short_lock = store
        .try_lock(&lock_id, Duration::from_millis(300))
        .await
        .unwrap()
        .expect("released");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = store
        .try_lock(&lock_id, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("lock outlived its TTL");
    // The first holder's late unlock must not release the second holder's lock.
    store.unlock(&lock_id, &short_lock).await.unwrap();
    assert!(
        store
            .try_lock(&lock_id, Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "late unlock released"
    );
    store.unlock(&lock_id, &late).await.unwrap();

    // Sessions: compare-and-swap on the version read.
    let h = handle(&hasher, &format!("mcp-session-{}", random_string(32)));
    let ttl = Duration::from_secs(600);
    assert!(store.get_session(&h).await.unwrap().is_none());
    let first = session("alice");
    assert!(
        store.swap_session(&h, None, &first, ttl).await.unwrap(),
        "bind of a new session"
    );
    assert!(
        !store
            .swap_session(&h, None, &session("mallory"), ttl)
            .await
            .unwrap(),
        "second bind won"
    );
    let (read, v1) = store.get_session(&h).await.unwrap().expect("bound");
    assert_eq!(read, first);
    let mut second = first.clone();
    second.rebind_count = 1;
    assert!(
        store
            .swap_session(&h, Some(&v1), &second, ttl)
            .await
            .unwrap(),
        "swap on the current version"
    );
    assert!(
        !store
            .swap_session(&h, Some(&v1), &session("mallory"), ttl)
            .await
            .unwrap(),
        "swap on a stale version"
    );
    assert_eq!(store.get_session(&h).await.unwrap().unwrap().0, second);
    // Rewriting an identical record still changes the version.
    let (_, v2) = store.get_session(&h).await.unwrap().unwrap();
    assert!(
        store
            .swap_session(&h, Some(&v2), &second, ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .swap_session(&h, Some(&v2), &second, ttl)
            .await
            .unwrap(),
        "ABA: equal record, old version"
    );
    // Session TTL.
    let brief = handle(&hasher, &format!("mcp-session-{}", random_string(32)));
    assert!(
        store
            .swap_session(&brief, None, &session("bob"), Duration::from_millis(300))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        store.get_session(&brief).await.unwrap().is_none(),
        "a session outlived its TTL"
    );
    assert!(
        store
            .swap_session(&brief, None, &session("bob"), ttl)
            .await
            .unwrap(),
        "expired counts as absent"
    );

    // Listing: handle order, pages that stay full past expired sessions.
    let list_hasher = KeyedHasher::new(random_string(16).as_bytes());
    let mut handles = Vec::new();
    for i in 0..25 {
        let h = handle(
            &list_hasher,
            &format!("list-session-{i}-{}", random_string(16)),
        );
        let ttl = if i % 5 == 0 {
            Duration::from_millis(300)
        } else {
            ttl
        };
        assert!(
            store
                .swap_session(&h, None, &session(&format!("user-{i}")), ttl)
                .await
                .unwrap()
        );
        handles.push(h);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut live: Vec<SessionHandle> = handles
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, h)| h.clone())
        .collect();
    live.extend([h.clone(), brief.clone()]);
    live.sort();
    let mut seen = Vec::new();
    let mut after: Option<SessionHandle> = None;
    loop {
        let page = store.list_sessions(after.as_ref(), 7).await.unwrap();
        let full = page.len() == 7;
        seen.extend(page.iter().map(|(h, _)| h.clone()));
        after = page.last().map(|(h, _)| h.clone());
        if !full {
            break;
        }
    }
    assert_eq!(
        seen, live,
        "listing in handle order, expired sessions skipped, pages full until the end"
    );

    store.ping().await.unwrap();
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redis_store_meets_the_contract_standalone() {
    let redis = RedisServer::start().await;
    let store = redis_store(&redis.url(), &[new_key()]).await;
    contract(&store).await;
    // Only the documented key shapes, each hash-tagged.
    for entry in redis.dump_all().await {
        let key = String::from_utf8_lossy(&entry.key).into_owned();
        let ok = key == "cb:v1:sessidx"
            || ["cb:v1:cred:{", "cb:v1:lock:{", "cb:v1:sess:{"]
                .iter()
                .any(|p| key.starts_with(p) && key.ends_with('}'));
        assert!(ok, "unexpected key {key}");
    }
}

#[tokio::test]
async fn redis_store_meets_the_contract_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let store = redis_store(
        &format!("redis+cluster://{}", cluster.host_ports()),
        &[new_key()],
    )
    .await;
    contract(&store).await;
    // The records really are spread over the masters (the hash tags do not pin them to one).
    let entries = cluster.dump_all().await;
    let mut nodes_with_sessions = 0;
    for node in cluster.nodes() {
        let on_node = node.dump_all().await;
        if on_node.iter().any(|e| e.key.starts_with(b"cb:v1:sess:")) {
            nodes_with_sessions += 1;
        }
    }
    assert!(entries.len() > 20);
    assert!(
        nodes_with_sessions >= 2,
        "sessions on {nodes_with_sessions} node(s)"
    );
}

#[tokio::test]
async fn values_are_sealed_and_bound_to_their_key() {
    let redis = RedisServer::start().await;
    let store = redis_store(&redis.url(), &[new_key()]).await;
    let hasher = KeyedHasher::new(b"values-are-sealed");
    let secret = format!("wJalrXUtnFEMI/{}", random_string(30));
    let rec = credential(&secret, 3_600_000);
    store.put_credential("c0ffee", &rec).await.unwrap();
    let session_id = format!("mcp-session-{}", random_string(32));
    let victim = handle(&hasher, &session_id);
    let mut victim_record = session("victim-subject");
    victim_record.credential_id = "c0ffee".into();
    assert!(
        store
            .swap_session(&victim, None, &victim_record, Duration::from_secs(600))
            .await
            .unwrap()
    );

    let entries = redis.dump_all().await;
    for needle in [
        secret.as_str(),
        rec.session_token.expose(),
        rec.access_key_id.as_str(),
        "victim-subject",
        "demo-read-write",
        session_id.as_str(),
    ] {
        assert!(
            keys_containing(&entries, needle.as_bytes()).is_empty(),
            "a plaintext value is in Redis"
        );
    }
    let sealed = entries
        .iter()
        .find(|e| e.key.starts_with(b"cb:v1:sess:"))
        .unwrap();
    assert_eq!(sealed.values[0][0], 0x01, "sealed format v1");

    // A victim's sealed session copied under the attacker's handle does not open there.
    let attacker = handle(&hasher, &format!("mcp-session-{}", random_string(32)));
    let value = redis
        .cmd(&["GET", &format!("cb:v1:sess:{{{victim}}}")])
        .await;
    let redis::Value::BulkString(bytes) = value else {
        panic!("GET: {value:?}")
    };
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("cb:v1:sess:{{{attacker}}}"))
        .arg(&bytes)
        .query_async(&mut conn)
        .await
        .unwrap();
    match store.get_session(&attacker).await {
        Err(StoreError::Unreadable(m)) => assert!(m.contains("authentication"), "{m}"),
        other => panic!("a moved value must be Unreadable, got {other:?}"),
    }
    // Unreadable is never absent: binding over it fails instead of overwriting.
    assert!(
        !store
            .swap_session(
                &attacker,
                None,
                &session("mallory"),
                Duration::from_secs(60)
            )
            .await
            .unwrap()
    );
    // Listing refuses rather than skipping what it cannot read.
    assert!(matches!(
        store.list_sessions(None, 100).await,
        Err(StoreError::Unreadable(_))
    ));
}

#[tokio::test]
async fn key_rotation_reads_old_values_and_an_unknown_key_says_what_to_set() {
    let redis = RedisServer::start().await;
    let (old, new) = (new_key(), new_key());
    let before = redis_store(&redis.url(), std::slice::from_ref(&old)).await;
    let hasher = KeyedHasher::new(b"rotation");
    let h = handle(&hasher, "mcp-session-rotation-0000000000");
    let rec = session("alice");
    assert!(
        before
            .swap_session(&h, None, &rec, Duration::from_secs(600))
            .await
            .unwrap()
    );
    before
        .put_credential("abc123", &credential("rotating-secret", 3_600_000))
        .await
        .unwrap();

    // New key current, old key previous: old values open, new writes use the new key.
    let during = redis_store(&redis.url(), &[new.clone(), old.clone()]).await;
    let (read, v) = during
        .get_session(&h)
        .await
        .unwrap()
        .expect("old value readable");
    assert_eq!(read, rec);
    assert!(during.get_credential("abc123").await.unwrap().is_some());
    let mut rebound = rec.clone();
    rebound.rebind_count = 1;
    assert!(
        during
            .swap_session(&h, Some(&v), &rebound, Duration::from_secs(600))
            .await
            .unwrap()
    );

    // The new key alone opens the rewritten session, not the credential still under the old key.
    let after = redis_store(&redis.url(), std::slice::from_ref(&new)).await;
    assert_eq!(after.get_session(&h).await.unwrap().unwrap().0, rebound);
    match after.get_credential("abc123").await {
        Err(StoreError::Unreadable(m)) => assert!(m.contains("BROKER_CACHE_KEY_PREVIOUS"), "{m}"),
        other => panic!("expected Unreadable naming BROKER_CACHE_KEY_PREVIOUS, got {other:?}"),
    }
    // And a broker without a key refuses sealed values instead of treating them as absent.
    let plain = RedisStore::connect(&Secret::new(redis.url()), &[], true)
        .await
        .unwrap();
    assert!(matches!(
        plain.get_session(&h).await,
        Err(StoreError::Unreadable(_))
    ));
    assert!(
        RedisStore::connect(&Secret::new(redis.url()), &[], false)
            .await
            .is_err(),
        "no key without the flag"
    );
}

#[tokio::test]
async fn a_dead_redis_fails_fast_and_a_restarted_one_is_used_again() {
    let mut redis = RedisServer::start().await;
    let store = redis_store(&redis.url(), &[new_key()]).await;
    let h = handle(
        &KeyedHasher::new(b"dead"),
        "mcp-session-dead-redis-00000000",
    );
    assert!(
        store
            .swap_session(&h, None, &session("alice"), Duration::from_secs(600))
            .await
            .unwrap()
    );

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let err = store
            .get_session(&h)
            .await
            .expect_err("answered without Redis");
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.starts_with("redis ")),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
        assert!(store.ping().await.is_err());
    }

    redis.restart().await;
    let restarted = Instant::now();
    loop {
        if store.ping().await.is_ok() {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(3),
            "no reconnection 3 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "store usable again {:?} after redis-server answered PING",
        restarted.elapsed()
    );
    // An empty server: the session is gone (no persistence in tests), and that reads as absent.
    assert!(store.get_session(&h).await.unwrap().is_none());
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    let redis = RedisServer::start().await;
    let password = format!("pw-{}", random_string(24));
    redis
        .cmd(&["CONFIG", "SET", "requirepass", &password])
        .await;
    let wrong = format!(
        "redis://:{}@127.0.0.1:{}",
        "not-the-password-x9",
        redis.port()
    );
    let started = Instant::now();
    let err = RedisStore::connect(&Secret::new(&wrong), &[new_key()], false)
        .await
        .expect_err("wrong password accepted");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an auth error is not worth retrying"
    );
    assert!(!err.contains("not-the-password-x9"), "password in: {err}");
    assert!(err.starts_with("BROKER_CACHE_URL: "), "{err}");
    let right = format!("redis://:{password}@127.0.0.1:{}", redis.port());
    let store = RedisStore::connect(&Secret::new(&right), &[new_key()], false)
        .await
        .expect("right password");
    store.ping().await.unwrap();
    let dbg = format!("{store:?}");
    assert!(!dbg.contains(&password), "{dbg}");

    // Nothing listening: refused after the startup wait, naming the target but no password.
    let nobody = e2e::ports::closed_port();
    let closed = nobody.port();
    let url = format!("redis://:{password}@127.0.0.1:{closed}");
    let err = RedisStore::connect(&Secret::new(&url), &[new_key()], false)
        .await
        .expect_err("connected to nothing");
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert!(!err.contains(&password), "{err}");
}
