//! Memory per live session: the broker's resident memory with 100,000 live sessions on the
//! in-memory store, and the bytes one session takes in Redis.
//!
//! Sessions belong to a few thousand users and the sessions of one user share one credential
//! (one scope), as in production where a user opens many MCP sessions. The baseline is taken after
//! every user has one session and its credential, so the per-session figure is the cost of one
//! more session, not of one more credential; both absolute figures are reported too.

use std::time::{Duration, Instant};

use credbroker_proto::v1::BindSessionRequest;
use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use e2e::broker::Broker;
use e2e::redis::RedisServer;
use e2e::stack::BrokerStack;
use futures::StreamExt;
use serde_json::json;
use tonic::transport::Channel;

use crate::report::{Report, verdict};
use crate::{procfs, setup};

#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Live sessions on the in-memory broker.
    pub sessions: usize,
    /// Live sessions on the Redis broker.
    pub redis_sessions: usize,
    pub sessions_per_user: usize,
    /// Concurrent binds.
    pub concurrency: usize,
}

/// Binds `sessions_for_user(u)` new sessions for every user `u` (token `tokens[u]`),
/// `concurrency` at a time; returns how many and how long it took.
async fn bind_many(
    client: &CredentialBrokerClient<Channel>,
    tokens: &[String],
    sessions_for_user: impl Fn(usize) -> usize,
    concurrency: usize,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let work: Vec<(usize, String)> = tokens
        .iter()
        .enumerate()
        .flat_map(|(u, t)| (0..sessions_for_user(u)).map(move |_| (u, t.clone())))
        .collect();
    let count = work.len();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(work)
        .map(|(_, token)| {
            let mut client = client.clone();
            async move {
                client
                    .bind_session(BindSessionRequest {
                        session_id: setup::session_id(),
                        token,
                        role_arn: String::new(),
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| anyhow::anyhow!("BindSession: {s}"))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok((count, started.elapsed()))
}

/// Live sessions the broker lists (on its operator plane, as the harness's operator).
async fn count_sessions(broker: &Broker, stack: &BrokerStack) -> anyhow::Result<usize> {
    let mut admin = broker.admin(Some(&stack.operator_token())).await;
    let mut total = 0;
    let mut page_token = String::new();
    loop {
        let page = e2e::rpc::list(&mut admin, 1000, &page_token, "")
            .await
            .map_err(|s| anyhow::anyhow!("ListSessions: {s}"))?;
        total += page.sessions.len();
        if page.next_page_token.is_empty() {
            return Ok(total);
        }
        page_token = page.next_page_token;
    }
}

/// `INFO memory` `used_memory` of the server, bytes.
async fn redis_used_memory(redis: &RedisServer) -> anyhow::Result<u64> {
    let value = redis.cmd(&["INFO", "memory"]).await;
    let text = match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => anyhow::bail!("INFO memory answered {other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO memory"))
}

struct Phase {
    users: usize,
    tokens: Vec<String>,
}

fn users(stack: &BrokerStack, sessions: usize, per_user: usize, tag: &str) -> Phase {
    let users = sessions.div_ceil(per_user);
    Phase {
        users,
        tokens: (0..users)
            .map(|u| stack.rw_token(&format!("mem-{tag}-{u:05}@example.com")))
            .collect(),
    }
}

async fn client(broker: &Broker) -> anyhow::Result<CredentialBrokerClient<Channel>> {
    Ok(CredentialBrokerClient::new(
        setup::channels(&broker.endpoint(), 1).await?.remove(0),
    ))
}

pub async fn run(cfg: &MemoryConfig, report: &mut Report) -> anyhow::Result<()> {
    let per_user = cfg.sessions_per_user;
    // --- in-memory store ---------------------------------------------------------------------
    let mut stack = BrokerStack::start_with(|b| b.env("RUST_LOG", "info")).await;
    let pid = stack.broker.pid();
    let mem = client(&stack.broker).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = procfs::rss_kib(pid)?;
    let phase = users(&stack, cfg.sessions, per_user, "m");
    let (first, t_first) = bind_many(&mem, &phase.tokens, |_| 1, cfg.concurrency).await?;
    let rss_base = procfs::rss_kib(pid)?;
    let total = cfg.sessions;
    let rest = |u: usize| {
        let before = u * per_user;
        total.saturating_sub(before).min(per_user).saturating_sub(1)
    };
    let (more, t_more) = bind_many(&mem, &phase.tokens, rest, cfg.concurrency).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_full = procfs::rss_kib(pid)?;
    let live = count_sessions(&stack.broker, &stack).await?;
    anyhow::ensure!(
        live == first + more,
        "the broker lists {live} live sessions, {} were bound",
        first + more
    );
    let sts_calls = stack.proxy.count();
    let per_session = (rss_full.saturating_sub(rss_base)) as f64 * 1024.0 / more as f64;
    let per_session_all = (rss_full.saturating_sub(rss_idle)) as f64 * 1024.0 / live as f64;
    drop(mem);
    stack.broker.kill();

    // --- Redis store (same moto) ---------------------------------------------------------------
    let redis = RedisServer::start().await;
    let broker = setup::broker(stack.seed(), &stack.proxy.endpoint(), &stack.secret)
        .name("broker-redis")
        .cache_url(&redis.url())
        .env("BROKER_CACHE_KEY", &setup::cache_key())
        .start()
        .await;
    let rc = client(&broker).await?;
    let redis_empty = redis_used_memory(&redis).await?;
    let rphase = users(&stack, cfg.redis_sessions, per_user, "r");
    let (rfirst, _) = bind_many(&rc, &rphase.tokens, |_| 1, cfg.concurrency).await?;
    let redis_base = redis_used_memory(&redis).await?;
    let rtotal = cfg.redis_sessions;
    let rrest = |u: usize| {
        let before = u * per_user;
        rtotal
            .saturating_sub(before)
            .min(per_user)
            .saturating_sub(1)
    };
    let (rmore, t_rmore) = bind_many(&rc, &rphase.tokens, rrest, cfg.concurrency).await?;
    let redis_full = redis_used_memory(&redis).await?;
    let rlive = count_sessions(&broker, &stack).await?;
    anyhow::ensure!(
        rlive == rfirst + rmore,
        "Redis broker lists {rlive} sessions"
    );
    let redis_per_session = (redis_full - redis_base) as f64 / rmore as f64;
    let redis_per_user = (redis_base - redis_empty) as f64 / rphase.users as f64;
    let broker_rss_redis = procfs::rss_kib(broker.pid())?;

    let met = per_session <= 2048.0;
    let md = format!(
        "**In-memory store.** {live} live sessions of {users} users ({per_user} sessions per user \
         share one credential); {sts_calls} STS calls (one per user). Binding: {first} sessions \
         in {t_first:.1?}, then {more} in {t_more:.1?} ({rate:.0} binds/s, {c} concurrent).\n\n\
         | broker RSS | KiB |\n|---|---|\n\
         | idle, after start | {rss_idle} |\n\
         | {users} users × 1 session (credentials cached) | {rss_base} |\n\
         | {live} sessions | {rss_full} |\n\n\
         **{per_session:.0} bytes of broker RSS per additional live session** \
         (({rss_full} − {rss_base}) KiB ÷ {more}); {per_session_all:.0} bytes per session \
         counting everything above idle. Target ≤ 2 KiB per live session: {v}.\n\n\
         **Redis store.** {rlive} live sessions of {rusers} users; Redis `used_memory` empty \
         {redis_empty} B, with one session per user {redis_base} B, with all {redis_full} B. \
         **{redis_per_session:.0} bytes of Redis memory per additional session** (sealed record + \
         session-index entry), {redis_per_user:.0} bytes per user with its first session and \
         credential. The Redis-backed broker itself holds no session: its RSS stays at \
         {broker_rss_redis} KiB. ({rmore} binds in {t_rmore:.1?}.)\n",
        users = phase.users,
        rate = more as f64 / t_more.as_secs_f64(),
        c = cfg.concurrency,
        rusers = rphase.users,
        v = verdict(met),
    );
    report.add(
        "Memory per live session",
        md,
        json!({
            "memory_store": {
                "sessions": live,
                "users": phase.users,
                "rss_idle_kib": rss_idle,
                "rss_users_kib": rss_base,
                "rss_full_kib": rss_full,
                "bytes_per_additional_session": per_session,
                "bytes_per_session_above_idle": per_session_all,
            },
            "redis_store": {
                "sessions": rlive,
                "users": rphase.users,
                "used_memory_empty": redis_empty,
                "used_memory_users": redis_base,
                "used_memory_full": redis_full,
                "bytes_per_additional_session": redis_per_session,
                "bytes_per_user_first_session": redis_per_user,
                "broker_rss_kib": broker_rss_redis,
            },
        }),
    )
}
