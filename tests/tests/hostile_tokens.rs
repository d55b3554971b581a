//! Hostile tokens against the real broker and the real adapter.
//!
//! The corpus (`e2e::hostile::corpus`, over 80 tokens) is sent to the broker as `ExchangeToken`
//! and as `GetCredentials` on a fresh session, and to the adapter as a `tools/call` both without a
//! session (2026-07-28, the adapter calls `ExchangeToken`) and inside a session (the adapter calls
//! `GetCredentials`). Each must get exactly its expected gRPC code and HTTP status; no answer may
//! contain the token; neither process may panic; nothing reaches STS; and both keep serving a
//! valid token afterwards.

use e2e::adapter::AdapterBuilder;
use e2e::hostile::{HostileToken, TrustedKeys, corpus, hostile_broker};
use e2e::leaks::{Secret, leaked};
use e2e::mcp::McpHttp;
use e2e::rpc::{exchange, get_credentials};
use e2e::stack::{BrokerStack, new_session_id};
use e2e::tokens::Claims;
use serde_json::json;
use tonic::Code;

/// The secret forms of a hostile token to look for in answers and logs: the whole token and, for
/// a long one, its signature and payload parts (a log that prints part of a token still leaks).
fn token_secrets(case: &HostileToken) -> Vec<Secret> {
    let mut out = vec![Secret::new(case.name.clone(), case.token.clone())];
    for (i, part) in case.token.split('.').enumerate() {
        if part.len() >= 24 && i > 0 {
            out.push(Secret::new(format!("{} (part {i})", case.name), part));
        }
    }
    out
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(160)
        .collect()
}

#[tokio::test]
async fn every_hostile_token_is_refused_with_its_code_at_broker_and_adapter() {
    run_corpus(|case| case.known_bug.is_none()).await;
}

/// The corpus entries listed in `e2e::hostile::KNOWN_BUGS`: this fails while any is answered
/// wrongly, and says which.
#[tokio::test]
async fn known_bugs_in_the_corpus() {
    run_corpus(|case| case.known_bug.is_some()).await;
}

