//! Issue 12: a session id is never a credential. Attacks on a victim's MCP session, by someone
//! who learned its id, against the real adapter, broker and moto — in the default mode
//! (`ADAPTER_REQUIRE_AUTH=all`) and in the compatibility mode (`tools`).
//!
//! The stream hijack and the cancellation need a tool call in flight: a [`HeldProxy`] between the
//! adapter and moto's S3 holds the victim's S3 request until the attacks are done, so the window
//! is open for sure (no timing guess), and the test then checks that the victim still gets her
//! own object on her own POST stream.
//!
//! On the code before issue 12, a `GET /mcp` with only `Mcp-Session-Id` (and `Last-Event-ID`)
//! reached rmcp in `tools` mode and received the victim's result, and a token-less
//! `notifications/cancelled` was accepted (202) and cancelled her call.

use std::time::{Duration, Instant};

use e2e::adapter::{Adapter, AdapterBuilder};
use e2e::held_proxy::HeldProxy;
use e2e::mcp::{Call, McpHttp, McpResponse, SESSION_VERSION, next_id, tool_call};
use e2e::stack::BrokerStack;
use e2e::tokens::random_string;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The victim's object, a held S3 in front of moto, and an adapter in `mode`.
struct Fixture {
    // Field order is drop order: the adapter goes before the proxy and the broker.
    adapter: Adapter,
    s3: HeldProxy,
    stack: BrokerStack,
    mcp: McpHttp,
    alice: String,
    mallory: String,
    uri: String,
    text: String,
}

async fn fixture(mode: &str) -> Fixture {
    let stack = BrokerStack::start().await;
    let s3 = HeldProxy::start(stack.moto.port());
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&s3.endpoint())
        .env("ADAPTER_REQUIRE_AUTH", mode)
        .start()
        .await;
    let alice = stack.rw_token("alice");
    let mallory = stack.rw_token("mallory");
    // The victim's object, written straight to moto with her own credentials.
    let key = format!("alice-private-{}.txt", random_string(8));
    let text = format!("alice's private note {}", random_string(16));
    let uri = stack.put_own_object(&alice, &key, &text).await;
    let mcp = McpHttp::new(&adapter.mcp_url());
    Fixture {
        uri,
        adapter,
        s3,
        stack,
        mcp,
        alice,
        mallory,
        text,
    }
}

impl Fixture {
    /// Alice reads her object in `session` with her own token: what every attack test checks she
    /// can still do.
    async fn alice_reads(&self, session: &str) -> McpResponse {
        self.mcp
            .call_tool(
                Some(session),
                Some(&self.alice),
                "bucket_object_text",
                json!({ "s3_uri": self.uri }),
            )
            .await
            .unwrap()
    }

    /// The victim's session: with her token in `all` mode; in `tools` mode the way the incident's
    /// frontend connects, without a token (her first tool call then gives the session its owner).
    async fn victim_session(&self, mode: &str) -> String {
        let token = (mode == "all").then_some(self.alice.as_str());
        self.mcp.open_session(token).await
    }

    /// A raw request to `/mcp` naming `session`, with `token` if any.
    fn raw(
        &self,
        method: reqwest::Method,
        session: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = reqwest::Client::new()
            .request(method, self.mcp.url())
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", SESSION_VERSION);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
    }
}

/// Status and headers only: a GET that is wrongly let through answers 200 with an event stream
/// that never ends; dropping the response closes it.
async fn status_of(request: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap) {
    let response = request.send().await.expect("the adapter answers");
    (response.status(), response.headers().clone())
}

