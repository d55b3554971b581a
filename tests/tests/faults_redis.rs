//! redis-server killed (SIGKILL, its data gone) and restarted under load, seen from the users'
//! side: two broker replicas sharing one Redis, an adapter in front of each, tool calls through
//! both adapters and `GetCredentials` straight to both replicas, for a read-write and a read-only
//! user.
//!
//! - No wrong credential: every access key is served to one subject only; the read-only user's
//!   writes are always `AccessDenied` (never served with the writer's credentials) and the
//!   writer's writes never are.
//! - Fail closed: while Redis is down, answers are UNAVAILABLE (broker) or a tool error naming the
//!   broker (adapter), whose message names the store.
//! - Recovery within 5 s of redis-server answering again, on every path (measured and printed).
//!
//! The broker-only version of this (health NOT_SERVING/SERVING, moto-checked identities) is
//! `redis_store::redis_restart_under_load_recovers_within_5s_and_never_serves_a_wrong_credential`.

use std::time::{Duration, Instant};

use e2e::load::{Outcome, Recorder, Sample, first_served_after, keys_by_subject, tally};
use e2e::mcp::McpHttp;
use e2e::redis::RedisServer;
use e2e::stack::Replicas;
use serde_json::json;

/// Seconds from `base` to `t` (negative: before).
fn offset(t: Instant, base: Instant) -> f64 {
    if t >= base {
        t.duration_since(base).as_secs_f64()
    } else {
        -base.duration_since(t).as_secs_f64()
    }
}

/// What a sample must never be: a wrong credential, or a failure that is not a clear
/// UNAVAILABLE / broker-unavailable tool error.
fn judge(s: &Sample) -> Option<String> {
    let writer = s.subject == "alice";
    let put = (100..200).contains(&s.worker); // put workers are numbered from 100, gRPC from 200
    let wrong = match &s.outcome {
        Outcome::Served(detail) if detail.starts_with("WRONG-SUBJECT") => true,
        Outcome::Served(_) => put && !writer,
        Outcome::ToolError { code, message } if code == "CredentialBrokerUnavailable" => {
            !message.contains("credential broker")
        }
        // The read-only user's write, refused by S3 on his own credentials: right.
        Outcome::ToolError { code, .. } if code == "AccessDenied" => !put || writer,
        Outcome::Grpc { code, .. } => *code != tonic::Code::Unavailable,
        _ => true,
    };
    wrong.then(|| format!("{} worker {} {:?}", s.subject, s.worker, s.outcome))
}

