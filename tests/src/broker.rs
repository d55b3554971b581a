//! The real `credential-broker` binary, started with an explicit environment.
//!
//! [`BrokerBuilder`] collects the broker's configuration as environment variables (the way ECS
//! passes it) and starts the binary with a cleared environment: no `AWS_*` from the developer's
//! shell, `HOME` pointing at the scratch directory (so no `~/.aws` leaks in), the broker's own
//! identity only when a test gives it one. [`BrokerBuilder::start`] waits until standard gRPC
//! health says `SERVING` for `credbroker.v1.CredentialBroker`; [`BrokerBuilder::start_expecting_exit`]
//! is for configurations the broker must refuse.
//!
//! The broker binds port 0 and writes the address it got to `BROKER_LISTEN_ADDR_FILE` in its
//! scratch directory, where [`Broker::addr`] reads it. A broker a test will restart behind running
//! clients is built with [`BrokerBuilder::restartable`]: it keeps one port for all its starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::ports::unassigned_port;
use crate::process::{ChildProcess, ReportedAddr, Scratch};
use crate::tools;

/// The service name health and reflection know the broker by.
pub const SERVICE: &str = "credbroker.v1.CredentialBroker";

/// The subject the harness configures as the one operator (`BROKER_ADMIN_SUBJECTS`) of every
/// broker it starts; a test that wants another set overrides or removes the variable.
pub const OPERATOR: &str = "ops@e2e.test";

/// How long a broker may take to become SERVING (a debug build on a busy 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a restartable broker draws another port when its first start finds the drawn
/// one taken.
const PORT_DRAWS: usize = 5;

/// Which port a broker listens on.
#[derive(Debug, Clone)]
enum Listen {
    /// Port 0: the kernel picks, the broker reports it.
    Any,
    /// One port for every start of this builder and its clones (see [`BrokerBuilder::restartable`]).
    Stable(Arc<Mutex<u16>>),
}

/// Configuration for one broker process.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    name: String,
    listen: Listen,
    env: BTreeMap<String, String>,
    args: Vec<String>,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        BrokerBuilder::new()
    }
}

impl BrokerBuilder {
    /// A broker on a loopback port the kernel picks, with text logs at `info` (debug for the
    /// broker itself), region us-east-1 and nothing else: add a key source, an allowlist and STS
    /// settings.
    pub fn new() -> BrokerBuilder {
        let mut builder = BrokerBuilder {
            name: "credential-broker".into(),
            listen: Listen::Any,
            env: BTreeMap::new(),
            args: Vec::new(),
        };
        builder = builder
            .env("BROKER_LOG_FORMAT", "text")
            .env("RUST_LOG", "info,credential_broker=debug")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("BROKER_ADMIN_SUBJECTS", OPERATOR);
        builder
    }

