//! moto, the AWS emulator, with IAM enforcement on.
//!
//! `moto_server` is started with `INITIAL_NO_AUTH_ACTION_COUNT=3` and seeded by
//! `tests/support/seed_moto.py`: its first three (unauthenticated) calls create an `admin` user,
//! everything after is signed and checked against IAM policies. So credentials the broker hands
//! out really carry their role's rights: a read-only role's credentials get AccessDenied on
//! PutObject, unknown keys get InvalidAccessKeyId. The seed script prints one JSON object with
//! all ARNs and keys, parsed here into [`MotoSeed`].
//!
//! Each test starts its own moto (about 1 s), so counts and state never leak between tests.
//! It binds port 0; werkzeug prints the port it got (` * Running on http://127.0.0.1:PORT`),
//! which is read from moto's log.

use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::process::{ChildProcess, Scratch};
use crate::tools;

/// The account every seeded ARN lives in (moto's default account).
pub const ACCOUNT_ID: &str = "123456789012";

/// What `seed_moto.py` created.
#[derive(Debug, Clone, Deserialize)]
pub struct MotoSeed {
    pub endpoint: String,
    pub region: String,
    pub account_id: String,
    pub buckets: SeedBuckets,
    pub roles: SeedRoles,
    pub users: SeedUsers,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeedBuckets {
    /// `demo-bucket`: the demo roles' bucket.
    pub demo: String,
    /// `other-bucket`: no demo role may touch it.
    pub other: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeedRoles {
    /// `demo-read-write`: `s3:*` on demo-bucket.
    pub read_write: String,
    /// `demo-read-only`: `s3:GetObject`, `s3:ListBucket` on demo-bucket.
    pub read_only: String,
    /// `ops-admin`: `s3:*` everywhere; outside the broker's allowlist and rights.
    pub ops_admin: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeedUsers {
    pub admin: AwsUser,
    /// The broker's own identity: may only assume `role/demo-*`.
    pub broker: AwsUser,
    /// Valid keys with no S3 rights: the "ambient" identity an adapter must never use.
    pub ambient: AwsUser,
}

/// An IAM user with an access key.
#[derive(Debug, Clone, Deserialize)]
pub struct AwsUser {
    pub arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The port in werkzeug's ` * Running on http://127.0.0.1:PORT` start-up line.
fn bound_port(log: &str) -> Option<u16> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix("* Running on http://127.0.0.1:"))
        .and_then(|port| port.trim().parse().ok())
}

/// A running, seeded moto server.
#[derive(Debug)]
pub struct Moto {
    process: ChildProcess,
    _scratch: Scratch,
    port: u16,
    seed: MotoSeed,
}

impl Moto {
    /// moto with IAM enforcement after seeding (the normal case).
    pub async fn start() -> Moto {
        Moto::start_inner(true).await
    }

    /// moto that never checks signatures or policies. Needed for `AssumeRoleWithWebIdentity`:
    /// moto 5.2.5 under enforcement answers that unsigned call with HTTP 500
    /// (`KeyError: 'HTTP_AUTHORIZATION'`), while real STS accepts it unsigned.
    pub async fn start_without_iam_enforcement() -> Moto {
        Moto::start_inner(false).await
    }

    async fn start_inner(enforce_iam: bool) -> Moto {
        let scratch = Scratch::new("moto");
        let mut cmd = Command::new(tools::moto_server());
        cmd.args(["-H", "127.0.0.1", "-p", "0"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", scratch.path())
            .env("PYTHONUNBUFFERED", "1");
        if enforce_iam {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let mut process = ChildProcess::spawn("moto_server", &mut cmd, &scratch.join("moto.log"));
        let log = scratch.join("moto.log");
        process
            .wait_until(
                "moto prints the port it bound",
                Duration::from_secs(60),
                || std::future::ready(bound_port(&crate::process::read_lossy(&log)).is_some()),
            )
            .await;
        let port = bound_port(&process.log_text())
            .unwrap_or_else(|| process.fail("no ` * Running on` line"));

        let endpoint = format!("http://127.0.0.1:{port}");
        let probe_url = format!("{endpoint}/moto-api/");
        let http = reqwest::Client::new();
        process
            .wait_until(
                "GET /moto-api/ answers 200",
                Duration::from_secs(60),
                || {
                    let req = http.get(&probe_url).timeout(Duration::from_secs(2)).send();
                    async move { matches!(req.await, Ok(r) if r.status().is_success()) }
                },
            )
            .await;

        let output = tokio::process::Command::new(tools::python())
            .arg(tools::support_file("seed_moto.py"))
            .args(["--endpoint", &endpoint])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", scratch.path())
            .output()
            .await
            .expect("run seed_moto.py");
        if !output.status.success() {
            process.fail(&format!(
                "seed_moto.py failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let seed: MotoSeed = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "seed_moto.py printed no seed JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        Moto {
            process,
            _scratch: scratch,
            port,
            seed,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// moto's process id (the benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn seed(&self) -> &MotoSeed {
        &self.seed
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// IAM's `AccessKeyLastUsed` for `access_key_id`, read with the admin's keys by
    /// `tests/clients/python/key_last_used.py` (boto3): proof of whether a key was ever used.
    pub async fn key_last_used(&self, access_key_id: &str) -> serde_json::Value {
        use tokio::io::AsyncWriteExt;
        let admin = &self.seed.users.admin;
        let request = serde_json::json!({
            "endpoint": self.endpoint(),
            "admin_key": admin.access_key_id,
            "admin_secret": admin.secret_access_key,
            "key": access_key_id,
        });
        let mut child = tokio::process::Command::new(tools::python())
            .arg(tools::workspace_root().join("tests/clients/python/key_last_used.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start key_last_used.py");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{request}\n").as_bytes())
            .await
            .expect("write to key_last_used.py");
        drop(stdin);
        let output = child.wait_with_output().await.expect("key_last_used.py");
        assert!(
            output.status.success(),
            "key_last_used.py: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("key_last_used.py JSON")
    }
}
