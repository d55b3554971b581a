//! Starting and stopping the broker: configurations it must refuse (one line naming the
//! variable), the development escape hatch `--allow-any-role`, JSON logs, health for the server
//! and the service, and a graceful exit on SIGTERM. No AWS is needed for any of these.

use std::time::Duration;

use e2e::broker::{BrokerBuilder, SERVICE};
use e2e::tokens::random_string;
use tonic_health::pb::health_check_response::ServingStatus;

/// A broker that would start: HS256 secret, an allowlist, an STS endpoint nobody listens on.
fn valid() -> BrokerBuilder {
    BrokerBuilder::new()
        .hs256_secret(&random_string(48))
        .allowed_roles(&["arn:aws:iam::123456789012:role/demo-*"])
        .sts_endpoint("http://127.0.0.1:9")
}

/// Starts `builder`, expects a non-zero exit with a line that names `var`.
async fn refuses(builder: BrokerBuilder, var: &str, why: &str) {
    let (status, output) = builder.start_expecting_exit().await;
    assert!(!status.success(), "{why}: exited {status}");
    let lines: Vec<&str> = output.lines().filter(|l| l.contains(var)).collect();
    assert!(
        !lines.is_empty(),
        "{why}: no line names {var}; output:\n{output}"
    );
}

#[tokio::test]
async fn refuses_to_start_without_an_allowlist_unless_allow_any_role() {
    refuses(
        valid().without_env("BROKER_ALLOWED_ROLE_ARNS"),
        "BROKER_ALLOWED_ROLE_ARNS",
        "no allowlist",
    )
    .await;

    let mut broker = valid()
        .without_env("BROKER_ALLOWED_ROLE_ARNS")
        .arg("--allow-any-role")
        .start()
        .await;
    assert_eq!(broker.health(SERVICE).await, Some(ServingStatus::Serving));
    broker.kill();
}

#[tokio::test]
async fn refuses_bad_settings_with_one_line_naming_the_variable() {
    let cases: &[(&str, &str)] = &[
        ("BROKER_JWT_LEEWAY", "soon"),
        ("BROKER_STS_MODE", "carrier-pigeon"),
        ("BROKER_LISTEN", "not-an-address"),
        ("BROKER_CREDENTIAL_TTL", "forever"),
        ("BROKER_REFRESH_MARGIN", "-5"),
        ("BROKER_JWT_ALGORITHMS", "HS256,ROT13"),
        ("BROKER_CACHE_URL", "memcached://127.0.0.1:11211"),
        ("BROKER_LOG_FORMAT", "xml"),
        ("BROKER_ALLOWED_ROLE_ARNS", "not-an-arn"),
    ];
    for (var, value) in cases {
        refuses(valid().env(var, value), var, &format!("{var}={value}")).await;
    }
    // A secret file that does not exist.
    refuses(
        valid()
            .without_env("BROKER_JWT_HS256_SECRET")
            .env("BROKER_JWT_HS256_SECRET_FILE", "/nonexistent/e2e/secret"),
        "BROKER_JWT_HS256_SECRET_FILE",
        "missing secret file",
    )
    .await;
    // No key source at all.
    let (status, output) = valid()
        .without_env("BROKER_JWT_HS256_SECRET")
        .start_expecting_exit()
        .await;
    assert!(!status.success());
    assert!(
        output.contains("BROKER_JWT_HS256_SECRET") || output.contains("BROKER_JWKS_"),
        "no key source: the error names where keys come from:\n{output}"
    );
}

#[tokio::test]
async fn a_jwks_without_issuer_and_audience_and_untaggable_tag_claims_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let key = e2e::tokens::SigningKey::ec("ec-1");
    std::fs::write(&jwks, e2e::tokens::jwks(&[&key]).to_string()).unwrap();
    let (status, output) = valid()
        .env("BROKER_JWKS_FILE", jwks.to_str().unwrap())
        .start_expecting_exit()
        .await;
    assert!(!status.success(), "a JWKS without iss/aud: exited {status}");
    assert!(
        output
            .lines()
            .any(|l| l.contains("BROKER_JWT_ISSUER") && l.contains("BROKER_JWT_AUDIENCE")),
        "one line names both variables:\n{output}"
    );
    for claim in ["sub", "iss", "nbf"] {
        refuses(
            valid().env("BROKER_TAG_CLAIMS", &format!("team,{claim}")),
            "BROKER_TAG_CLAIMS",
            &format!("tag claim {claim}"),
        )
        .await;
    }
    refuses(
        valid().env("BROKER_JWKS_URL", "http://idp.example.com/jwks.json"),
        "BROKER_JWKS_URL",
        "plain http JWKS off loopback",
    )
    .await;
}

#[tokio::test]
async fn secret_from_a_file_json_logs_health_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hs256.secret");
    std::fs::write(&secret_file, format!("{}\n", random_string(48))).unwrap();
    let mut broker = valid()
        .without_env("BROKER_JWT_HS256_SECRET")
        .env(
            "BROKER_JWT_HS256_SECRET_FILE",
            secret_file.to_str().unwrap(),
        )
        .env("BROKER_LOG_FORMAT", "json")
        .start()
        .await;
    assert_eq!(broker.health("").await, Some(ServingStatus::Serving));
    assert_eq!(broker.health(SERVICE).await, Some(ServingStatus::Serving));

    broker.sigterm();
    let status = broker
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let log = broker.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the broker logged something");
    for line in lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }
}