    /// Names the process in panics and logs (`broker-1`, `broker-2` for replicas).
    pub fn name(mut self, name: &str) -> BrokerBuilder {
        self.name = name.to_string();
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> BrokerBuilder {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Removes a variable set earlier (for example to test that it is required).
    pub fn without_env(mut self, key: &str) -> BrokerBuilder {
        self.env.remove(key);
        self
    }

    /// Adds a command-line argument (after the binary name).
    pub fn arg(mut self, arg: &str) -> BrokerBuilder {
        self.args.push(arg.to_string());
        self
    }

    /// `BROKER_JWT_HS256_SECRET` and `BROKER_JWT_ALGORITHMS=HS256`.
    pub fn hs256_secret(self, secret: &str) -> BrokerBuilder {
        self.env("BROKER_JWT_HS256_SECRET", secret)
            .env("BROKER_JWT_ALGORITHMS", "HS256")
    }

    /// `BROKER_ALLOWED_ROLE_ARNS` (comma-joined globs).
    pub fn allowed_roles(self, globs: &[&str]) -> BrokerBuilder {
        self.env("BROKER_ALLOWED_ROLE_ARNS", &globs.join(","))
    }

    /// `BROKER_STS_ENDPOINT`.
    pub fn sts_endpoint(self, endpoint: &str) -> BrokerBuilder {
        self.env("BROKER_STS_ENDPOINT", endpoint)
    }

    /// The broker's own AWS identity (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    pub fn aws_identity(self, access_key_id: &str, secret_access_key: &str) -> BrokerBuilder {
        self.env("AWS_ACCESS_KEY_ID", access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret_access_key)
    }

    /// `BROKER_CACHE_URL`.
    pub fn cache_url(self, url: &str) -> BrokerBuilder {
        self.env("BROKER_CACHE_URL", url)
    }

    /// `BROKER_METRICS_LISTEN=127.0.0.1:0`: a metrics listener on a port the kernel picks, which
    /// the broker reports (`BROKER_METRICS_ADDR_FILE`) and [`Broker::metrics_url`] reads.
    pub fn metrics(self) -> BrokerBuilder {
        self.env("BROKER_METRICS_LISTEN", "127.0.0.1:0")
    }

    /// Every start of this builder and of its clones listens on one port, so clients keep the
    /// broker's address across a kill and restart. The port is drawn below the kernel's ephemeral
    /// range (see `ports`); a first start that finds it taken draws another.
    pub fn restartable(mut self) -> BrokerBuilder {
        self.listen = Listen::Stable(Arc::new(Mutex::new(unassigned_port())));
        self
    }

    /// Starts the process without waiting for anything.
    pub fn spawn(self) -> Broker {
        let scratch = Scratch::new(&self.name);
        let addr_file = scratch.join("listen.addr");
        let metrics_addr_file = scratch.join("metrics.addr");
        let mut env = self.env;
        if !env.contains_key("BROKER_LISTEN") {
            let port = match &self.listen {
                Listen::Any => 0,
                Listen::Stable(port) => *port.lock().unwrap_or_else(|e| e.into_inner()),
            };
            env.insert("BROKER_LISTEN".into(), format!("127.0.0.1:{port}"));
        }
        let mut cmd = Command::new(tools::broker_bin());
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // An empty HOME: no developer ~/.aws can lend the broker an identity.
            .env("HOME", scratch.path())
            .envs(&env)
            .env("BROKER_LISTEN_ADDR_FILE", &addr_file)
            .env("BROKER_METRICS_ADDR_FILE", &metrics_addr_file);
        let log = scratch.join("broker.log");
        let process = ChildProcess::spawn(&self.name, &mut cmd, &log);
        Broker {
            process,
            scratch,
            addr: ReportedAddr::new(addr_file),
            metrics_addr: ReportedAddr::new(metrics_addr_file),
            env,
        }
    }

    /// Starts the broker and waits until gRPC health reports SERVING for the broker service.
    /// A restartable broker whose drawn port is taken draws another (retry-on-conflict).
    pub async fn start(self) -> Broker {
        for _ in 0..PORT_DRAWS {
            let mut broker = self.clone().spawn();
            match broker.wait_listening().await {
                Ok(_) => {
                    broker.wait_serving().await;
                    return broker;
                }
                Err(status) => match &self.listen {
                    Listen::Stable(port) if broker.log_text().contains("cannot listen on") => {
                        *port.lock().unwrap_or_else(|e| e.into_inner()) = unassigned_port();
                    }
                    _ => broker
                        .process
                        .fail(&format!("exited ({status}) before listening")),
                },
            }
        }
        panic!("{}: no free port in {PORT_DRAWS} draws", self.name);
    }

    /// Starts a broker that must refuse its configuration: waits for it to exit and returns the
    /// exit status and everything it printed. Panics if it is still running after 30 s.
    pub async fn start_expecting_exit(self) -> (ExitStatus, String) {
        let mut broker = self.spawn();
        match broker.process.wait_exit(Duration::from_secs(30)).await {
            Some(status) => (status, broker.log_text()),
            None => broker
                .process
                .fail("expected the broker to refuse this configuration and exit, it kept running"),
        }
    }
}

/// A running broker process.
#[derive(Debug)]
pub struct Broker {
    process: ChildProcess,
    scratch: Scratch,
    /// The bound address, as the broker reports it (`BROKER_LISTEN_ADDR_FILE`).
    addr: ReportedAddr,
    /// The metrics listener's bound address (`BROKER_METRICS_ADDR_FILE`), when it has one.
    metrics_addr: ReportedAddr,
    env: BTreeMap<String, String>,
}

impl Broker {
    /// Waits until the broker has bound its listener and reported the address;
    /// `Err(status)` when it exits first.
    pub async fn wait_listening(&mut self) -> Result<SocketAddr, ExitStatus> {
        self.addr.wait(&mut self.process, START_TIMEOUT).await
    }