/// Who attacks, and what they must get: no token → 401 with the challenge, a token of another
/// subject → 403.
fn expected(token: Option<&str>) -> StatusCode {
    if token.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Every way to name a session without being its owner: GET event streams (new and resumed),
/// DELETE, notifications (cancel among them), a JSON-RPC reply, a batch, and a tool call. Each
/// must be refused with `expected(token)`; returns how many were tried.
async fn attack_every_path(
    fx: &Fixture,
    session: &str,
    token: Option<&str>,
    victim_id: i64,
) -> usize {
    let want = expected(token);
    let who = if token.is_some() {
        "mallory's token"
    } else {
        "no token"
    };
    let mut tried = 0;
    for last_event_id in [
        None,
        Some("0"),
        Some("1"),
        Some("0/0"),
        Some("1/0"),
        Some("2/0"),
    ] {
        let mut request = fx
            .raw(reqwest::Method::GET, session, token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let (status, headers) = status_of(request).await;
        assert_eq!(
            status, want,
            "GET event stream, Last-Event-ID {last_event_id:?}, {who}"
        );
        assert!(
            headers.contains_key("www-authenticate"),
            "GET refusal carries the challenge ({who})"
        );
        tried += 1;
    }
    let bodies = [
        (
            "notifications/cancelled",
            json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": { "requestId": victim_id, "reason": "attacker" } }),
        ),
        (
            "notifications/initialized",
            json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        ),
        (
            "a JSON-RPC reply",
            json!({ "jsonrpc": "2.0", "id": "srv-0", "result": { "roots": [] } }),
        ),
        (
            "a JSON-RPC error reply",
            json!({ "jsonrpc": "2.0", "id": "srv-0", "error": { "code": -1, "message": "x" } }),
        ),
        (
            "a batch of ping and tools/list",
            json!([{ "jsonrpc": "2.0", "id": 1, "method": "ping" },
                   { "jsonrpc": "2.0", "id": 2, "method": "tools/list" }]),
        ),
        (
            "ping",
            json!({ "jsonrpc": "2.0", "id": 3, "method": "ping" }),
        ),
        (
            "tools/list",
            json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/list" }),
        ),
        (
            "tools/call",
            tool_call(5, "bucket_object_text", json!({ "s3_uri": fx.uri })),
        ),
    ];
    for (what, body) in bodies {
        let answer = fx
            .mcp
            .post(
                &body,
                &Call {
                    token,
                    session: Some(session),
                    version: Some(SESSION_VERSION),
                },
            )
            .await
            .expect("the adapter answers");
        assert_eq!(answer.status, want, "POST {what}, {who}: {}", answer.text);
        assert!(!answer.text.contains(&fx.text), "{what} leaked the object");
        tried += 1;
    }
    let (status, _) = status_of(fx.raw(reqwest::Method::DELETE, session, token)).await;
    assert_eq!(status, want, "DELETE, {who}");
    tried + 1
}

/// The stream hijack and the cancellation, while the victim's call waits for S3.
async fn attacks_on_a_call_in_flight_fail_and_the_victim_gets_her_result(mode: &str) {
    let fx = fixture(mode).await;
    let session = fx.victim_session(mode).await;

    let victim_id = next_id();
    let victim = {
        let mcp = fx.mcp.clone();
        let body = tool_call(victim_id, "bucket_object_text", json!({ "s3_uri": fx.uri }));
        let alice = fx.alice.clone();
        let session = session.clone();
        tokio::spawn(async move {
            mcp.post(
                &body,
                &Call {
                    token: Some(&alice),
                    session: Some(&session),
                    version: Some(SESSION_VERSION),
                },
            )
            .await
        })
    };
    // Her call is in flight: its S3 request is held at the proxy.
    fx.s3.wait_for(1, Duration::from_secs(60)).await;

    let started = Instant::now();
    let mut tried = attack_every_path(&fx, &session, None, victim_id).await;
    tried += attack_every_path(&fx, &session, Some(&fx.mallory), victim_id).await;
    // In her own session, mallory may cancel her own requests: one with the victim's request id
    // is accepted there and must not reach the victim's call (a cancellation is looked up in the
    // session it was sent in).
    let own = fx.mcp.open_session(Some(&fx.mallory)).await;
    let cancel = json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                         "params": { "requestId": victim_id, "reason": "attacker" } });
    let answer = fx
        .mcp
        .post(
            &cancel,
            &Call {
                token: Some(&fx.mallory),
                session: Some(&own),
                version: Some(SESSION_VERSION),
            },
        )
        .await
        .expect("the adapter answers");
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    tried += 1;
    println!(
        "ADAPTER_REQUIRE_AUTH={mode}: {tried} attacks on a session with a call in flight refused \
         (401 without a token, 403 with another subject's) in {:?}",
        started.elapsed()
    );
    assert!(!victim.is_finished(), "nothing ended the victim's call");

    fx.s3.release();
    let answer: McpResponse = victim
        .await
        .expect("victim task")
        .expect("the victim's POST is answered");
    assert!(
        answer.is_tool_success(),
        "the victim gets her own result on her own stream: {}",
        answer.text
    );
    assert!(
        answer.text.contains(&fx.text),
        "her object's text: {}",
        answer.text
    );

    // Her session is intact, and she can end it herself.
    let (status, _) = status_of(fx.raw(reqwest::Method::DELETE, &session, Some(&fx.alice))).await;
    assert!(
        status.is_success(),
        "DELETE with the owner's token: {status}"
    );
}