#[tokio::test]
async fn redis_killed_and_restarted_under_load_serves_no_wrong_credential_and_recovers_within_5s() {
    let mut redis = RedisServer::start().await;
    let replicas = Replicas::start(&redis.url(), 2).await;
    let adapters = replicas
        .adapters(|b| b.env("ADAPTER_BROKER_TIMEOUT", "2s"))
        .await;
    let Replicas {
        brokers,
        proxy: _proxy,
        moto,
        minter,
        ..
    } = replicas;
    let seed = moto.seed().clone();
    let demo = seed.buckets.demo.clone();
    let users = [
        ("alice", minter.for_role("alice", &seed.roles.read_write)),
        ("bob", minter.for_role("bob", &seed.roles.read_only)),
    ];
    let recorder = Recorder::new();
    let pause = Duration::from_millis(25);
    let (mut list_worker, mut put_worker, mut grpc_worker) = (0, 100, 200);
    for adapter in &adapters {
        let mcp = McpHttp::new(&adapter.mcp_url());
        for (subject, token) in &users {
            let session = mcp.open_session(Some(token)).await;
            recorder.tool_worker(
                list_worker,
                mcp.clone(),
                subject,
                token,
                Some(session.clone()),
                "bucket_objects_list",
                json!({"bucket": demo}),
                pause,
            );
            list_worker += 1;
            recorder.tool_worker(
                put_worker,
                mcp.clone(),
                subject,
                token,
                Some(session),
                "bucket_objects_put",
                json!({"bucket": demo, "items": [{"key": format!("load/{subject}.txt"), "text": subject}]}),
                pause,
            );
            put_worker += 1;
        }
    }
    let grpc_users: Vec<(&str, &str)> = users.iter().map(|(s, t)| (*s, t.as_str())).collect();
    recorder
        .grpc_workers(&brokers, &grpc_users, &mut grpc_worker, pause)
        .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    redis.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart().await;
    let back = Instant::now();
    // Until every path (adapter x subject list workers, broker x subject grpc workers) is served
    // again, at most 15 s, then one more second of load.
    let paths = |samples: &[Sample]| {
        let mut firsts = Vec::new();
        for worker in (0..list_worker).chain(200..grpc_worker) {
            let mine: Vec<Sample> = samples
                .iter()
                .filter(|s| s.worker == worker)
                .cloned()
                .collect();
            let first = first_served_after(&mine, back)
                .into_values()
                .next()
                .flatten();
            firsts.push((worker, first));
        }
        firsts
    };
    let deadline = back + Duration::from_secs(15);
    while Instant::now() < deadline {
        if paths(&recorder.samples()).iter().all(|(_, f)| f.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    recorder.stop().await;

    let samples = recorder.samples();
    let in_outage =
        |s: &Sample| s.started > killed + Duration::from_millis(200) && s.finished < back;
    let wrong: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            judge(s).map(|w| {
                format!(
                    "{w} (started {:+.2} s from the kill)",
                    offset(s.started, killed)
                )
            })
        })
        .collect();
    let (keys, shared) = keys_by_subject(&samples);
    let outage: Vec<Sample> = samples.iter().filter(|s| in_outage(s)).cloned().collect();
    // The outage's own errors, judged by what they are: a read-only user's write that S3 refused
    // on his own credentials (served just before the kill, or from a still-valid credential) is a
    // right answer (see `judge`), not an outage error that should name the store.
    let outage_messages: Vec<String> = outage
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::ToolError { code, message } if code == "CredentialBrokerUnavailable" => {
                Some(message.clone())
            }
            Outcome::Grpc { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    let not_naming_store: Vec<&String> = outage_messages
        .iter()
        .filter(|m| {
            let m = m.to_lowercase();
            !(m.contains("redis") || m.contains("store"))
        })
        .collect();
    let firsts = paths(&samples);
    let slowest = firsts.iter().filter_map(|(_, f)| *f).max();
    println!(
        "redis restart under adapter+broker load: {} calls {:?}; outage {:.1?}: {} calls {:?}; \
         {} wrong; access keys per subject {:?}; keys served to two subjects: {}; recovery after \
         redis-server answered again, per path (worker, first success): {firsts:?}, slowest {slowest:?}; \
         example outage message: {:?}",
        samples.len(),
        tally(&samples),
        back.duration_since(killed),
        outage.len(),
        tally(&outage),
        wrong.len(),
        keys.iter()
            .map(|(s, k)| (s.clone(), k.len()))
            .collect::<Vec<_>>(),
        shared.len(),
        outage_messages.first()
    );
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    assert!(
        shared.is_empty(),
        "credentials served to another subject: {shared:?}"
    );
    assert!(
        outage.iter().filter(|s| !s.outcome.is_served()).count() > 0,
        "the outage was seen (and failed closed)"
    );
    assert!(
        not_naming_store.is_empty(),
        "outage errors that do not name the store: {not_naming_store:?}"
    );
    for (worker, first) in &firsts {
        assert!(
            first.is_some_and(|d| d <= Duration::from_secs(5)),
            "path of worker {worker} did not recover within 5 s: {first:?}"
        );
    }
    for adapter in &adapters {
        assert!(!adapter.log_text().contains("panicked"));
    }
}
