//! What operators and orchestrators rely on, against the real binary: TLS and mTLS on the gRPC
//! listener (certificates made here with rcgen), the Prometheus endpoint, the `healthcheck`
//! subcommand ECS runs, and draining on SIGTERM with requests in flight.

use credbroker_proto::v1::GetCredentialsRequest;
use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use e2e::moto::Moto;
use e2e::process::Scratch;
use e2e::stack::{BrokerStack, new_session_id, standard_broker, standard_minter};
use e2e::tokens::random_string;
use e2e::tools;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.
struct Pki {
    dir: Scratch,
}

impl Pki {
    fn new() -> Pki {
        let dir = Scratch::new("pki");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, file: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            std::fs::write(dir.join(&format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(&format!("{file}.key")), key.serialize_pem()).unwrap();
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
        leaf(vec!["mcp-adapter".into()], "client");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

/// A TLS client; with `client_cert`, it presents the client certificate.
async fn tls_client(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client_cert: bool,
) -> Result<CredentialBrokerClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    if client_cert {
        tls = tls.identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(CredentialBrokerClient::new(channel))
}

/// Runs `credential-broker healthcheck` with the given args; returns (exit code, stdout).
fn healthcheck(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(tools::broker_bin())
        .arg("healthcheck")
        .args(args)
        .env_remove("BROKER_LISTEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_and_serves_one_with() {
    let pki = Pki::new();
    let moto = Moto::start().await;
    let secret = random_string(48);
    // Spawned without the plaintext readiness wait: this listener only speaks TLS.
    let mut broker = standard_broker(moto.seed(), &moto.endpoint(), &secret)
        .env("BROKER_TLS_CERT", &pki.path("server.pem"))
        .env("BROKER_TLS_KEY", &pki.path("server.key"))
        .env("BROKER_TLS_CLIENT_CA", &pki.path("ca.pem"))
        .spawn();
    broker.wait_started().await;
    let minter = standard_minter(&secret);
    let rw = moto.seed().roles.read_write.clone();
    let addr = broker.addr();

    // With a client certificate: a real call goes through.
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = tls_client(addr, &pki, true).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("mTLS client connects");
    let token = minter.for_role("alice", &rw);
    let answer = client
        .get_credentials(GetCredentialsRequest {
            session_id: new_session_id(),
            token,
            role_arn: String::new(),
            mcp: None,
        })
        .await
        .expect("GetCredentials over mTLS");
    assert!(answer.into_inner().credentials.is_some());
    assert!(broker.log_text().contains("tls=\"mtls\"") || broker.log_text().contains("tls=mtls"));

    // Without one: the handshake or the first call fails; nothing is served.
    let refused = match tls_client(addr, &pki, false).await {
        Err(_) => true,
        Ok(mut c) => c
            .get_credentials(GetCredentialsRequest {
                session_id: new_session_id(),
                token: minter.for_role("alice", &rw),
                role_arn: String::new(),
                mcp: None,
            })
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    // Plaintext is refused too.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let r = CredentialBrokerClient::new(channel)
            .get_credentials(GetCredentialsRequest::default())
            .await;
        assert!(
            r.is_err(),
            "plaintext call must fail against a TLS listener"
        );
    }

    // The health check subcommand speaks mTLS when told how.
    let a = addr.to_string();
    let (code, out) = healthcheck(&[
        "--addr",
        &a,
        "--tls-ca",
        &pki.path("ca.pem"),
        "--tls-domain",
        "localhost",
        "--tls-cert",
        &pki.path("client.pem"),
        "--tls-key",
        &pki.path("client.key"),
    ]);
    assert_eq!((code, out.as_str()), (0, "SERVING"));
    let (code, _) = healthcheck(&[
        "--addr",
        &a,
        "--tls-ca",
        &pki.path("ca.pem"),
        "--tls-domain",
        "localhost",
    ]);
    assert_ne!(
        code, 0,
        "health check without a client certificate fails under mTLS"
    );
}

/// ECS injects secrets as the PEM text itself: the server and the `healthcheck` subcommand both
/// take the same inline values under the variables the task definition sets. (The subcommand
/// used to open the text as a path: "File name too long (os error 36)".)
#[tokio::test]
async fn healthcheck_takes_inline_pem_like_the_server() {
    let pki = Pki::new();
    let moto = Moto::start().await;
    let secret = random_string(48);
    let text = |name: &str| String::from_utf8(pki.read(name)).unwrap();
    let broker = standard_broker(moto.seed(), &moto.endpoint(), &secret)
        .env("BROKER_TLS_CERT", &text("server.pem"))
        .env("BROKER_TLS_KEY", &text("server.key"))
        .env("BROKER_TLS_CLIENT_CA", &text("ca.pem"))
        .spawn();
    let addr = broker.addr().to_string();
    let inline_check = |client_key: &str| {
        let out = std::process::Command::new(tools::broker_bin())
            .args(["healthcheck", "--addr", &addr, "--timeout", "2s"])
            .env_remove("BROKER_LISTEN")
            .env("BROKER_HEALTHCHECK_CA", text("ca.pem"))
            .env("BROKER_HEALTHCHECK_DOMAIN", "localhost")
            .env("BROKER_HEALTHCHECK_CLIENT_CERT", text("client.pem"))
            .env("BROKER_HEALTHCHECK_CLIENT_KEY", client_key)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The listener comes up; the check with inline values reports it.
    let mut last = (0, String::new(), String::new());
    for _ in 0..100 {
        last = inline_check(&text("client.key"));
        if last.0 == 0 {
            break;
        }
        assert!(
            !last.2.contains("File name too long"),
            "inline PEM opened as a path: {}",
            last.2
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((last.0, last.1.as_str()), (0, "SERVING"), "{}", last.2);

    // A flattened key (line breaks lost on the way) is named, not echoed, not opened as a file.
    let flat = text("client.key").replace('\n', " ");
    let (code, _, err) = inline_check(&flat);
    assert_eq!(code, 1);
    assert!(err.contains("BROKER_HEALTHCHECK_CLIENT_KEY"), "{err}");
    assert!(err.contains("no line breaks"), "{err}");
    let body = text("client.key");
    let key_line = body.lines().nth(1).unwrap();
    assert!(!err.contains(key_line), "key material echoed: {err}");
}

#[tokio::test]
async fn healthcheck_exits_zero_only_when_serving() {
    let stack = BrokerStack::start().await;
    let (code, out) = healthcheck(&["--addr", &stack.broker.addr().to_string()]);
    assert_eq!((code, out.as_str()), (0, "SERVING"));
    let nobody = e2e::ports::closed_port();
    let (code, _) = healthcheck(&["--addr", &nobody.addr().to_string(), "--timeout", "1s"]);
    assert_eq!(code, 1, "nothing listening: unhealthy");
}

#[tokio::test]
async fn metrics_count_requests_sts_calls_and_cache_hits() {
    let stack = BrokerStack::start_with(|b| b.metrics()).await;
    let mut c = stack.broker.client().await;
    let token = stack.rw_token("alice");
    for _ in 0..3 {
        c.get_credentials(GetCredentialsRequest {
            session_id: new_session_id(),
            token: token.clone(),
            role_arn: String::new(),
            mcp: None,
        })
        .await
        .unwrap();
    }
    let _ = c
        .get_credentials(GetCredentialsRequest {
            session_id: new_session_id(),
            token: "not-a-token".into(),
            role_arn: String::new(),
            mcp: None,
        })
        .await;
    let body = reqwest::get(stack.broker.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |needle: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric line starting with {needle}\n{body}"))
    };
    assert_eq!(
        value(r#"credbroker_requests_total{method="GetCredentials",code="OK"}"#),
        3.0
    );
    assert_eq!(
        value(r#"credbroker_requests_total{method="GetCredentials",code="UNAUTHENTICATED"}"#),
        1.0
    );
    assert_eq!(value(r#"credbroker_sts_calls_total{outcome="ok"}"#), 1.0);
    assert_eq!(
        value(r#"credbroker_cache_lookups_total{result="hit"}"#),
        2.0
    );
    assert!(!body.contains(&token), "metrics never carry a token");
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight_then_exits_zero() {
    let mut stack = BrokerStack::start().await;
    let c = stack.broker.client().await;
    // Fifty cold requests for fifty subjects: fifty STS calls, seconds of work in flight.
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let mut c = c.clone();
            let token = stack.rw_token(&format!("user{i}"));
            tokio::spawn(async move {
                c.get_credentials(GetCredentialsRequest {
                    session_id: new_session_id(),
                    token,
                    role_arn: String::new(),
                    mcp: None,
                })
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stack.broker.sigterm();
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => {
                assert!(r.into_inner().credentials.is_some());
                ok += 1;
            }
            // A request that had not reached the server before the listener closed may be
            // refused at connect; a request the server accepted must complete.
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
    }
    assert!(ok > 0, "requests in flight at SIGTERM were answered");
    let status = stack
        .broker
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("broker exits after draining");
    assert!(status.success(), "exit status {status:?}");
    let log = stack.broker.log_text();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("drained"), "{log}");
}