#[tokio::test]
async fn in_flight_attacks_fail_with_the_default_require_auth_all() {
    attacks_on_a_call_in_flight_fail_and_the_victim_gets_her_result("all").await;
}

#[tokio::test]
async fn in_flight_attacks_fail_in_the_tools_compatibility_mode() {
    attacks_on_a_call_in_flight_fail_and_the_victim_gets_her_result("tools").await;
}

/// `tools` mode before the session has an owner: connecting passes without a token, nothing
/// else does; a GET with a token gives the session its owner (so no event stream can exist on a
/// session before it has one), and from then on the owner's token is needed for everything.
#[tokio::test]
async fn a_session_without_an_owner_serves_only_connecting_and_a_token_makes_it_owned() {
    let fx = fixture("tools").await;
    fx.s3.release();
    let session = fx.mcp.open_session(None).await;
    let call = |token| Call {
        token,
        session: Some(&session),
        version: Some(SESSION_VERSION),
    };
    for (what, body) in [
        (
            "ping",
            json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }),
        ),
        (
            "tools/list",
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
        ),
    ] {
        let answer = fx.mcp.post(&body, &call(None)).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{what} before an owner");
    }
    // Not even before an owner: streams, DELETE, replies, other notifications, batches, tools.
    for (what, body) in [
        (
            "notifications/cancelled",
            json!({ "jsonrpc": "2.0", "method": "notifications/cancelled", "params": { "requestId": 1 } }),
        ),
        (
            "a reply",
            json!({ "jsonrpc": "2.0", "id": "srv-1", "result": {} }),
        ),
        (
            "a batch",
            json!([{ "jsonrpc": "2.0", "id": 1, "method": "ping" }]),
        ),
        (
            "tools/call",
            tool_call(
                3,
                "bucket_objects_list",
                json!({ "bucket": fx.stack.seed().buckets.demo }),
            ),
        ),
    ] {
        let answer = fx.mcp.post(&body, &call(None)).await.unwrap();
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what} without a token"
        );
    }
    let (status, _) = status_of(
        fx.raw(reqwest::Method::GET, &session, None)
            .header("accept", "text/event-stream"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "token-less GET before an owner"
    );
    let (status, _) = status_of(fx.raw(reqwest::Method::DELETE, &session, None)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "token-less DELETE before an owner"
    );

    // Alice opens the event stream with her token: that binds the session to her.
    let stream = fx
        .raw(reqwest::Method::GET, &session, Some(&fx.alice))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK, "the owner's event stream");
    for token in [None, Some(fx.mallory.as_str())] {
        let answer = fx
            .mcp
            .post(
                &json!({ "jsonrpc": "2.0", "id": 9, "method": "ping" }),
                &call(token),
            )
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            expected(token),
            "ping after the owner bound, {token:?}"
        );
    }
    let answer = fx.alice_reads(&session).await;
    assert!(answer.is_tool_success(), "{}", answer.text);
    drop(stream);
}

/// The GET/DELETE/notification/reply/batch matrix on an owned session, without a token and with
/// another subject's, in both modes (no call in flight).
#[tokio::test]
async fn every_path_into_an_owned_session_needs_the_owners_token_in_both_modes() {
    for mode in ["all", "tools"] {
        let fx = fixture(mode).await;
        fx.s3.release();
        let session = fx.victim_session(mode).await;
        // Give the session its owner in `tools` mode too (and check she is served).
        let answer = fx.alice_reads(&session).await;
        assert!(answer.is_tool_success(), "{mode}: {}", answer.text);
        let tried = attack_every_path(&fx, &session, None, 1).await
            + attack_every_path(&fx, &session, Some(&fx.mallory), 1).await;
        println!("ADAPTER_REQUIRE_AUTH={mode}: {tried} requests into alice's session refused");
        let answer = fx.alice_reads(&session).await;
        assert!(
            answer.is_tool_success(),
            "{mode}: alice is still served: {}",
            answer.text
        );
    }
}

