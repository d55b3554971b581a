//! Broker warm path: `GetCredentials` on bound sessions with the same token each call (the
//! broker's fast path: no JWT validation, no STS), in-memory store and Redis store, against the
//! floor — a bare tonic service answering the very same bytes — in the same run, with the same
//! client, channels and concurrency.
//!
//! Points are measured in the order floor, memory, Redis for each concurrency, back to back, so
//! the three see the same machine load; the server processes' CPU time per request is recorded
//! too (it says where a throughput gap comes from: work in the broker, or waiting).

use std::time::Duration;

use credbroker_proto::v1::GetCredentialsRequest;
use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use e2e::process::Scratch;
use e2e::redis::RedisServer;
use e2e::stack::BrokerStack;
use prost::Message;
use serde_json::json;
use tonic::transport::Channel;

use crate::driver::{self, LoadSpec, Op};
use crate::report::{Report, load_row, verdict};
use crate::{procfs, setup};

/// Settings of the warm-path benchmark.
#[derive(Debug, Clone)]
pub struct WarmConfig {
    pub concurrency: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// HTTP/2 connections shared by all workers (the same for every target).
    pub connections: usize,
    /// Bound sessions the workers cycle through (worker i uses session i mod sessions).
    pub sessions: usize,
    /// Distinct users those sessions belong to.
    pub users: usize,
    /// Rounds of (floor, memory, Redis) per concurrency; rows show the median-ratio round.
    pub rounds: usize,
}

/// One measured point of one target.
#[derive(Debug, Clone)]
struct Point {
    summary: driver::LoadSummary,
    ratio: f64,
    cpu_us: f64,
    /// redis-server's share of `cpu_us` (zero for the floor and the memory store).
    redis_us: f64,
    load_before: f64,
}

/// The point with the median ratio, or for the floor (`by_throughput`) the median throughput;
/// the lower middle of an even count.
fn median_point(points: &[Point], by_throughput: bool) -> &Point {
    let mut order: Vec<&Point> = points.iter().collect();
    let key = |p: &Point| {
        if by_throughput {
            p.summary.throughput
        } else {
            p.ratio
        }
    };
    order.sort_by(|a, b| key(a).total_cmp(&key(b)));
    order[(order.len() - 1) / 2]
}

/// One `GetCredentials` per call, on this worker's session.
pub struct GetCredentials {
    client: CredentialBrokerClient<Channel>,
    request: GetCredentialsRequest,
}

impl GetCredentials {
    pub fn new(channel: Channel, session_id: &str, token: &str) -> GetCredentials {
        GetCredentials {
            client: CredentialBrokerClient::new(channel),
            request: GetCredentialsRequest {
                session_id: session_id.to_string(),
                token: token.to_string(),
                role_arn: String::new(),
                mcp: None,
            },
        }
    }
}

impl Op for GetCredentials {
    async fn call(&mut self) -> Result<(), String> {
        let response = self
            .client
            .get_credentials(self.request.clone())
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        match response.into_inner().credentials {
            Some(c) if !c.access_key_id.is_empty() => Ok(()),
            _ => Err("answer without credentials".into()),
        }
    }
}

/// Runs `GetCredentials` load against `endpoint` at concurrency `c`.
pub async fn measure(
    endpoint: &str,
    sessions: &[(String, String)],
    connections: usize,
    spec: LoadSpec,
) -> anyhow::Result<driver::LoadResult> {
    let channels = setup::channels(endpoint, connections).await?;
    let ops = (0..spec.concurrency)
        .map(|i| {
            let (sid, token) = &sessions[i % sessions.len()];
            GetCredentials::new(channels[i % channels.len()].clone(), sid, token)
        })
        .collect();
    Ok(driver::run(spec, ops).await)
}

struct Target {
    name: &'static str,
    endpoint: String,
    pid: u32,
}

