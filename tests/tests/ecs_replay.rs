//! Replays ECS: renders deploy/ecs/*-task.json (placeholders substituted), gives the real
//! binaries exactly the environment those task definitions give them — plain `environment`
//! values, and every `secrets` entry as the inline value ECS injects (PEM text, not a path) under
//! the same variable name — and runs each container's `healthCheck.command` against them.
//!
//! What differs from a Fargate task, and why: ports are free loopback ports (tests run in
//! parallel; the 0.0.0.0 listen form is kept), Redis is a local redis-server, STS and S3 are
//! moto (the endpoint and the broker's static identity stand in for the task role), and the
//! image's /usr/local/bin is the build's target directory.
//!
//! Proves: both checks healthy with Redis up; through a 40 s Redis outage the broker's container
//! check keeps passing (ECS does not kill it) while readiness reports NOT_SERVING; ready again
//! after; and an MCP tool call through the adapter reaches the broker over mTLS built from the
//! inline material on both sides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::adapter::AdapterBuilder;
use e2e::broker::BrokerBuilder;
use e2e::mcp::McpHttp;
use e2e::moto::Moto;
use e2e::ports::free_port;
use e2e::redis::RedisServer;
use e2e::stack::{AUDIENCE, ISSUER, cache_key, demo_roles_glob, standard_minter};
use e2e::tokens::random_string;
use e2e::tools;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};

