//! Steady state: STS calls per principal per refresh window, under continuous traffic on
//! 2 replicas sharing Redis.
//!
//! The broker refreshes a credential in the background from
//! `refresh_at = max(expiry − margin − jitter, issue + lifetime/2)` (jitter ≤ margin/5), triggered
//! by the first request after that instant, and serves a credential only while more than 60 s
//! remain. STS's shortest lifetime is 15 minutes, so real windows last ≥ 7.5 minutes; to see
//! several in bounded time the STS answers pass through the harness's `ExpiryProxy`, which
//! reports a shorter lifetime (the broker's logic is unchanged, its clock just runs on shorter credentials).
//!
//! Every principal has one session on each replica; every `interval` each session asks once, so
//! both replicas race for every refresh. Counted: `AssumeRole` calls at the proxy, and the distinct
//! access keys each principal was served (each one is an STS answer that reached a caller).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use credbroker_proto::v1::GetCredentialsRequest;
use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use e2e::moto::Moto;
use e2e::redis::RedisServer;
use e2e::stack::standard_minter;
use e2e::sts_expiry::ExpiryProxy;
use e2e::sts_proxy::StsProxy;
use e2e::tokens::random_string;
use serde_json::json;

use crate::report::{Report, verdict};
use crate::setup;

#[derive(Debug, Clone)]
pub struct SteadyConfig {
    /// The credential lifetime STS is made to report.
    pub lifetime: Duration,
    /// `BROKER_REFRESH_MARGIN`.
    pub margin: Duration,
    pub duration: Duration,
    pub principals: usize,
    /// Pause between two rounds of requests (every session asks once per round).
    pub interval: Duration,
}

/// When a credential issued at 0 is refreshed, per the broker's formula: (earliest, latest).
pub fn refresh_after(lifetime: Duration, margin: Duration) -> (Duration, Duration) {
    let floor = lifetime / 2;
    let latest = lifetime.saturating_sub(margin).max(floor);
    let earliest = lifetime.saturating_sub(margin + margin / 5).max(floor);
    (earliest, latest)
}

