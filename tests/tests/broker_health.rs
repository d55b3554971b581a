//! Liveness and readiness against real processes: liveness (`""`, what the ECS container check
//! asks) stays SERVING while the broker can recover on its own; readiness (the broker service's
//! name) follows Redis. Start-up waits for Redis instead of exiting, and a Redis whose
//! `maxmemory-policy` evicts keys is refused (at start and after a reconnect) unless
//! BROKER_REDIS_ALLOW_EVICTION accepts the risk.

use std::time::{Duration, Instant};

use e2e::broker::{Broker, BrokerBuilder, SERVICE};
use e2e::redis::RedisServer;
use e2e::stack::cache_key;
use e2e::tokens::random_string;
use e2e::tools;
use tonic_health::pb::health_check_response::ServingStatus;

const LIVE: &str = "";

fn broker_on(redis_url: &str) -> BrokerBuilder {
    BrokerBuilder::new()
        .hs256_secret(&random_string(48))
        .allowed_roles(&["arn:aws:iam::123456789012:role/demo-*"])
        .cache_url(redis_url)
        .env("BROKER_CACHE_KEY", &cache_key())
}

/// Waits (up to 30 s) until `service` reports `want`; panics with the broker's log otherwise.
async fn await_health(broker: &Broker, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = broker.health(service).await;
        if seen == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health({service:?}) = {seen:?}, wanted {want:?}; log:\n{}",
            broker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `credential-broker healthcheck` (what the task definition runs) with extra args: exit code.
fn healthcheck(broker: &Broker, extra: &[&str]) -> i32 {
    std::process::Command::new(tools::broker_bin())
        .args(["healthcheck", "--addr", &broker.addr().to_string()])
        .args(["--timeout", "2s"])
        .args(extra)
        .env_remove("BROKER_LISTEN")
        .output()
        .unwrap()
        .status
        .code()
        .unwrap_or(-1)
}

/// A broker that starts before Redis stays up, says what it waits for, is live but not ready,
/// and becomes ready when Redis answers. (It used to exit after 10 s, serving nothing meanwhile:
/// a crash loop under ECS.)
#[tokio::test]
async fn startup_waits_for_redis_live_but_not_ready() {
    let mut redis = RedisServer::start().await;
    redis.stop();
    let mut broker = broker_on(&redis.url()).spawn();
    await_health(&broker, LIVE, ServingStatus::Serving).await;
    assert_eq!(
        broker.health(SERVICE).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(healthcheck(&broker, &[]), 0, "the container check passes");
    assert_eq!(healthcheck(&broker, &["--ready"]), 1, "not ready yet");
    // A log line per attempt says what it waits for.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !broker.log_text().contains("waiting for Redis") {
        assert!(Instant::now() < deadline, "{}", broker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(broker.is_running());

    redis.restart().await;
    await_health(&broker, SERVICE, ServingStatus::Serving).await;
    assert_eq!(healthcheck(&broker, &["--ready"]), 0);
    assert_eq!(healthcheck(&broker, &["--service", SERVICE]), 0);
    broker.kill();
}

/// ElastiCache's default policy (`volatile-lru`) can evict a revocation and make a revoked id
/// bindable again: refused at start, naming the policy and the opt-out; accepted with the
/// opt-out, which logs what is at risk.
#[tokio::test]
async fn an_evicting_redis_is_refused_unless_allowed() {
    let redis = RedisServer::start_with_args(&["--maxmemory-policy", "volatile-lru"]).await;
    let (status, log) = broker_on(&redis.url()).start_expecting_exit().await;
    assert!(!status.success());
    assert!(log.contains("maxmemory-policy is volatile-lru"), "{log}");
    assert!(log.contains("BROKER_REDIS_ALLOW_EVICTION=true"), "{log}");
    assert!(log.contains("noeviction"), "{log}");

    let mut broker = broker_on(&redis.url())
        .env("BROKER_REDIS_ALLOW_EVICTION", "true")
        .start()
        .await;
    let log = broker.log_text();
    assert!(log.contains("BROKER_REDIS_ALLOW_EVICTION=true"), "{log}");
    assert!(log.contains("revoked session id bindable again"), "{log}");
    broker.kill();
}

/// After a reconnect (a failover to a node configured differently), the policy is read again:
/// an evicting one makes the broker unready, not dead; noeviction again makes it ready.
#[tokio::test]
async fn a_reconnect_to_an_evicting_redis_makes_the_broker_unready() {
    let redis = RedisServer::start().await;
    let mut broker = broker_on(&redis.url()).start().await;
    redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
        .await;
    // Drop the broker's connections: its next ping fails, the one after reconnects.
    redis
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !broker
        .log_text()
        .contains("maxmemory-policy is allkeys-lru")
    {
        assert!(Instant::now() < deadline, "{}", broker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Reconnected (Redis answers), yet not ready: the policy holds readiness down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        broker.health(SERVICE).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(broker.health(LIVE).await, Some(ServingStatus::Serving));

    redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .await;
    redis
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .await;
    await_health(&broker, SERVICE, ServingStatus::Serving).await;
    broker.kill();
}