pub async fn run(cfg: &WarmConfig, report: &mut Report) -> anyhow::Result<()> {
    // BENCH_AUDIT_LOG=PATH: the memory-store broker also writes its audit trail there (the cost
    // of BROKER_AUDIT_LOG on the warm path: compare a run with and one without).
    let audit = std::env::var("BENCH_AUDIT_LOG").ok();
    let stack = BrokerStack::start_with(|b| {
        let b = b.env("RUST_LOG", "info");
        match &audit {
            Some(path) => b.env("BROKER_AUDIT_LOG", path),
            None => b,
        }
    })
    .await;
    let redis = RedisServer::start().await;
    let redis_broker = setup::broker(stack.seed(), &stack.proxy.endpoint(), &stack.secret)
        .name("broker-redis")
        .cache_url(&redis.url())
        .env("BROKER_CACHE_KEY", &setup::cache_key())
        .start()
        .await;

    // Bound sessions: the first call with a token binds (rebound = true), later calls with the
    // same token are the fast path measured here.
    let tokens: Vec<String> = (0..cfg.users)
        .map(|u| stack.rw_token(&format!("warm-user-{u:04}@example.com")))
        .collect();
    let sessions: Vec<(String, String)> = (0..cfg.sessions)
        .map(|i| (setup::session_id(), tokens[i % cfg.users].clone()))
        .collect();
    let mut captured = None;
    for endpoint in [stack.broker.endpoint(), redis_broker.endpoint()] {
        let mut client =
            CredentialBrokerClient::new(setup::channels(&endpoint, 1).await?.remove(0));
        for (sid, token) in &sessions {
            for expect_rebound in [true, false] {
                let answer = client
                    .get_credentials(GetCredentialsRequest {
                        session_id: sid.clone(),
                        token: token.clone(),
                        role_arn: String::new(),
                        mcp: None,
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(
                    answer.rebound == expect_rebound,
                    "session binding at {endpoint}: rebound = {}",
                    answer.rebound
                );
                if !expect_rebound {
                    captured.get_or_insert(answer);
                }
            }
        }
    }
    let sts_calls_after_binding = stack.proxy.count();

    // The floor answers exactly the bytes the broker answers for session 0.
    let scratch = Scratch::new("bench-floor");
    let response_file = scratch.join("response.bin");
    let response = captured.expect("at least one session");
    std::fs::write(&response_file, response.encode_to_vec())?;
    let (floor, floor_endpoint) = setup::start_floor(&scratch, &response_file).await?;

    let targets = [
        Target {
            name: "floor",
            endpoint: floor_endpoint,
            pid: floor.pid(),
        },
        Target {
            name: "broker (memory)",
            endpoint: stack.broker.endpoint(),
            pid: stack.broker.pid(),
        },
        Target {
            name: "broker (Redis)",
            endpoint: redis_broker.endpoint(),
            pid: redis_broker.pid(),
        },
    ];
    let mut rows = Vec::new();
    let mut points = Vec::new();
    let mut target_verdicts = Vec::new();
    let mut bar_verdicts = Vec::new();
    let top = cfg.concurrency.iter().copied().max().unwrap_or(1);
    let rounds = cfg.rounds.max(1);
    for &c in &cfg.concurrency {
        let spec = LoadSpec {
            concurrency: c,
            warmup: cfg.warmup,
            duration: cfg.duration,
        };
        // Rounds of floor, memory, Redis back to back: a ratio compares points seconds apart,
        // and the median of the rounds' ratios is what a drifting 2-core VM cannot move much.
        let mut measured: Vec<Vec<Point>> = vec![Vec::new(); targets.len()];
        for round in 0..rounds {
            let mut floor_rps = f64::NAN;
            for (i, t) in targets.iter().enumerate() {
                let redis_pids: Vec<u32> = if t.name.contains("Redis") {
                    redis.pid().into_iter().collect()
                } else {
                    Vec::new()
                };
                let load_before = procfs::load1();
                let cpu_before = procfs::cpu_time_of(&[t.pid])?;
                let redis_before = procfs::cpu_time_of(&redis_pids)?;
                let result = measure(&t.endpoint, &sessions, cfg.connections, spec).await?;
                let redis_cpu = procfs::cpu_time_of(&redis_pids)? - redis_before;
                let cpu = procfs::cpu_time_of(&[t.pid])? - cpu_before + redis_cpu;
                result.ensure_clean(t.name)?;
                let summary = result.summary();
                let cpu_us = cpu.as_secs_f64() * 1e6 / summary.ops as f64;
                let redis_us = redis_cpu.as_secs_f64() * 1e6 / summary.ops as f64;
                if t.name == "floor" {
                    floor_rps = summary.throughput;
                }
                let ratio = summary.throughput / floor_rps;
                points.push(json!({
                    "target": t.name,
                    "round": round,
                    "summary": summary,
                    "ratio_to_floor": ratio,
                    "server_cpu_us_per_request": cpu_us,
                    "redis_server_cpu_us_per_request": redis_us,
                    "load1_before": load_before,
                }));
                measured[i].push(Point {
                    summary,
                    ratio,
                    cpu_us,
                    redis_us,
                    load_before,
                });
            }
        }
        let floor_p99 = median_point(&measured[0], true).summary.p99_us;
        for (t, points) in targets.iter().zip(&measured) {
            let m = median_point(points, t.name == "floor");
            let per_round: Vec<String> = points.iter().map(|p| format!("{:.2}", p.ratio)).collect();
            rows.push(load_row(
                t.name,
                &m.summary,
                &[
                    format!("{:.2}", m.ratio),
                    per_round.join(" "),
                    if m.redis_us > 0.0 {
                        format!("{:.1} µs ({:.1} µs Redis)", m.cpu_us, m.redis_us)
                    } else {
                        format!("{:.1} µs", m.cpu_us)
                    },
                    format!("{:.2}", m.load_before),
                ],
            ));
            if c == top && t.name != "floor" {
                target_verdicts.push(format!(
                    "- {} at concurrency {c}: {:.2} × the floor's throughput, p99 {} (floor {}) → {}",
                    t.name,
                    m.ratio,
                    crate::report::us(m.summary.p99_us),
                    crate::report::us(floor_p99),
                    verdict(m.ratio >= 0.8)
                ));
                let bar = if t.name.contains("Redis") { 0.73 } else { 0.9 };
                bar_verdicts.push(format!(
                    "- {} at concurrency {c}: {:.2} ≥ {bar:.2} → {}",
                    t.name,
                    m.ratio,
                    verdict(m.ratio >= bar)
                ));
            }
        }
    }
    anyhow::ensure!(
        stack.proxy.count() == sts_calls_after_binding,
        "the warm path called STS"
    );
    let mut md = format!(
        "{} bound sessions of {} users, the same token on every call; {} shared HTTP/2 connection(s) \
         for every target; {:?} warm-up then {:?} per point. Ratio = throughput ÷ the floor's at the \
         same concurrency, measured just before. Server CPU = utime+stime of the server process \
         (broker, floor; plus redis-server for the Redis broker, its share in brackets) per request. No STS call during \
         the measurement.\n\n\
         Each concurrency is measured in {} round(s) of floor, memory, Redis back to back; a row \
         is the round with the median ratio, `rounds` lists every round's ratio.\n\n\
         | target | concurrency | req/s | p50 | p99 | p99.9 | ÷ floor | rounds | server CPU/req | load1 |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        cfg.sessions, cfg.users, cfg.connections, cfg.warmup, cfg.duration, rounds
    );
    md.push_str(&rows.join("\n"));
    md.push_str(
        "\n\nTarget (broker ≥ 0.8 × floor throughput at the highest concurrency; p99 beside the \
         floor's, whose own p99 is over issue 7's 2 ms at c ≥ 16 on 2 cores, Little's law):\n\n",
    );
    md.push_str(&target_verdicts.join("\n"));
    md.push_str(
        "\n\nIssue 16's bar (the broker keeps 6249966's figures: memory ≥ 0.90 × the floor, \
         Redis ≥ 0.73 ×, median of the rounds at the highest concurrency):\n\n",
    );
    md.push_str(&bar_verdicts.join("\n"));
    md.push('\n');
    report.add(
        "Broker warm path vs floor",
        md,
        json!({
            "sessions": cfg.sessions,
            "users": cfg.users,
            "connections": cfg.connections,
            "warmup_s": cfg.warmup.as_secs_f64(),
            "duration_s": cfg.duration.as_secs_f64(),
            "rounds": rounds,
            "points": points,
        }),
    )?;
    drop(floor);
    Ok(())
}
