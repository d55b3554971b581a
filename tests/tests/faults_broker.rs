//! Faults around the adapter: the broker killed under adapter load, and the adapter itself
//! stopped with SIGTERM while tool calls are in flight.
//!
//! The adapter is given VALID ambient AWS credentials (environment and `~/.aws`) of an IAM user
//! with no S3 rights: if it ever fell back to them (the incident), tool calls would answer
//! `AccessDenied` instead of naming the broker, and moto would record the key as used.

use std::time::{Duration, Instant};

use e2e::adapter::AdapterBuilder;
use e2e::load::{Outcome, Recorder, first_served_after, tally};
use e2e::mcp::McpHttp;
use e2e::moto::Moto;
use e2e::stack::{standard_broker, standard_minter};
use e2e::sts_proxy::StsProxy;
use e2e::tokens::random_string;
use serde_json::json;

#[tokio::test]
async fn broker_killed_under_adapter_load_every_call_names_the_broker_and_service_resumes() {
    let moto = Moto::start().await;
    let proxy = StsProxy::start(moto.port());
    let secret = random_string(48);
    // Restarted below behind the running adapter: one port for both starts.
    let builder = standard_broker(moto.seed(), &proxy.endpoint(), &secret).restartable();
    let mut broker = builder.clone().start().await;
    let ambient = moto.seed().users.ambient.clone();
    let adapter = AdapterBuilder::new(&broker.endpoint())
        .s3_endpoint(&moto.endpoint())
        .env("ADAPTER_BROKER_TIMEOUT", "1s")
        .ambient_credentials(&ambient.access_key_id, &ambient.secret_access_key)
        .start()
        .await;
    let minter = standard_minter(&secret);
    let seed = moto.seed().clone();
    let mcp = McpHttp::new(&adapter.mcp_url());
    let recorder = Recorder::new();
    let mut worker = 0;
    for (subject, role) in [
        ("alice", &seed.roles.read_write),
        ("bob", &seed.roles.read_only),
    ] {
        let token = minter.for_role(subject, role);
        for in_session in [true, false, true] {
            let session = if in_session {
                Some(mcp.open_session(Some(&token)).await)
            } else {
                None
            };
            recorder.tool_worker(
                worker,
                mcp.clone(),
                subject,
                &token,
                session,
                "bucket_objects_list",
                json!({"bucket": seed.buckets.demo}),
                Duration::from_millis(20),
            );
            worker += 1;
        }
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = Instant::now();
    broker.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted = Instant::now();
    let broker = builder.start().await;
    let serving = Instant::now();
    // Until every subject has been served again (bounded), then a little more.
    let deadline = serving + Duration::from_secs(20);
    while Instant::now() < deadline {
        let firsts = first_served_after(&recorder.samples(), serving);
        if firsts.len() == 2 && firsts.values().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    recorder.stop().await;

    let samples = recorder.samples();
    // Calls that started after the kill (+100 ms for calls already past the broker) and ended
    // before the new broker was started: the outage. (Not "before SERVING": the new broker
    // serves before the harness's next health poll sees it, so a call in between may already be
    // served, as it should be.)
    let outage: Vec<_> = samples
        .iter()
        .filter(|s| s.started > killed + Duration::from_millis(100) && s.finished < restarted)
        .collect();
    let wrong: Vec<String> = outage
        .iter()
        .filter(|s| match &s.outcome {
            Outcome::ToolError { code, message } => {
                code != "CredentialBrokerUnavailable" || !message.contains("credential broker")
            }
            _ => true,
        })
        .map(|s| format!("{} {:?}", s.subject, s.outcome))
        .collect();
    let slowest_outage_answer = outage
        .iter()
        .map(|s| s.finished.duration_since(s.started))
        .max()
        .unwrap_or_default();
    let resumed = first_served_after(&samples, serving);
    let example = outage.iter().find_map(|s| match &s.outcome {
        Outcome::ToolError { message, .. } => Some(message.clone()),
        _ => None,
    });
    let after: Vec<_> = samples.iter().filter(|s| s.started > serving).collect();
    let after_tally = tally(&after.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
    let ambient_used = moto.key_last_used(&ambient.access_key_id).await;
    println!(
        "broker killed under adapter load: {} tool calls in all {:?}; {} during the outage, {} of them wrong; \
         slowest answer during the outage {slowest_outage_answer:.2?}; broker restarted {:.1?} after the kill, \
         SERVING {:.2?} later; first success per subject after SERVING {resumed:?}; after: {after_tally:?}; \
         ambient key used: {ambient_used}; outage message: {example:?}",
        samples.len(),
        tally(&samples),
        outage.len(),
        wrong.len(),
        restarted.duration_since(killed),
        serving.duration_since(restarted),
    );
    assert!(!outage.is_empty(), "calls were made during the outage");
    assert!(
        wrong.is_empty(),
        "answers during the outage that do not name the broker: {wrong:?}"
    );
    assert!(
        resumed.values().all(Option::is_some) && resumed.len() == 2,
        "service resumed for every subject when the broker returned: {resumed:?}"
    );
    assert_eq!(
        ambient_used["used"],
        json!(false),
        "the ambient key was used: {ambient_used}"
    );
    assert!(!adapter.log_text().contains("panicked"));
    drop(broker);
}

#[tokio::test]
async fn adapter_sigterm_drains_tool_calls_in_flight() {
    let moto = Moto::start().await;
    let proxy = StsProxy::start(moto.port());
    let secret = random_string(48);
    let broker = standard_broker(moto.seed(), &proxy.endpoint(), &secret)
        .start()
        .await;
    let mut adapter = AdapterBuilder::new(&broker.endpoint())
        .s3_endpoint(&moto.endpoint())
        .start()
        .await;
    let minter = standard_minter(&secret);
    let rw = moto.seed().roles.read_write.clone();
    let mcp = McpHttp::new(&adapter.mcp_url());
    // Thirty users, each with a session; their first tool call needs an STS call (cold), so a
    // burst of them is seconds of work in flight.
    let mut sessions = Vec::new();
    for i in 0..30 {
        let token = minter.for_role(&format!("user{i}"), &rw);
        let session = mcp.open_session(Some(&token)).await;
        sessions.push((token, session));
    }
    // The same flow without a signal works (initialize and a tool call, with a token each).
    let control_token = minter.for_role("control", &rw);
    let control_session = mcp.open_session(Some(&control_token)).await;
    let control = mcp
        .call_tool(
            Some(&control_session),
            Some(&control_token),
            "bucket_objects_list",
            json!({"bucket": "demo-bucket"}),
        )
        .await
        .expect("adapter answers");
    assert!(control.is_tool_success(), "control call: {}", control.text);
    let calls: Vec<_> = sessions
        .into_iter()
        .map(|(token, session)| {
            let mcp = mcp.clone();
            tokio::spawn(async move {
                mcp.call_tool(
                    Some(&session),
                    Some(&token),
                    "bucket_objects_list",
                    json!({"bucket": "demo-bucket"}),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let sent_sigterm = Instant::now();
    adapter.sigterm();
    let mut served = 0;
    let mut refused_at_connect = 0;
    let mut wrong = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(answer) if answer.is_tool_success() => served += 1,
            Ok(answer) => wrong.push(format!("HTTP {}: {}", answer.status, answer.text)),
            // A call whose connection was not yet accepted when the listener closed.
            Err(e) if e.contains("onnect") => refused_at_connect += 1,
            Err(e) => wrong.push(format!("lost: {e}")),
        }
    }
    let drained = sent_sigterm.elapsed();
    let status = adapter
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the adapter exits after draining");
    let log = adapter.log_text();
    println!(
        "adapter SIGTERM with 30 tool calls in flight: {served} served, {refused_at_connect} refused at connect, \
         {} cut off; all answered {drained:.2?} after SIGTERM; exit {status:?}",
        wrong.len()
    );
    assert!(wrong.is_empty(), "calls in flight were cut off: {wrong:?}");
    assert!(served > 0, "calls in flight at SIGTERM were served");
    assert!(status.success(), "exit status {status:?}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains("panicked"));
    // After the exit nothing listens any more.
    let after = mcp
        .call_tool(
            None,
            Some(&minter.for_role("late", &rw)),
            "bucket_objects_list",
            json!({"bucket": "demo-bucket"}),
        )
        .await;
    assert!(after.is_err(), "nothing answers after the exit");
}
