//! The real `mcp-adapter` binary.
//!
//! [`AdapterBuilder`] starts it with a cleared environment (like the broker: `HOME` is the scratch
//! directory, no `AWS_*` unless a test adds them) and waits for `GET /healthz` = 200.
//! [`AdapterBuilder::ambient_credentials`] deliberately gives the adapter VALID low-privilege AWS
//! credentials, in its environment and in `~/.aws`, to prove it never uses them.
//!
//! The adapter binds port 0 and writes the address it got to `ADAPTER_LISTEN_ADDR_FILE` in its
//! scratch directory, where [`Adapter::port`] reads it.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::ports::ClosedPort;
use crate::process::{ChildProcess, ReportedAddr, Scratch};
use crate::tools;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Configuration for one adapter process.
#[derive(Debug, Clone)]
pub struct AdapterBuilder {
    name: String,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    ambient: Option<(String, String)>,
    /// The closed port the broker URL names, held for the adapter's life (see
    /// [`AdapterBuilder::unreachable_broker`]).
    dead_broker: Option<Arc<ClosedPort>>,
}

impl AdapterBuilder {
    /// An adapter on a loopback port the kernel picks that asks the broker at `broker_url`.
    pub fn new(broker_url: &str) -> AdapterBuilder {
        let mut env = BTreeMap::new();
        env.insert("ADAPTER_LISTEN".to_string(), "127.0.0.1:0".to_string());
        env.insert("ADAPTER_BROKER_URL".to_string(), broker_url.to_string());
        env.insert("AWS_REGION".to_string(), "us-east-1".to_string());
        env.insert("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string());
        env.insert("RUST_LOG".to_string(), "info,mcp_adapter=debug".to_string());
        AdapterBuilder {
            name: "mcp-adapter".into(),
            env,
            args: Vec::new(),
            ambient: None,
            dead_broker: None,
        }
    }

    /// An adapter whose broker URL names a port nobody listens on (every broker call is
    /// refused), kept closed for as long as the adapter runs.
    pub fn unreachable_broker() -> AdapterBuilder {
        let closed = crate::ports::closed_port();
        let mut builder = AdapterBuilder::new(&format!("http://{}", closed.addr()));
        builder.dead_broker = Some(Arc::new(closed));
        builder
    }

    pub fn name(mut self, name: &str) -> AdapterBuilder {
        self.name = name.to_string();
        self
    }

    /// `ADAPTER_S3_ENDPOINT` (path-style addressing).
    pub fn s3_endpoint(self, endpoint: &str) -> AdapterBuilder {
        self.env("ADAPTER_S3_ENDPOINT", endpoint)
    }

    pub fn env(mut self, key: &str, value: &str) -> AdapterBuilder {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    pub fn without_env(mut self, key: &str) -> AdapterBuilder {
        self.env.remove(key);
        self
    }

    /// `ADAPTER_METRICS_LISTEN=127.0.0.1:0`: a metrics listener on a port the kernel picks, which
    /// the adapter reports (`ADAPTER_METRICS_ADDR_FILE`) and [`Adapter::metrics_url`] reads.
    pub fn metrics(self) -> AdapterBuilder {
        self.env("ADAPTER_METRICS_LISTEN", "127.0.0.1:0")
    }

    pub fn arg(mut self, arg: &str) -> AdapterBuilder {
        self.args.push(arg.to_string());
        self
    }

    /// Valid AWS keys in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` AND in `$HOME/.aws`: the
    /// ambient identity the incident's backend fell back to. The adapter must never use them.
    pub fn ambient_credentials(
        mut self,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> AdapterBuilder {
        self.ambient = Some((access_key_id.to_string(), secret_access_key.to_string()));
        self.env("AWS_ACCESS_KEY_ID", access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret_access_key)
    }

    /// Starts the process without waiting.
    pub fn spawn(self) -> Adapter {
        let scratch = Scratch::new(&self.name);
        let mut cmd = Command::new(tools::adapter_bin());
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", scratch.path());
        if let Some((key, secret)) = &self.ambient {
            let aws = scratch.join(".aws");
            std::fs::create_dir_all(&aws).expect("create ~/.aws");
            std::fs::write(
                aws.join("credentials"),
                format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
            )
            .expect("write ~/.aws/credentials");
            std::fs::write(aws.join("config"), "[default]\nregion = us-east-1\n")
                .expect("write ~/.aws/config");
        }
        let addr_file = scratch.join("listen.addr");
        let metrics_addr_file = scratch.join("metrics.addr");
        cmd.envs(&self.env)
            .env("ADAPTER_LISTEN_ADDR_FILE", &addr_file)
            .env("ADAPTER_METRICS_ADDR_FILE", &metrics_addr_file);
        let process = ChildProcess::spawn(&self.name, &mut cmd, &scratch.join("adapter.log"));
        Adapter {
            process,
            scratch,
            addr: ReportedAddr::new(addr_file),
            metrics_addr: ReportedAddr::new(metrics_addr_file),
            _dead_broker: self.dead_broker,
        }
    }

    /// Starts the adapter and waits until `GET /healthz` answers 200.
    pub async fn start(self) -> Adapter {
        let mut adapter = self.spawn();
        if let Err(status) = adapter.addr.wait(&mut adapter.process, START_TIMEOUT).await {
            adapter
                .process
                .fail(&format!("exited ({status}) before listening"));
        }
        let url = format!("{}/healthz", adapter.url());
        let http = reqwest::Client::new();
        adapter
            .process
            .wait_until("GET /healthz answers 200", START_TIMEOUT, || {
                let req = http.get(&url).timeout(Duration::from_secs(2)).send();
                async move { matches!(req.await, Ok(r) if r.status().is_success()) }
            })
            .await;
        adapter
    }
}

/// A running adapter process.
#[derive(Debug)]
pub struct Adapter {
    process: ChildProcess,
    scratch: Scratch,
    /// The bound address, as the adapter reports it (`ADAPTER_LISTEN_ADDR_FILE`).
    addr: ReportedAddr,
    /// The metrics listener's bound address (`ADAPTER_METRICS_ADDR_FILE`), when it has one.
    metrics_addr: ReportedAddr,
    /// Keeps an unreachable broker's port closed while the adapter runs.
    _dead_broker: Option<Arc<ClosedPort>>,
}

impl Adapter {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.url())
    }

    /// `http://127.0.0.1:PORT/metrics` of an adapter built with [`AdapterBuilder::metrics`] (it
    /// binds the metrics listener before the main one, so a started adapter has reported it).
    pub fn metrics_url(&self) -> String {
        format!(
            "http://{}/metrics",
            self.metrics_addr.get(&self.process, START_TIMEOUT)
        )
    }

    /// The address the adapter listens on (blocks until reported after a bare `spawn`).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr.get(&self.process, START_TIMEOUT)
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The adapter's scratch directory (its `HOME`).
    pub fn dir(&self) -> &std::path::Path {
        self.scratch.path()
    }
}

crate::process::deref_to_process!(Adapter);
