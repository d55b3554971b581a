//! Start-up: time from exec to SERVING, for the broker (standard gRPC health says SERVING for
//! `credbroker.v1.CredentialBroker`) and the adapter (`GET /healthz` answers 200), polled every
//! millisecond from just before the process is spawned. The median of several runs is reported,
//! with the fastest and slowest, because one exec on a shared 2-core machine can be slowed by
//! anything else running.

use std::time::{Duration, Instant};

use e2e::adapter::AdapterBuilder;
use e2e::broker::SERVICE;
use e2e::redis::RedisServer;
use e2e::stack::BrokerStack;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::driver::percentile;
use crate::report::{Report, verdict};
use crate::setup;

const POLL: Duration = Duration::from_millis(1);
const GIVE_UP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct StartupConfig {
    pub runs: usize,
    /// Also start adapters (needs the `mcp-adapter` binary).
    pub adapter: bool,
}

async fn broker_serving(endpoint: &str) -> bool {
    let Ok(mut channels) = setup::channels(endpoint, 1).await else {
        return false;
    };
    let mut health = HealthClient::new(channels.remove(0));
    matches!(
        health.check(HealthCheckRequest { service: SERVICE.into() }).await,
        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration, Duration, Vec<f64>) {
    samples.sort();
    let ms = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    (
        percentile(&samples, 0.5),
        samples[0],
        *samples.last().expect("at least one run"),
        ms,
    )
}

pub async fn run(cfg: &StartupConfig, report: &mut Report) -> anyhow::Result<()> {
    let stack = BrokerStack::start_with(|b| b.env("RUST_LOG", "info")).await;
    let redis = RedisServer::start().await;
    let key = setup::cache_key();

    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let mut verdicts = Vec::new();
    for (label, with_redis) in [
        ("broker (memory store)", false),
        ("broker (Redis store)", true),
    ] {
        let mut samples = Vec::new();
        for i in 0..cfg.runs {
            let mut builder = setup::broker(stack.seed(), &stack.proxy.endpoint(), &stack.secret)
                .name(&format!("startup-broker-{i}"));
            if with_redis {
                builder = builder
                    .cache_url(&redis.url())
                    .env("BROKER_CACHE_KEY", &key);
            }
            let began = Instant::now();
            let mut broker = builder.spawn();
            // The broker binds port 0 and reports the port at once (before the store connects).
            let endpoint = broker.endpoint();
            loop {
                if broker_serving(&endpoint).await {
                    break;
                }
                anyhow::ensure!(
                    broker.is_running() && began.elapsed() < GIVE_UP,
                    "{label} never became SERVING: {}",
                    broker.log_text()
                );
                tokio::time::sleep(POLL).await;
            }
            samples.push(began.elapsed());
            broker.kill();
        }
        let (median, min, max, ms) = stats(samples);
        let met = median <= Duration::from_millis(100);
        verdicts.push(format!("- {label}: median {median:.1?} → {}", verdict(met)));
        rows.push(format!(
            "| {label} | gRPC health `Check({SERVICE})` = SERVING | {} | {median:.1?} | {min:.1?} | {max:.1?} |",
            cfg.runs
        ));
        json_rows.push(
            json!({ "binary": label, "runs_ms": ms, "median_ms": median.as_secs_f64() * 1e3 }),
        );
    }

    if cfg.adapter {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let mut samples = Vec::new();
        for i in 0..cfg.runs {
            let builder = AdapterBuilder::new(&stack.broker.endpoint())
                .name(&format!("startup-adapter-{i}"))
                .s3_endpoint(&stack.aws_endpoint())
                .env("RUST_LOG", "info");
            let began = Instant::now();
            let mut adapter = builder.spawn();
            // The adapter binds port 0 and reports the port once bound.
            let url = format!("{}/healthz", adapter.url());
            loop {
                if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    break;
                }
                anyhow::ensure!(
                    began.elapsed() < GIVE_UP,
                    "adapter never answered /healthz: {}",
                    adapter.log_text()
                );
                tokio::time::sleep(POLL).await;
            }
            samples.push(began.elapsed());
            adapter.kill();
        }
        let (median, min, max, ms) = stats(samples);
        let met = median <= Duration::from_millis(100);
        verdicts.push(format!("- adapter: median {median:.1?} → {}", verdict(met)));
        rows.push(format!(
            "| adapter | `GET /healthz` = 200 | {} | {median:.1?} | {min:.1?} | {max:.1?} |",
            cfg.runs
        ));
        json_rows.push(
            json!({ "binary": "adapter", "runs_ms": ms, "median_ms": median.as_secs_f64() * 1e3 }),
        );
    }

    let md = format!(
        "From just before `exec` (spawn) until the readiness probe first succeeds, polled every \
         1 ms with a new connection each time; release binaries, production log level.\n\n\
         | binary | ready when | runs | median | fastest | slowest |\n|---|---|---|---|---|---|\n{}\n\n\
         Target (SERVING within 100 ms of exec):\n\n{}\n",
        rows.join("\n"),
        verdicts.join("\n")
    );
    report.add(
        "Start-up: exec to SERVING",
        md,
        json!({ "binaries": json_rows }),
    )
}