    /// Waits until health says SERVING for [`SERVICE`].
    pub async fn wait_serving(&mut self) {
        if let Err(status) = self.wait_listening().await {
            self.process
                .fail(&format!("exited ({status}) before listening"));
        }
        let endpoint = self.endpoint();
        self.process
            .wait_until(
                &format!("grpc.health.v1.Health/Check({SERVICE}) = SERVING"),
                START_TIMEOUT,
                || {
                    let endpoint = endpoint.clone();
                    async move { health_of(&endpoint, SERVICE).await == Some(ServingStatus::Serving) }
                },
            )
            .await;
    }

    /// Waits until the broker logs that it serves every service, without asking over the wire:
    /// for a TLS listener, which the plaintext health probe of [`Broker::wait_serving`] cannot
    /// reach. (Listening alone is not enough: during start-up the listener serves only health
    /// and reflection.)
    pub async fn wait_started(&mut self) {
        let log = self.process.log_path().to_path_buf();
        self.process
            .wait_until(
                "the log says 'credential broker serving'",
                START_TIMEOUT,
                || {
                    std::future::ready(
                        crate::process::read_lossy(&log).contains("credential broker serving"),
                    )
                },
            )
            .await;
    }

    /// The address the broker listens on. After [`BrokerBuilder::spawn`] without a wait, this
    /// blocks until the broker has reported it (panicking after a minute, with its log).
    pub fn addr(&self) -> SocketAddr {
        self.addr.get(&self.process, START_TIMEOUT)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://127.0.0.1:PORT/metrics` of a broker built with [`BrokerBuilder::metrics`] (it
    /// binds the metrics listener before the main one, so a started broker has reported it).
    pub fn metrics_url(&self) -> String {
        format!(
            "http://{}/metrics",
            self.metrics_addr.get(&self.process, START_TIMEOUT)
        )
    }

    /// A client on a fresh channel (HTTP/2: clone it freely for concurrent calls).
    pub async fn client(&self) -> CredentialBrokerClient<Channel> {
        CredentialBrokerClient::new(channel(&self.endpoint()).await.expect("connect to broker"))
    }

    /// An operator-plane (`SessionAdmin`) client on a fresh channel that sends `token` as its
    /// bearer token (`None`: an anonymous caller).
    pub async fn admin(&self, token: Option<&str>) -> crate::rpc::Admin {
        crate::rpc::Admin::new(
            channel(&self.endpoint()).await.expect("connect to broker"),
            token,
        )
    }

    /// The serving status health reports for `service` (`""` is the whole server); `None` when
    /// the call itself fails.
    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        health_of(&self.endpoint(), service).await
    }

    /// The environment the broker was started with.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The broker's scratch directory (its `HOME`).
    pub fn dir(&self) -> &std::path::Path {
        self.scratch.path()
    }
}

crate::process::deref_to_process!(Broker);

/// A connected channel to `endpoint` with a short connect timeout.
pub async fn channel(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(endpoint.to_string())
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
}

async fn health_of(endpoint: &str, service: &str) -> Option<ServingStatus> {
    let channel = channel(endpoint).await.ok()?;
    let mut client = HealthClient::new(channel);
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    let response = tokio::time::timeout(Duration::from_secs(2), client.check(request))
        .await
        .ok()?
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}
