//! The operator plane (`credbroker.v1.SessionAdmin`) and the audit trail, against the real broker:
//! the credential plane answers no operator method; SessionAdmin refuses anonymous and user
//! callers and serves an operator; the audit log of a run holds its decisions and no secret, and
//! `credential-broker audit verify` accepts it and refuses a changed, shortened or reordered copy;
//! with an unwritable audit log (`/dev/full`) no credential and no operator answer is served; and
//! `mint-token` takes no secret on its command line and no `sub` through `--claim`.

use std::process::Command;
use std::time::{Duration, Instant};

use credbroker_proto::v1::{ListSessionsRequest, ListSessionsResponse};
use e2e::broker::{Broker, OPERATOR};
use e2e::leaks::{Secret, assert_no_secrets};
use e2e::process::Scratch;
use e2e::rpc::{self, bind, exchange, expect_code, get_credentials};
use e2e::stack::{BrokerStack, new_session_id};
use e2e::tokens::{Claims, random_string};
use e2e::tools;
use serde_json::Value;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Calls `/credbroker.v1.CredentialBroker/<method>` directly, as a client built from the old
/// contract would.
async fn call_on_credential_plane(broker: &Broker, method: &str) -> Result<(), tonic::Status> {
    let channel = e2e::broker::channel(&broker.endpoint()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/credbroker.v1.CredentialBroker/{method}")
            .parse()
            .unwrap();
    let codec = tonic_prost::ProstCodec::<ListSessionsRequest, ListSessionsResponse>::default();
    grpc.unary(
        tonic::Request::new(ListSessionsRequest::default()),
        path,
        codec,
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn the_credential_plane_answers_no_operator_method() {
    let stack = BrokerStack::start().await;
    for method in ["DescribeSession", "ListSessions", "RevokeSession"] {
        expect_code(
            call_on_credential_plane(&stack.broker, method).await,
            Code::Unimplemented,
            &format!("CredentialBroker/{method}"),
        );
    }
}

#[tokio::test]
async fn session_admin_refuses_anonymous_and_user_callers_and_serves_an_operator() {
    let stack = BrokerStack::start().await;
    let mut c = stack.broker.client().await;
    let session = new_session_id();
    let alice = stack.rw_token("alice");
    let info = bind(&mut c, &session, &alice, "").await.expect("bind");
    let ops = stack.admin().await;

    // Anonymous: UNAUTHENTICATED, on every method.
    let mut anonymous = ops.with_token(None);
    let status = expect_code(
        rpc::list(&mut anonymous, 10, "", "").await,
        Code::Unauthenticated,
        "ListSessions without a token",
    );
    assert!(status.message().contains("authorization"), "{status:?}");
    expect_code(
        rpc::describe_by_handle(&mut anonymous, &info.session_handle).await,
        Code::Unauthenticated,
        "DescribeSession without a token",
    );
    expect_code(
        rpc::revoke_by_handle(&mut anonymous, &info.session_handle).await,
        Code::Unauthenticated,
        "RevokeSession without a token",
    );
    // A forged operator token (another key) and an expired one: UNAUTHENTICATED.
    let forged = e2e::stack::standard_minter(&random_string(48)).mint(&Claims::new(OPERATOR));
    let expired = stack.token(&Claims::new(OPERATOR).expires_in(-3600));
    for (what, token) in [("forged", &forged), ("expired", &expired)] {
        expect_code(
            rpc::revoke_by_handle(&mut ops.with_token(Some(token)), &info.session_handle).await,
            Code::Unauthenticated,
            &format!("RevokeSession with a {what} operator token"),
        );
    }
    // A user's genuine token (even with a role): PERMISSION_DENIED, on every method.
    let mut user = ops.with_token(Some(&alice));
    expect_code(
        rpc::list(&mut user, 10, "", "").await,
        Code::PermissionDenied,
        "ListSessions as alice",
    );
    expect_code(
        rpc::describe_by_id(&mut user, &session).await,
        Code::PermissionDenied,
        "DescribeSession as alice",
    );
    expect_code(
        rpc::revoke_by_handle(&mut user, &info.session_handle).await,
        Code::PermissionDenied,
        "RevokeSession as alice",
    );
    // Nothing the refused callers did changed the session.
    get_credentials(&mut c, &session, &alice, "")
        .await
        .expect("alice's session is untouched");

    // The operator (a token with no role at all) is served.
    let mut ops = ops;
    let listed = rpc::list_all(&mut ops, 10, "alice").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_handle, info.session_handle);
    let revoked = rpc::revoke_by_handle(&mut ops, &info.session_handle)
        .await
        .expect("operator revokes");
    assert!(revoked.revoked);
    expect_code(
        get_credentials(&mut c, &session, &alice, "").await,
        Code::NotFound,
        "revoked by the operator",
    );
    // And the operator token buys no credential.
    expect_code(
        exchange(&mut c, &stack.operator_token(), "").await,
        Code::PermissionDenied,
        "ExchangeToken with the operator's role-less token",
    );
}

#[tokio::test]
async fn with_no_operator_configured_session_admin_refuses_everyone_and_names_the_setting() {
    let stack = BrokerStack::start_with(|b| b.without_env("BROKER_ADMIN_SUBJECTS")).await;
    let mut ops = stack.admin().await;
    let status = expect_code(
        rpc::list(&mut ops, 10, "", "").await,
        Code::PermissionDenied,
        "ListSessions with no operator configured",
    );
    assert!(
        status.message().contains("BROKER_ADMIN_SUBJECTS"),
        "{status:?}"
    );
}

/// The lines of a JSON-lines file.
fn records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `credential-broker audit verify FILE`: (success, stdout + stderr).
fn verify(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(tools::broker_bin())
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .expect("run audit verify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_audit_log_records_every_decision_without_a_secret_and_verifies() {
    let scratch = Scratch::new("audit");
    let path = scratch.join("audit.log");
    let mut stack =
        BrokerStack::start_with(|b| b.env("BROKER_AUDIT_LOG", path.to_str().unwrap())).await;
    let mut c = stack.broker.client().await;
    let mut ops = stack.admin().await;
    let mut secrets = vec![
        Secret::new("HS256 secret", stack.secret.clone()),
        Secret::new("operator token", stack.operator_token()),
    ];

    let session = new_session_id();
    secrets.push(Secret::new("session id", session.clone()));
    let alice = stack.rw_token("alice");
    secrets.push(Secret::new("alice's token", alice.clone()));
    let bound = bind(&mut c, &session, &alice, "").await.expect("bind");
    for _ in 0..3 {
        let creds = get_credentials(&mut c, &session, &alice, "")
            .await
            .expect("get")
            .credentials
            .unwrap();
        secrets.push(Secret::new("secret key", creds.secret_access_key));
        secrets.push(Secret::new("session token", creds.session_token));
    }
    let renewed = stack.rw_token("alice");
    secrets.push(Secret::new("alice's second token", renewed.clone()));
    get_credentials(&mut c, &session, &renewed, "")
        .await
        .expect("rebind");
    let mallory = stack.rw_token("mallory");
    secrets.push(Secret::new("mallory's token", mallory.clone()));
    expect_code(
        get_credentials(&mut c, &session, &mallory, "").await,
        Code::PermissionDenied,
        "mallory",
    );
    let exchanged = exchange(&mut c, &stack.ro_token("svc"), "")
        .await
        .expect("exchange")
        .credentials
        .unwrap();
    secrets.push(Secret::new("exchanged secret", exchanged.secret_access_key));
    secrets.push(Secret::new("exchanged token", exchanged.session_token));
    expect_code(
        exchange(&mut c, "not-a-jwt", "").await,
        Code::Unauthenticated,
        "garbage",
    );
    expect_code(
        rpc::list(&mut ops.with_token(Some(&alice)), 10, "", "").await,
        Code::PermissionDenied,
        "alice as operator",
    );
    rpc::list_all(&mut ops, 10, "").await;
    rpc::revoke_by_id(&mut ops, &session).await.expect("revoke");
    stack.broker.sigterm();
    stack
        .broker
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("broker exits on SIGTERM");

    let text = std::fs::read_to_string(&path).expect("audit log written");
    assert_no_secrets("audit log", &text, &secrets);
    let lines = records(&text);
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    for expected in [
        "start",
        "credential_issued",
        "session_bound",
        "credential_served",
        "session_rebound",
        "session_refused",
        "token_exchanged",
        "token_refused",
        "admin_call",
        "session_revoked",
        "stop",
    ] {
        assert!(events.contains(&expected), "{expected} missing: {events:?}");
    }
    assert_eq!(events.first(), Some(&"start"));
    assert_eq!(events.last(), Some(&"stop"));
    // Sampled: three warm serves of one session in one minute make at most one record (two if
    // the minute turned in between).
    let served = events.iter().filter(|e| **e == "credential_served").count();
    assert!((1..=2).contains(&served), "{served} served records");
    for line in &lines {
        for member in [
            "time",
            "event",
            "outcome",
            "subject",
            "issuer",
            "role_arn",
            "session",
            "access_key_id",
            "peer",
            "prev",
            "hash",
        ] {
            assert!(line.get(member).is_some(), "{member} missing: {line}");
        }
    }
    let by = |event: &str| lines.iter().find(|l| l["event"] == event).unwrap();
    assert_eq!(
        by("session_bound")["session"],
        bound.session_handle.as_str()
    );
    assert_eq!(by("session_bound")["subject"], "alice");
    assert!(
        by("session_bound")["access_key_id"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert!(
        by("session_bound")["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    assert_eq!(by("session_refused")["subject"], "mallory");
    assert_eq!(
        by("credential_issued")["duration_s"]
            .as_i64()
            .map(|d| d > 0),
        Some(true)
    );
    let refused_admin = lines
        .iter()
        .find(|l| l["event"] == "admin_call" && l["outcome"] == "refused")
        .expect("the refused operator call");
    assert_eq!(refused_admin["subject"], "alice");
    assert_eq!(by("session_revoked")["subject"], OPERATOR);
    assert_eq!(
        by("session_revoked")["session"],
        bound.session_handle.as_str()
    );

    // The chain verifies; a changed, shortened or reordered copy does not.
    let (ok, out) = verify(&path);
    assert!(ok, "{out}");
    let raw: Vec<&str> = text.lines().collect();
    let copy = |name: &str, lines: Vec<&str>| {
        let p = scratch.join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let mut changed = raw.clone();
    let edited = raw[2].replacen("\"outcome\":\"ok\"", "\"outcome\":\"refused\"", 1);
    assert_ne!(edited, raw[2]);
    changed[2] = &edited;
    let (ok, out) = verify(&copy("changed", changed));
    assert!(!ok && out.contains("line 3"), "{out}");
    let mut shortened = raw.clone();
    shortened.remove(4);
    let (ok, out) = verify(&copy("shortened", shortened));
    assert!(!ok && out.contains("line 5"), "{out}");
    let (ok, out) = verify(&copy("head-cut", raw[1..].to_vec()));
    assert!(!ok && out.contains("line 1"), "{out}");
    let mut reordered = raw.clone();
    reordered.swap(3, 4);
    let (ok, out) = verify(&copy("reordered", reordered));
    assert!(!ok && out.contains("line 4"), "{out}");
}

#[tokio::test]
async fn with_an_unwritable_audit_log_nothing_is_served() {
    let stack = BrokerStack::start_with(|b| b).await;
    // A second broker on the same STS and secret, auditing to /dev/full.
    let mut broker =
        e2e::stack::standard_broker(stack.seed(), &stack.proxy.endpoint(), &stack.secret)
            .name("broker-devfull")
            .env("BROKER_AUDIT_LOG", "/dev/full")
            .spawn();
    // Past start-up (whose listener serves health alone, NOT_SERVING as well).
    broker.wait_started().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.health(e2e::broker::SERVICE).await != Some(ServingStatus::NotServing) {
        assert!(Instant::now() < deadline, "health never said NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sts_before = stack.proxy.assume_role_count();
    let mut c = broker.client().await;
    let session = new_session_id();
    let alice = stack.rw_token("alice");
    for (what, result) in [
        (
            "BindSession",
            bind(&mut c, &session, &alice, "").await.map(|_| ()),
        ),
        (
            "GetCredentials",
            get_credentials(&mut c, &session, &alice, "")
                .await
                .map(|_| ()),
        ),
        (
            "ExchangeToken",
            exchange(&mut c, &alice, "").await.map(|_| ()),
        ),
    ] {
        let status = expect_code(result, Code::Unavailable, what);
        assert!(status.message().contains("audit log"), "{what}: {status:?}");
    }
    let mut ops = broker.admin(Some(&stack.operator_token())).await;
    let status = expect_code(
        rpc::list(&mut ops, 10, "", "").await,
        Code::Unavailable,
        "ListSessions",
    );
    assert!(status.message().contains("BROKER_AUDIT_LOG"), "{status:?}");
    assert_eq!(
        stack.proxy.assume_role_count(),
        sts_before,
        "no STS call was made for an unrecordable request"
    );
    assert_eq!(
        broker.health(e2e::broker::SERVICE).await,
        Some(ServingStatus::NotServing)
    );
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_opened_stops_the_broker_at_start() {
    let (status, log) = e2e::broker::BrokerBuilder::new()
        .hs256_secret(&random_string(48))
        .allowed_roles(&["arn:aws:iam::123456789012:role/demo-*"])
        .env("BROKER_AUDIT_LOG", "/nonexistent-dir/audit.log")
        .start_expecting_exit()
        .await;
    assert!(!status.success());
    assert!(log.contains("BROKER_AUDIT_LOG"), "{log}");
}

#[test]
fn mint_token_takes_no_secret_flag_and_no_sub_claim() {
    let secret = format!("mint-secret-{}", random_string(40));
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(tools::broker_bin())
            .arg("mint-token")
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("run mint-token");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, help, _) = run(&["--help"], &[]);
    assert!(ok);
    assert!(
        !help
            .lines()
            .any(|l| l.trim_start().starts_with("--secret ")),
        "--help still offers --secret: {help}"
    );
    assert!(help.contains("--secret-file"), "{help}");
    // The old flag: refused, and the value is not echoed.
    let (ok, out, err) = run(&["--sub", "alice", "--secret", &secret], &[]);
    assert!(!ok, "--secret was accepted: {out}");
    assert!(!out.contains(&secret) && !err.contains(&secret), "{err}");
    // From the environment it works; a `sub` through --claim is refused.
    let env = [("BROKER_JWT_HS256_SECRET", secret.as_str())];
    let (ok, token, err) = run(&["--sub", "ops@example.com", "--ttl", "15m"], &env);
    assert!(ok && token.trim().split('.').count() == 3, "{err}");
    let (ok, out, err) = run(&["--sub", "alice", "--claim", "sub=x"], &env);
    assert!(!ok, "--claim sub=x minted {out}");
    assert!(err.contains("--sub"), "{err}");
}

/// A CA (PEM file) and leaf certificates it signed, for the mTLS operator test.
struct Pki {
    dir: Scratch,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = Scratch::new("admin-pki");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca };
        pki.leaf(&["localhost", "127.0.0.1"], "server");
        pki
    }

    /// A certificate with these DNS names, written as NAME.pem / NAME.key.
    fn leaf(&self, names: &[&str], file: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &self.ca)
                .unwrap();
        std::fs::write(self.dir.join(&format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(&format!("{file}.key")), key.serialize_pem()).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }

    /// An anonymous-token operator-plane client presenting certificate `client`.
    async fn admin(&self, addr: std::net::SocketAddr, client: &str) -> Option<rpc::Admin> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .domain_name("localhost")
            .identity(Identity::from_pem(
                self.read(&format!("{client}.pem")),
                self.read(&format!("{client}.key")),
            ));
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .ok()?
            .tls_config(tls)
            .ok()?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .ok()?;
        Some(rpc::Admin::new(channel, None))
    }
}

#[tokio::test]
async fn with_mtls_only_a_named_client_certificate_may_call_session_admin() {
    let pki = Pki::new();
    pki.leaf(&["ops-cli.internal"], "ops");
    pki.leaf(&["mcp-adapter"], "adapter");
    let stack = BrokerStack::start().await;
    // A TLS broker on the same STS whose only operator is the `ops-cli.internal` certificate.
    let mut broker =
        e2e::stack::standard_broker(stack.seed(), &stack.proxy.endpoint(), &stack.secret)
            .name("broker-mtls")
            .without_env("BROKER_ADMIN_SUBJECTS")
            .env("BROKER_TLS_CERT", &pki.path("server.pem"))
            .env("BROKER_TLS_KEY", &pki.path("server.key"))
            .env("BROKER_TLS_CLIENT_CA", &pki.path("ca.pem"))
            .env("BROKER_ADMIN_CLIENT_NAMES", "ops-cli.internal")
            .spawn();
    broker.wait_started().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ops = loop {
        if let Some(c) = pki.admin(broker.addr(), "ops").await {
            break c;
        }
        assert!(Instant::now() < deadline, "mTLS client never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The adapter's certificate (valid for the credential plane) is not an operator's.
    let mut adapter = pki.admin(broker.addr(), "adapter").await.expect("connect");
    let status = expect_code(
        rpc::list(&mut adapter, 10, "", "").await,
        Code::PermissionDenied,
        "ListSessions with the adapter's certificate",
    );
    assert!(
        status.message().contains("BROKER_ADMIN_CLIENT_NAMES"),
        "{status:?}"
    );
    // The named certificate is served (no token needed: only client names are configured).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rpc::list(&mut ops, 10, "", "").await {
            Ok(page) => {
                assert!(page.sessions.is_empty());
                break;
            }
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("operator certificate refused: {s:?}"),
        }
    }
}

#[tokio::test]
async fn admin_client_names_without_mtls_stop_the_broker_at_start() {
    let (status, log) = e2e::broker::BrokerBuilder::new()
        .hs256_secret(&random_string(48))
        .allowed_roles(&["arn:aws:iam::123456789012:role/demo-*"])
        .env("BROKER_ADMIN_CLIENT_NAMES", "ops-cli.internal")
        .start_expecting_exit()
        .await;
    assert!(!status.success());
    assert!(
        log.contains("BROKER_ADMIN_CLIENT_NAMES") && log.contains("BROKER_TLS_CLIENT_CA"),
        "{log}"
    );
}

/// `TTL key` in seconds (-2: no such key).
async fn ttl(redis: &e2e::redis::RedisServer, key: &str) -> i64 {
    match redis.cmd(&["TTL", key]).await {
        redis::Value::Int(n) => n,
        other => panic!("TTL {key}: {other:?}"),
    }
}

#[tokio::test]
async fn revoking_sessions_nobody_bound_cannot_fill_the_store() {
    let redis = e2e::redis::RedisServer::start().await;
    let replicas = e2e::stack::Replicas::start(&redis.url(), 1).await;
    let mut ops = replicas.admin(0).await;
    // Made-up handles: NOT_FOUND, and nothing is written.
    let keys_before = redis.cmd(&["DBSIZE"]).await;
    for i in 0..50u32 {
        expect_code(
            rpc::revoke_by_handle(&mut ops, &format!("{i:032x}")).await,
            Code::NotFound,
            "revoking a handle nobody bound",
        );
    }
    assert_eq!(
        redis.cmd(&["DBSIZE"]).await,
        keys_before,
        "no record written"
    );
    // A raw id nobody bound: refused for a bounded, short time (not BROKER_REVOKED_RETENTION's
    // 7 days), and meanwhile it cannot be bound.
    let id = new_session_id();
    let tombstone = rpc::revoke_by_id(&mut ops, &id)
        .await
        .expect("revoke an id");
    assert!(tombstone.revoked);
    let left = ttl(
        &redis,
        &format!("cb:v1:sess:{{{}}}", tombstone.session_handle),
    )
    .await;
    assert!((1..=3600).contains(&left), "tombstone TTL {left} s");
    let mut c = replicas.brokers[0].client().await;
    expect_code(
        bind(&mut c, &id, &replicas.rw_token("alice"), "").await,
        Code::NotFound,
        "binding a revoked id",
    );
    // A bound session's revocation is kept for the full retention.
    let bound = new_session_id();
    bind(&mut c, &bound, &replicas.rw_token("alice"), "")
        .await
        .expect("bind");
    let revoked = rpc::revoke_by_id(&mut ops, &bound).await.expect("revoke");
    let kept = ttl(
        &redis,
        &format!("cb:v1:sess:{{{}}}", revoked.session_handle),
    )
    .await;
    assert!(
        kept > 6 * 24 * 3600,
        "revocation of a bound session kept {kept} s"
    );
}