/// PEM text of a CA, a server certificate for `localhost` and a client certificate.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("mcp-adapter");
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// The task definition at `deploy/ecs/<file>` with `${Name}` placeholders replaced; panics on
/// a placeholder left over.
fn render(file: &str, values: &BTreeMap<&str, String>) -> Value {
    let path = format!("{}/../deploy/ecs/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(!text.contains("${"), "unrendered placeholder in {file}");
    serde_json::from_str(&text).unwrap()
}

/// One container of a rendered task: its environment (plain values, then each secret as the
/// inline value of the Secrets Manager JSON key its `valueFrom` names) and its health check.
struct Container {
    env: BTreeMap<String, String>,
    health_command: Vec<String>,
}

fn container(task: &Value, secrets: &BTreeMap<String, String>) -> Container {
    let c = &task["containerDefinitions"][0];
    let mut env = BTreeMap::new();
    for e in c["environment"].as_array().unwrap() {
        env.insert(
            e["name"].as_str().unwrap().to_string(),
            e["value"].as_str().unwrap().to_string(),
        );
    }
    for s in c["secrets"].as_array().unwrap() {
        let from = s["valueFrom"].as_str().unwrap();
        let value = secrets
            .get(from)
            .unwrap_or_else(|| panic!("no secret value for {from}"));
        env.insert(s["name"].as_str().unwrap().to_string(), value.clone());
    }
    let command: Vec<String> = c["healthCheck"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(command[0], "CMD", "exec form: no shell in the image");
    Container {
        env,
        health_command: command[1..].to_vec(),
    }
}

/// Runs a container's health-check command as ECS would: the image's binary, the container's
/// environment and nothing else. Exit code.
fn run_health_check(c: &Container) -> i32 {
    let bin = tools::bin_dir().display().to_string();
    let program = c.health_command[0].replace("/usr/local/bin", &bin);
    let out = std::process::Command::new(program)
        .args(&c.health_command[1..])
        .env_clear()
        .envs(&c.env)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "health check {:?}: {}{}",
            c.health_command,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.code().unwrap_or(-1)
}

#[tokio::test]
async fn ecs_task_definitions_stay_healthy_through_a_redis_outage() {
    let moto = Moto::start().await;
    let mut redis = RedisServer::start().await;
    let pki = pki();
    let hs256 = random_string(48);
    let mut builder = BrokerBuilder::new()
        .sts_endpoint(&moto.endpoint())
        .aws_identity(
            &moto.seed().users.broker.access_key_id,
            &moto.seed().users.broker.secret_access_key,
        )
        .env("BROKER_ROLE_ACCOUNT_ID", e2e::moto::ACCOUNT_ID);
    let mut ab = AdapterBuilder::new("https://unused").s3_endpoint(&moto.endpoint());
    // The task definitions name these ports before the processes exist (see `e2e::ports`).
    // The metrics listeners are not named anywhere else: they bind port 0.
    let (broker_port, adapter_port) = (free_port(), free_port());

    let values: BTreeMap<&str, String> = [
        ("Region", "us-east-1".to_string()),
        ("BrokerHost", "localhost".to_string()),
        ("BrokerAllowedRoleArns", demo_roles_glob()),
        ("JwtIssuer", ISSUER.to_string()),
        ("JwtAudience", AUDIENCE.to_string()),
        (
            "AdapterResourceUrl",
            format!("http://localhost:{adapter_port}/mcp"),
        ),
        ("AuthorizationServers", ISSUER.to_string()),
        ("AllowedOrigins", "https://app.example.com".to_string()),
        ("AllowedHosts", "localhost".to_string()),
        // Operators by client-certificate name (BROKER_ADMIN_CLIENT_NAMES), as the stack passes it.
        ("AdminClientNames", "ops-cli.internal".to_string()),
    ]
    .into_iter()
    .chain(
        [
            "BrokerTaskRoleArn",
            "BrokerExecutionRoleArn",
            "AdapterExecutionRoleArn",
            "BrokerImageRepositoryUri",
            "AdapterImageRepositoryUri",
            "ImageTag",
            "BrokerLogGroupName",
            "AdapterLogGroupName",
            "AuditLogGroupName",
            "JwtSecretArn",
            "CacheKeySecretArn",
            "CacheUrlSecretArn",
            "HandleKeySecretArn",
            "BrokerTlsSecretArn",
            "AdapterTlsSecretArn",
        ]
        .map(|name| (name, format!("arn:{name}"))),
    )
    .collect();
    // Secrets Manager values by `valueFrom` (a JSON key of a secret is `<arn>:<key>::`).
    let secrets: BTreeMap<String, String> = [
        ("arn:JwtSecretArn", hs256.clone()),
        ("arn:CacheKeySecretArn", cache_key()),
        ("arn:HandleKeySecretArn", cache_key()),
        ("arn:CacheUrlSecretArn", redis.url()),
        ("arn:BrokerTlsSecretArn:cert::", pki.server_cert.clone()),
        ("arn:BrokerTlsSecretArn:key::", pki.server_key.clone()),
        ("arn:BrokerTlsSecretArn:client_ca::", pki.ca.clone()),
        ("arn:BrokerTlsSecretArn:ca::", pki.ca.clone()),
        (
            "arn:BrokerTlsSecretArn:client_cert::",
            pki.client_cert.clone(),
        ),
        (
            "arn:BrokerTlsSecretArn:client_key::",
            pki.client_key.clone(),
        ),
        ("arn:AdapterTlsSecretArn:ca::", pki.ca.clone()),
        ("arn:AdapterTlsSecretArn:cert::", pki.client_cert.clone()),
        ("arn:AdapterTlsSecretArn:key::", pki.client_key.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    // The broker task: its container environment; only the ports are moved.
    let mut broker_c = container(&render("broker-task.json", &values), &secrets);
    assert!(broker_c.env["BROKER_TLS_KEY"].contains("-----BEGIN"));
    broker_c
        .env
        .insert("BROKER_LISTEN".into(), format!("0.0.0.0:{broker_port}"));
    broker_c
        .env
        .insert("BROKER_METRICS_LISTEN".into(), "0.0.0.0:0".to_string());
    // The task's `audit` volume, mounted at /audit in the broker container (BROKER_AUDIT_LOG lives
    // there): a scratch directory stands in for it, as ECS mounts the volume at that path.
    let audit_volume = e2e::process::Scratch::new("ecs-audit-volume");
    let audit_log = {
        let configured = broker_c.env["BROKER_AUDIT_LOG"].clone();
        let name = configured
            .strip_prefix("/audit/")
            .expect("the broker task writes its audit log on the /audit volume");
        audit_volume.join(name)
    };
    broker_c
        .env
        .insert("BROKER_AUDIT_LOG".into(), audit_log.display().to_string());
    for (k, v) in &broker_c.env {
        builder = builder.env(k, v);
    }
    let broker = builder.spawn();

    // The adapter task, pointed at the broker by name over mTLS from inline material.
    let mut adapter_c = container(&render("adapter-task.json", &values), &secrets);
    assert!(adapter_c.env["ADAPTER_BROKER_CLIENT_KEY"].contains("-----BEGIN"));
    adapter_c.env.insert(
        "ADAPTER_BROKER_URL".into(),
        format!("https://localhost:{broker_port}"),
    );
    adapter_c
        .env
        .insert("ADAPTER_LISTEN".into(), format!("0.0.0.0:{adapter_port}"));
    adapter_c
        .env
        .insert("ADAPTER_METRICS_LISTEN".into(), "0.0.0.0:0".to_string());

    // Both container checks pass once the processes are up (ECS's startPeriod covers the wait).
    let deadline = Instant::now() + Duration::from_secs(60);
    while run_health_check(&broker_c) != 0 {
        assert!(Instant::now() < deadline, "{}", broker.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (k, v) in &adapter_c.env {
        ab = ab.env(k, v);
    }
    let adapter = ab.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while run_health_check(&adapter_c) != 0 {
        assert!(Instant::now() < deadline, "{}", adapter.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A tool call through the adapter: adapter → broker over mTLS (inline PEM on both sides).
    let mcp = McpHttp::new(&format!("http://localhost:{adapter_port}/mcp"));
    let token = standard_minter(&hs256).for_role("alice", &moto.seed().roles.read_write);
    let listed = mcp
        .call_tool(
            None,
            Some(&token),
            "bucket_objects_list",
            json!({ "bucket": moto.seed().buckets.demo }),
        )
        .await
        .unwrap();
    assert!(
        listed.is_tool_success(),
        "{}\nadapter:\n{}\nbroker:\n{}",
        listed.text,
        adapter.log_text(),
        broker.log_text()
    );

    // Redis goes away for 40 s. ECS runs the container check every 10 s and kills after three
    // failures; here it runs every 2 s and must pass every time, while readiness is NOT_SERVING.
    let tls_health = |ready: bool| {
        let mut c = Container {
            env: broker_c.env.clone(),
            health_command: broker_c.health_command.clone(),
        };
        if ready {
            c.env
                .insert("BROKER_HEALTHCHECK_READY".into(), "true".into());
        }
        run_health_check(&c)
    };
    redis.stop();
    let down = Instant::now();
    let deadline = down + Duration::from_secs(20);
    while tls_health(true) == 0 {
        assert!(Instant::now() < deadline, "readiness never dropped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut checks = 0;
    while down.elapsed() < Duration::from_secs(40) {
        assert_eq!(
            tls_health(false),
            0,
            "container check failed {:?} into the outage:\n{}",
            down.elapsed(),
            broker.log_text()
        );
        assert_eq!(tls_health(true), 1, "ready without Redis");
        checks += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(checks >= 10, "only {checks} checks in 40 s");
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tls_health(true) != 0 {
        assert!(Instant::now() < deadline, "not ready after Redis came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(run_health_check(&broker_c), 0);
    assert_eq!(run_health_check(&adapter_c), 0);

    // The audit trail the task ships holds this run's decisions as one whole chain.
    let verify = std::process::Command::new(tools::bin_dir().join("credential-broker"))
        .args(["audit", "verify"])
        .arg(&audit_log)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let records = std::fs::read_to_string(&audit_log).unwrap();
    assert!(
        records
            .lines()
            .any(|l| l.contains(r#""event":"token_exchanged""#)
                && l.contains(r#""peer":"mcp-adapter"#)),
        "no token_exchanged record naming the adapter's certificate in the audit log:\n{records}"
    );
}