/// In `all` mode the token of the `initialize` binds the session at once: another user who
/// learns the id right away cannot take it, not even with a valid token of their own.
#[tokio::test]
async fn the_initializing_token_owns_the_session_from_the_start() {
    let fx = fixture("all").await;
    fx.s3.release();
    let session = fx.mcp.open_session(Some(&fx.alice)).await;
    let answer = fx
        .mcp
        .post(
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }),
            &Call {
                token: Some(&fx.mallory),
                session: Some(&session),
                version: Some(SESSION_VERSION),
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    let answer: Value = fx.alice_reads(&session).await.result().clone();
    assert!(answer.to_string().contains(&fx.text), "{answer}");
}

/// Resident memory of a process, from `/proc/<pid>/status` (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS line")
}

/// The bar of issue 12 for a release build, and a looser one for a debug build (whose futures and
/// allocations are larger); which one applies follows from where the binary was built.
fn flood_bar_kib() -> (u64, &'static str) {
    let bin = e2e::tools::adapter_bin();
    if bin.components().any(|c| c.as_os_str() == "release") {
        (16 * 1024, "release build: the issue's bar")
    } else {
        (
            24 * 1024,
            "debug build: a looser bound; the release figure is measured by hand",
        )
    }
}

/// 3,000 anonymous `initialize` requests in `tools` mode cost a bounded amount of memory (at most
/// `ADAPTER_MAX_ANONYMOUS_SESSIONS` sessions without an owner exist; the rest get 503 with
/// Retry-After), and a real user is served right after.
#[tokio::test]
async fn an_anonymous_initialize_flood_is_bounded_and_a_real_user_is_served_after() {
    const FLOOD: usize = 3000;
    const CONCURRENCY: usize = 32;
    let fx = fixture("tools").await;
    fx.s3.release();
    let pid = fx.adapter.pid();
    // Warm up the paths a real user takes, so the figure is what the flood adds.
    let warm = fx.mcp.open_session(Some(&fx.alice)).await;
    let answer = fx.alice_reads(&warm).await;
    assert!(answer.is_tool_success(), "{}", answer.text);
    for _ in 0..20 {
        fx.mcp.open_session(None).await;
    }
    let before = rss_kib(pid);

    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": { "protocolVersion": SESSION_VERSION, "capabilities": {},
                    "clientInfo": { "name": "flood", "version": "1" } }
    });
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let mcp = fx.mcp.clone();
        let init = init.clone();
        workers.push(tokio::spawn(async move {
            let (mut opened, mut busy) = (0usize, 0usize);
            for _ in (worker..FLOOD).step_by(CONCURRENCY) {
                let answer = mcp.post(&init, &Call::default()).await.expect("answered");
                match answer.status {
                    StatusCode::OK => opened += 1,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert_eq!(answer.header("retry-after"), Some("1"));
                        busy += 1;
                    }
                    other => panic!("initialize in a flood answered {other}: {}", answer.text),
                }
            }
            (opened, busy)
        }));
    }
    let (mut opened, mut busy) = (0, 0);
    for worker in workers {
        let (o, b) = worker.await.unwrap();
        opened += o;
        busy += b;
    }
    let elapsed = started.elapsed();
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    let (bar, which) = flood_bar_kib();
    println!(
        "flood: {FLOOD} anonymous initializes ({CONCURRENCY} at a time) in {elapsed:.1?}: {opened} \
         sessions opened, {busy} refused with 503; adapter RSS {before} KiB -> {after} KiB \
         (+{:.1} MiB; bar {} MiB, {which})",
        grown as f64 / 1024.0,
        bar / 1024
    );
    assert_eq!(opened + busy, FLOOD);
    // 20 warm-up sessions plus the flood's stay within the limit (plus what was in flight when
    // the limit was reached).
    assert!(
        opened + 20 <= 256 + CONCURRENCY,
        "{opened} ownerless sessions opened past ADAPTER_MAX_ANONYMOUS_SESSIONS=256"
    );
    assert!(busy > 0, "the limit was never reached");
    assert!(
        grown <= bar,
        "the flood grew the adapter by {grown} KiB, more than {bar} KiB ({which})"
    );

    // A real user right after: a new session with her token, and a tool call.
    let session = fx.mcp.open_session(Some(&fx.alice)).await;
    let answer = fx.alice_reads(&session).await;
    assert!(
        answer.is_tool_success() && answer.text.contains(&fx.text),
        "the real user after the flood: {}",
        answer.text
    );
}