pub async fn run(cfg: &SteadyConfig, report: &mut Report) -> anyhow::Result<()> {
    let (earliest, latest) = refresh_after(cfg.lifetime, cfg.margin);
    anyhow::ensure!(
        latest + Duration::from_secs(5) < cfg.lifetime.saturating_sub(Duration::from_secs(60)),
        "lifetime {:?} with margin {:?}: refresh at {latest:?} is not well before the credential stops being served (lifetime − 60 s)",
        cfg.lifetime,
        cfg.margin
    );
    let moto = Moto::start().await;
    // broker → ExpiryProxy (shortens lifetimes) → StsProxy (counts AssumeRole) → moto.
    let counter = StsProxy::start(moto.port());
    let proxy = ExpiryProxy::start(counter.addr(), cfg.lifetime);
    let redis = RedisServer::start().await;
    let secret = random_string(48);
    let key = setup::cache_key();
    let margin = format!("{}s", cfg.margin.as_secs());
    let mut replicas = Vec::new();
    for i in 1..=2 {
        replicas.push(
            setup::broker(moto.seed(), &proxy.endpoint(), &secret)
                .name(&format!("steady-replica-{i}"))
                .cache_url(&redis.url())
                .env("BROKER_CACHE_KEY", &key)
                .env("BROKER_CREDENTIAL_TTL", "15m")
                .env("BROKER_REFRESH_MARGIN", &margin)
                .start()
                .await,
        );
    }
    let minter = standard_minter(&secret);
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(CredentialBrokerClient::new(
            setup::channels(&r.endpoint(), 1).await?.remove(0),
        ));
    }
    // (principal, replica) → request.
    let mut requests = Vec::new();
    for p in 0..cfg.principals {
        let token = minter.for_role(
            &format!("steady-{p:03}@example.com"),
            &moto.seed().roles.read_write,
        );
        for r in 0..clients.len() {
            requests.push((
                p,
                r,
                GetCredentialsRequest {
                    session_id: setup::session_id(),
                    token: token.clone(),
                    role_arn: String::new(),
                    mcp: None,
                },
            ));
        }
    }

    let started = Instant::now();
    let mut keys: BTreeMap<usize, HashSet<String>> = BTreeMap::new();
    let mut served = 0u64;
    while started.elapsed() < cfg.duration {
        let round = requests.iter().map(|(p, r, req)| {
            let mut client = clients[*r].clone();
            let req = req.clone();
            async move { (*p, client.get_credentials(req).await) }
        });
        for (p, answer) in futures::future::join_all(round).await {
            let answer = answer
                .map_err(|s| anyhow::anyhow!("request failed at {:?}: {s}", started.elapsed()))?;
            let creds = answer
                .into_inner()
                .credentials
                .ok_or_else(|| anyhow::anyhow!("answer without credentials"))?;
            keys.entry(p).or_default().insert(creds.access_key_id);
            served += 1;
        }
        tokio::time::sleep(cfg.interval).await;
    }
    let elapsed = started.elapsed();
    // Give a refresh that started in the last round time to finish before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = counter.assume_role_count();
    anyhow::ensure!(
        proxy.rewritten() >= calls as u64,
        "the proxy could not shorten every STS answer ({} rewritten, {calls} calls)",
        proxy.rewritten(),
    );
    let per_principal = calls as f64 / cfg.principals as f64;
    let distinct: Vec<usize> = keys.values().map(HashSet::len).collect();
    let (dmin, dmax) = (
        distinct.iter().copied().min().unwrap_or(0),
        distinct.iter().copied().max().unwrap_or(0),
    );
    // Windows: the first issue at 0, then one refresh per refresh interval that fits.
    let min_windows = 1 + (elapsed.as_secs_f64() / latest.as_secs_f64()).floor() as usize;
    let max_windows = 1 + (elapsed.as_secs_f64() / earliest.as_secs_f64()).floor() as usize;
    let exact = (dmin..=dmax).all(|d| (min_windows..=max_windows).contains(&d))
        && calls == distinct.iter().sum::<usize>();
    let md = format!(
        "{p} principals × 2 replicas sharing Redis, one session per principal per replica, every \
         session asking every {interval:?} for {elapsed:.0?} ({served} requests). STS answers \
         report a {lifetime:?} lifetime (moto's real credentials live 15 min), \
         `BROKER_REFRESH_MARGIN={margin}`, so by the broker's formula each credential is refreshed \
         {earliest:?}–{latest:?} after it was issued: {min_windows}–{max_windows} refresh windows \
         per principal in this run.\n\n\
         | STS calls | per principal | distinct keys served per principal (min–max) | refresh windows per principal | STS calls per principal per window |\n\
         |---|---|---|---|---|\n\
         | {calls} | {per_principal:.2} | {dmin}–{dmax} | {min_windows}–{max_windows} | {per_window:.2} |\n\n\
         Exactly one STS call per principal per refresh window, across both replicas: {v}\n\n\
         In production time the same logic gives, with the defaults (`BROKER_CREDENTIAL_TTL=1h`, \
         margin 5 min): one call per principal every 54–55 min, i.e. 1.09–1.11 calls per credential \
         lifetime while the principal is active, and none while it is idle (refreshes are \
         triggered by requests); with the shortest TTL (15 min, margin 5 min): one call every \
         9–10 min (1.5–1.67 per 15-min lifetime).\n",
        p = cfg.principals,
        interval = cfg.interval,
        lifetime = cfg.lifetime,
        per_window = per_principal / ((min_windows + max_windows) as f64 / 2.0),
        v = verdict(exact),
    );
    report.add(
        "Broker steady state: STS calls per principal per refresh window",
        md,
        json!({
            "principals": cfg.principals,
            "replicas": 2,
            "lifetime_s": cfg.lifetime.as_secs_f64(),
            "margin_s": cfg.margin.as_secs_f64(),
            "elapsed_s": elapsed.as_secs_f64(),
            "requests": served,
            "sts_calls": calls,
            "sts_calls_per_principal": per_principal,
            "distinct_keys_per_principal": distinct,
            "refresh_windows": [min_windows, max_windows],
            "exactly_one_per_window": exact,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_times_follow_the_broker_formula() {
        let s = Duration::from_secs;
        // Margin path: 180 − 70 − [0, 14].
        assert_eq!(refresh_after(s(180), s(70)), (s(96), s(110)));
        // Half-life floor when the margin is large.
        assert_eq!(refresh_after(s(150), s(300)), (s(75), s(75)));
        // Production defaults: 1 h, 5 min → 54–55 min.
        assert_eq!(refresh_after(s(3600), s(300)), (s(3240), s(3300)));
    }
}
