//! Self-tests of the harness the broker tests stand on: if moto stopped enforcing IAM, or the STS
//! proxy stopped counting, the broker tests could pass for the wrong reason. These prove the
//! ground is solid.

use e2e::aws::{self, StaticCreds};
use e2e::moto::Moto;
use e2e::redis::{RedisCluster, RedisServer, keys_containing};
use e2e::sts_proxy::{ProxyMode, StsProxy};

async fn assume(
    sts: &aws_sdk_sts::Client,
    role_arn: &str,
    name: &str,
) -> Result<StaticCreds, String> {
    let out = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name(name)
        .send()
        .await
        .map_err(|e| aws::error_code(&e))?;
    let c = out.credentials().expect("AssumeRole returned credentials");
    Ok(StaticCreds {
        access_key_id: c.access_key_id().to_string(),
        secret_access_key: c.secret_access_key().to_string(),
        session_token: Some(c.session_token().to_string()),
    })
}

#[tokio::test]
async fn moto_enforces_iam_after_seeding_and_the_proxy_counts_assume_role() {
    let moto = Moto::start().await;
    let seed = moto.seed().clone();
    let endpoint = moto.endpoint();
    let proxy = StsProxy::start(moto.port());
    let demo = &seed.buckets.demo;

    // The broker user, through the proxy (SigV4 must survive the relay).
    let broker_sts = aws::sts(&proxy.endpoint(), &seed.users.broker);
    let ro = assume(&broker_sts, &seed.roles.read_only, "e2e-ro")
        .await
        .expect("assume read-only");
    let rw = assume(&broker_sts, &seed.roles.read_write, "e2e-rw")
        .await
        .expect("assume read-write");
    assert_eq!(proxy.assume_role_count(), 2);
    assert_eq!(proxy.web_identity_count(), 0);

    // Outside the broker user's rights: denied by moto, and still counted (it left the client).
    assert_eq!(
        assume(&broker_sts, &seed.roles.ops_admin, "e2e-ops")
            .await
            .err()
            .as_deref(),
        Some("AccessDenied")
    );
    assert_eq!(proxy.assume_role_count(), 3);

    // Read-only: list yes, write no.
    let s3_ro = aws::s3(&endpoint, ro.clone());
    assert!(
        aws::list_keys(&s3_ro, demo)
            .await
            .expect("ro lists")
            .contains(&"README.txt".to_string())
    );
    assert_eq!(
        aws::put_object(&s3_ro, demo, "ro.txt", b"x")
            .await
            .err()
            .as_deref(),
        Some("AccessDenied")
    );
    // Read-write: write to its bucket, not to another.
    let s3_rw = aws::s3(&endpoint, rw.clone());
    aws::put_object(&s3_rw, demo, "rw.txt", b"hello")
        .await
        .expect("rw writes");
    assert_eq!(
        aws::get_object(&s3_rw, demo, "rw.txt")
            .await
            .expect("rw reads"),
        b"hello"
    );
    assert_eq!(
        aws::put_object(&s3_rw, &seed.buckets.other, "rw.txt", b"x")
            .await
            .err()
            .as_deref(),
        Some("AccessDenied")
    );
    assert_eq!(
        aws::caller_arn(&endpoint, rw).await,
        "arn:aws:sts::123456789012:assumed-role/demo-read-write/e2e-rw"
    );

    // Valid keys without S3 rights, and keys moto never issued.
    let s3_ambient = aws::s3(&endpoint, &seed.users.ambient);
    assert_eq!(
        aws::list_keys(&s3_ambient, demo).await.err().as_deref(),
        Some("AccessDenied")
    );
    let bogus = StaticCreds {
        access_key_id: "AKIAE2EBOGUSKEY00000".into(),
        secret_access_key: "bogus".into(),
        session_token: None,
    };
    assert_eq!(
        aws::list_keys(&aws::s3(&endpoint, bogus), demo)
            .await
            .err()
            .as_deref(),
        Some("InvalidAccessKeyId")
    );
}

#[tokio::test]
async fn sts_proxy_simulates_sts_down_and_throttling() {
    let moto = Moto::start().await;
    let seed = moto.seed().clone();
    let proxy = StsProxy::start(moto.port());
    let sts = aws::sts(&proxy.endpoint(), &seed.users.broker);
    assume(&sts, &seed.roles.read_only, "e2e-before")
        .await
        .expect("works while passing");

    proxy.set_down(true);
    let connections = proxy.connection_count();
    let down = assume(&sts, &seed.roles.read_only, "e2e-down").await;
    assert!(down.is_err(), "STS reachable although the proxy is down");
    assert!(
        proxy.connection_count() > connections,
        "the client never tried to connect"
    );
    assert_eq!(
        proxy.assume_role_count(),
        1,
        "a refused connection carries no request"
    );

    proxy.set_mode(ProxyMode::Throttle);
    let throttled = assume(&sts, &seed.roles.read_only, "e2e-throttled").await;
    assert_eq!(throttled.err().as_deref(), Some("Throttling"));
    // The SDK retries throttling: every attempt was counted.
    assert!(proxy.assume_role_count() >= 2);

    proxy.set_mode(ProxyMode::Pass);
    assume(&sts, &seed.roles.read_only, "e2e-after")
        .await
        .expect("works again");
}

#[tokio::test]
async fn redis_standalone_restarts_on_its_port_and_dumps_everything() {
    let mut redis = RedisServer::start().await;
    let port = redis.port();
    redis.cmd(&["SET", "plain", "needle-in-a-string"]).await;
    redis.cmd(&["HSET", "h", "field", "needle-in-a-hash"]).await;
    redis.cmd(&["RPUSH", "l", "a", "needle-in-a-list"]).await;
    redis.cmd(&["SADD", "s", "needle-in-a-set"]).await;
    redis.cmd(&["ZADD", "z", "1", "needle-in-a-zset"]).await;
    // Long and repetitive: DUMP would LZF-compress it; dump_all must still see it.
    let long = format!("{}needle-long{}", "a".repeat(500), "a".repeat(500));
    redis.cmd(&["SET", "long", &long]).await;
    let entries = redis.dump_all().await;
    assert_eq!(entries.len(), 6);
    for needle in [
        "needle-in-a-string",
        "needle-in-a-hash",
        "needle-in-a-list",
        "needle-in-a-set",
        "needle-in-a-zset",
        "needle-long",
    ] {
        assert_eq!(
            keys_containing(&entries, needle.as_bytes()).len(),
            1,
            "{needle}"
        );
    }

    redis.stop();
    assert!(!redis.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "still listening after stop"
    );
    redis.restart().await;
    assert_eq!(redis.port(), port);
    assert!(
        redis.dump_all().await.is_empty(),
        "no persistence: a restarted server is empty"
    );
}

#[tokio::test]
async fn redis_cluster_of_three_masters_serves_and_dumps_every_node() {
    let cluster = RedisCluster::start().await;
    assert_eq!(cluster.nodes().len(), 3);
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("cluster client");
    let mut conn = client
        .get_async_connection()
        .await
        .expect("connect to cluster");
    for i in 0..30 {
        let _: () = redis::cmd("SET")
            .arg(format!("key-{i}"))
            .arg(format!("value-{i}"))
            .query_async(&mut conn)
            .await
            .expect("SET through the cluster");
    }
    let entries = cluster.dump_all().await;
    assert_eq!(entries.len(), 30);
    let mut per_node = Vec::new();
    for node in cluster.nodes() {
        per_node.push(node.dump_all().await.len());
    }
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the masters: {per_node:?}"
    );
}
