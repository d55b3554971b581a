//! Broker cold path: N concurrent first requests for one principal, each on its own new session
//! with its own freshly minted token (same subject and role, so one credential key) → how many
//! `AssumeRole` calls reach STS, counted at the counting proxy in front of moto. Once on one
//! broker with the in-memory store, once across 2 replicas sharing Redis (N/2 requests to each,
//! interleaved), a few rounds each with a new principal.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use credbroker_proto::v1::GetCredentialsRequest;
use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use e2e::redis::RedisServer;
use e2e::stack::BrokerStack;
use serde_json::json;
use tonic::transport::Channel;

use crate::driver::percentile;
use crate::report::{Report, us, verdict};
use crate::setup;

#[derive(Debug, Clone)]
pub struct ColdConfig {
    /// Concurrent cold requests per round.
    pub requests: usize,
    pub rounds: usize,
}

struct Round {
    sts_calls: usize,
    distinct_keys: usize,
    wall: Duration,
    p50: Duration,
    max: Duration,
}

/// Fires `tokens.len()` first requests at once, request i to `clients[i % clients.len()]`.
async fn burst(
    clients: &[CredentialBrokerClient<Channel>],
    tokens: &[String],
    count: impl Fn() -> usize,
) -> anyhow::Result<Round> {
    let before = count();
    let start = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let mut client = clients[i % clients.len()].clone();
            let mut go = start.1.clone();
            let request = GetCredentialsRequest {
                session_id: setup::session_id(),
                token: token.clone(),
                role_arn: String::new(),
                mcp: None,
            };
            tokio::spawn(async move {
                let _ = go.wait_for(|g| *g).await;
                let began = Instant::now();
                let answer = client.get_credentials(request).await;
                (began.elapsed(), answer)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let wall_start = Instant::now();
    start.0.send_replace(true);
    let mut latencies = Vec::new();
    let mut keys = HashSet::new();
    for task in tasks {
        let (latency, answer) = task.await?;
        let answer = answer.map_err(|s| anyhow::anyhow!("cold request failed: {s}"))?;
        let creds = answer
            .into_inner()
            .credentials
            .ok_or_else(|| anyhow::anyhow!("answer without credentials"))?;
        keys.insert(creds.access_key_id);
        latencies.push(latency);
    }
    let wall = wall_start.elapsed();
    latencies.sort();
    Ok(Round {
        sts_calls: count() - before,
        distinct_keys: keys.len(),
        wall,
        p50: percentile(&latencies, 0.5),
        max: *latencies.last().unwrap_or(&Duration::ZERO),
    })
}

pub async fn run(cfg: &ColdConfig, report: &mut Report) -> anyhow::Result<()> {
    let stack = BrokerStack::start_with(|b| b.env("RUST_LOG", "info")).await;
    let redis = RedisServer::start().await;
    let key = setup::cache_key();
    let mut replicas = Vec::new();
    for i in 1..=2 {
        replicas.push(
            setup::broker(stack.seed(), &stack.proxy.endpoint(), &stack.secret)
                .name(&format!("replica-{i}"))
                .cache_url(&redis.url())
                .env("BROKER_CACHE_KEY", &key)
                .start()
                .await,
        );
    }
    let single = vec![CredentialBrokerClient::new(
        setup::channels(&stack.broker.endpoint(), 1)
            .await?
            .remove(0),
    )];
    let mut pair = Vec::new();
    for r in &replicas {
        pair.push(CredentialBrokerClient::new(
            setup::channels(&r.endpoint(), 1).await?.remove(0),
        ));
    }

    let mut rows = Vec::new();
    let mut all_one = true;
    let mut json_rounds = Vec::new();
    for (setup_no, (label, clients)) in [
        ("1 broker, memory store", &single),
        ("2 replicas, shared Redis", &pair),
    ]
    .into_iter()
    .enumerate()
    {
        for round in 0..cfg.rounds {
            let subject = format!("cold-{setup_no}-{round}@example.com");
            let tokens: Vec<String> = (0..cfg.requests)
                .map(|_| stack.rw_token(&subject))
                .collect();
            let r = burst(clients, &tokens, || stack.proxy.assume_role_count()).await?;
            all_one &= r.sts_calls == 1 && r.distinct_keys == 1;
            rows.push(format!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} |",
                round + 1,
                cfg.requests,
                r.sts_calls,
                r.distinct_keys,
                us(r.p50.as_secs_f64() * 1e6),
                us(r.max.as_secs_f64() * 1e6),
                us(r.wall.as_secs_f64() * 1e6),
            ));
            json_rounds.push(json!({
                "setup": label,
                "round": round + 1,
                "requests": cfg.requests,
                "sts_calls": r.sts_calls,
                "distinct_access_keys": r.distinct_keys,
                "p50_us": r.p50.as_secs_f64() * 1e6,
                "max_us": r.max.as_secs_f64() * 1e6,
                "wall_us": r.wall.as_secs_f64() * 1e6,
            }));
        }
    }
    let mut md = format!(
        "Each round: {} concurrent `GetCredentials` for ONE new principal, each on a new session \
         with its own token (same subject and role → one credential key), released together. \
         STS calls = `AssumeRole` requests seen by the counting proxy in front of moto.\n\n\
         | setup | round | requests | STS calls | distinct access keys served | p50 | slowest | all answered after |\n\
         |---|---|---|---|---|---|---|---|\n",
        cfg.requests
    );
    md.push_str(&rows.join("\n"));
    md.push_str(&format!(
        "\n\nTarget (exactly 1 STS call per credential key under any concurrency, across replicas): {}\n",
        verdict(all_one)
    ));
    report.add(
        "Broker cold path: STS calls under concurrency",
        md,
        json!({ "rounds": json_rounds }),
    )
}