async fn run_corpus(select: impl Fn(&HostileToken) -> bool) {
    let keys = TrustedKeys::generate();
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, keys.jwks().to_string()).unwrap();
    let jwks_path = jwks_path.to_str().unwrap().to_string();
    let stack = BrokerStack::start_with(|b| hostile_broker(b, &keys, &jwks_path)).await;
    // `tools` mode: the fresh session below opens without a token, so the hostile token is the
    // one that would bind it (in the default `all` mode initialize itself needs a valid token).
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .env("ADAPTER_REQUIRE_AUTH", "tools")
        .start()
        .await;
    let rw = stack.seed().roles.read_write.clone();
    let bucket = stack.seed().buckets.demo.clone();
    let all = corpus(&keys, &rw);
    assert!(all.len() >= 30, "corpus has {} tokens", all.len());
    let cases: Vec<HostileToken> = all.into_iter().filter(|c| select(c)).collect();
    let mcp = McpHttp::new(&adapter.mcp_url());
    let mut c = stack.broker.client().await;
    let mut wrong: Vec<String> = Vec::new();
    let mut requests = 0usize;
    let mut all_secrets: Vec<Secret> = Vec::new();

    for case in &cases {
        let secrets = token_secrets(case);
        // --- broker: ExchangeToken and GetCredentials on a fresh session
        for (rpc, result) in [
            (
                "ExchangeToken",
                exchange(&mut c, &case.token, "").await.map(|_| ()),
            ),
            (
                "GetCredentials",
                get_credentials(&mut c, &new_session_id(), &case.token, "")
                    .await
                    .map(|_| ()),
            ),
        ] {
            requests += 1;
            match result {
                Ok(()) => wrong.push(format!("{}: broker {rpc} served it", case.name)),
                Err(status) => {
                    if status.code() != case.broker {
                        wrong.push(format!(
                            "{}: broker {rpc} expected {:?}, got {:?}: {}",
                            case.name,
                            case.broker,
                            status.code(),
                            status.message()
                        ));
                    }
                    if status.message().is_empty() {
                        wrong.push(format!("{}: broker {rpc} gave no reason", case.name));
                    }
                    let found = leaked(status.message(), &secrets);
                    if !found.is_empty() {
                        wrong.push(format!(
                            "{}: broker {rpc} message echoes {found:?}",
                            case.name
                        ));
                    }
                }
            }
        }

        // --- adapter: a tool call without a session, and one inside a fresh session
        let session = mcp.open_session(None).await;
        for (mode, session) in [("sessionless", None), ("session", Some(session.as_str()))] {
            requests += 1;
            let answer = mcp
                .call_tool(
                    session,
                    Some(&case.token),
                    "bucket_objects_list",
                    json!({ "bucket": bucket }),
                )
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                // A header too large to read: the server answers 431 and closes at once, and a
                // client still writing it may see the connection reset before it reads the 431.
                // The same refusal (the cases after this one show the adapter still serving).
                Err(e) if case.adapter == 431 && reset_while_writing(&e) => continue,
                Err(e) => {
                    wrong.push(format!(
                        "{}: adapter ({mode}) transport error: {e}",
                        case.name
                    ));
                    continue;
                }
            };
            if answer.status.as_u16() != case.adapter {
                wrong.push(format!(
                    "{}: adapter ({mode}) expected HTTP {}, got {}: {}",
                    case.name,
                    case.adapter,
                    answer.status,
                    first_line(&answer.text)
                ));
            }
            let challenge = answer.header("www-authenticate").unwrap_or("");
            let want_challenge = match case.adapter {
                401 => Some("error=\"invalid_token\""),
                403 => Some("error=\"insufficient_scope\""),
                400 => Some("error=\"invalid_request\""),
                _ => None,
            };
            if let Some(want) = want_challenge
                && !challenge.contains(want)
            {
                wrong.push(format!(
                    "{}: adapter ({mode}) WWW-Authenticate {challenge:?} lacks {want}",
                    case.name
                ));
            }
            let found = leaked(&answer.visible_text(), &secrets);
            if !found.is_empty() {
                wrong.push(format!(
                    "{}: adapter ({mode}) answer echoes {found:?}",
                    case.name
                ));
            }
        }
        all_secrets.extend(secrets);
    }

    // Both processes still serve a valid token, and only that token reached STS.
    let valid = keys.hs().mint(&Claims::new("alice").role_arn(&rw));
    exchange(&mut c, &valid, "")
        .await
        .expect("the broker still serves a valid token");
    let session = mcp.open_session(Some(&valid)).await;
    let listed = mcp
        .call_tool(
            Some(&session),
            Some(&valid),
            "bucket_objects_list",
            json!({ "bucket": bucket }),
        )
        .await
        .expect("adapter reachable");
    assert!(
        listed.is_tool_success(),
        "the adapter still serves a valid token: {}",
        listed.text
    );
    let sts_calls = stack.proxy.assume_role_count();

    let broker_log = stack.broker.log_text();
    let adapter_log = adapter.log_text();
    for (name, log) in [("broker", &broker_log), ("adapter", &adapter_log)] {
        if log.contains("panicked") {
            wrong.push(format!("{name} log shows a panic"));
        }
        let found = leaked(log, &all_secrets);
        if !found.is_empty() {
            wrong.push(format!("{name} log holds hostile tokens: {found:?}"));
        }
    }
    let by_code = |code: Code| cases.iter().filter(|c| c.broker == code).count();
    println!(
        "hostile tokens: {} tokens ({} UNAUTHENTICATED, {} PERMISSION_DENIED), {requests} refused requests \
         (broker ExchangeToken + GetCredentials, adapter sessionless + session), {} AssumeRole calls, \
         {} wrong answers",
        cases.len(),
        by_code(Code::Unauthenticated),
        by_code(Code::PermissionDenied),
        sts_calls,
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    assert_eq!(
        sts_calls, 1,
        "only the one valid principal reached STS (hostile tokens are refused before it)"
    );
}

/// Whether a request failed because the server closed the connection while it was being sent
/// (`EPIPE`, `ECONNRESET`), as opposed to a server that was not there or did not answer.
fn reset_while_writing(error: &str) -> bool {
    error.contains("Broken pipe") || error.contains("Connection reset")
}
