//! What operators and orchestrators see: gRPC health (for `""` and the broker service), server
//! reflection in v1 and v1alpha (grpcurl 1.8 only speaks v1alpha), logging, and the `healthcheck` subcommand that ECS container health checks run (liveness by default).

use crate::store::{AnyStore, Store};
use credbroker_proto::{ADMIN_SERVICE_NAME, FILE_DESCRIPTOR_SET, SERVICE_NAME};
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use credbroker_kit::logging::LogFormat;

/// Installs the tracing subscriber: text or JSON lines on stderr, colours only on a terminal,
/// `RUST_LOG` filters (default `info`). One composing function (`credbroker_kit::logging::init`):
/// another layer is one more element of `layers`.
pub fn init_logging(format: LogFormat) {
    let _ = credbroker_kit::logging::init(credbroker_kit::logging::LogSetup {
        format,
        writer: std::io::stderr,
        ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        json_spans: true,
        warn_only_targets: &[],
        // Spans exported over OTLP when the OTEL_* variables ask for it (`telemetry`).
        layers: crate::telemetry::layer().into_iter().collect(),
    });
}

/// Reflection services (v1 and v1alpha) describing the broker and health APIs.
#[allow(
    clippy::expect_used,
    reason = "the descriptor sets are compiled in; a broken one fails every test at start"
)]
pub fn reflection() -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    (
        builder()
            .build_v1()
            .expect("embedded descriptors are valid"),
        builder()
            .build_v1alpha()
            .expect("embedded descriptors are valid"),
    )
}

/// One thing readiness depends on. Readiness (the broker service's health name, what clients
/// and the load path ask) is SERVING only while every input holds; liveness (`""`, what the ECS
/// container check asks) stays SERVING while the process can recover on its own, so a Redis
/// outage makes replicas unready, not restarted. Adding an input is one variant here and one
/// [`Health::set_input`] call where it is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadinessInput {
    /// Start-up finished: the store connected and the broker service is wired.
    Started,
    /// The store answers its ping.
    Store,
    /// The store does not evict keys (or BROKER_REDIS_ALLOW_EVICTION accepted that it does).
    StorePolicy,
    /// The audit log (when configured) takes records: nothing is served while it cannot.
    Audit,
}

impl ReadinessInput {
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Health of the broker: liveness and readiness (see [`ReadinessInput`]). Cloneable handle over
/// the reporter; the failing inputs are shared between clones.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    /// Bits of the inputs that do not hold, and whether the process is stopping.
    state: Arc<std::sync::Mutex<(u32, bool)>>,
}

impl Health {
    /// Liveness SERVING, readiness NOT_SERVING until [`ReadinessInput::Started`] holds.
    pub async fn new(reporter: HealthReporter) -> Self {
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(ADMIN_SERVICE_NAME, ServingStatus::NotServing)
            .await;
        Self {
            reporter,
            state: Arc::new(std::sync::Mutex::new((
                ReadinessInput::Started.bit(),
                false,
            ))),
        }
    }

    /// Records whether `input` holds and publishes readiness when it changes.
    pub async fn set_input(&self, input: ReadinessInput, holds: bool) {
        let ready = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = state.0;
            if holds {
                state.0 &= !input.bit();
            } else {
                state.0 |= input.bit();
            }
            if state.1 || (before == 0) == (state.0 == 0) {
                return;
            }
            state.0 == 0
        };
        tracing::info!(?input, holds, ready, "readiness changed");
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(SERVICE_NAME, status).await;
        self.reporter
            .set_service_status(ADMIN_SERVICE_NAME, status)
            .await;
    }

    /// Shutting down: every name NOT_SERVING from now on.
    pub async fn stopping(&self) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1 = true;
        for name in ["", SERVICE_NAME, ADMIN_SERVICE_NAME] {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }

    /// Pings the store every `every` and feeds [`ReadinessInput::Store`]; each time the store
    /// comes back (a reconnect, possibly to a new primary after a failover) its eviction policy
    /// is checked again and feeds [`ReadinessInput::StorePolicy`]. Stops when `shutdown` fires.
    pub async fn watch_store(
        self,
        store: Arc<AnyStore>,
        every: Duration,
        allow_eviction: bool,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut serving = true;
        let mut policy_ok = true;
        loop {
            let ok = match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    if serving {
                        tracing::error!(store = store.kind(), error = %e, "store unreachable; readiness NOT_SERVING (liveness stays SERVING)");
                    }
                    false
                }
                Err(_) => {
                    if serving {
                        tracing::error!(
                            store = store.kind(),
                            "store ping timed out; readiness NOT_SERVING (liveness stays SERVING)"
                        );
                    }
                    false
                }
            };
            // The audit log is an input of its own: NOT_SERVING while it cannot be written. The
            // retry of its pending records here is how it recovers with no request coming in.
            self.set_input(ReadinessInput::Audit, crate::audit::ready().is_ok())
                .await;
            if ok && !serving {
                tracing::info!(store = store.kind(), "store reachable again");
            }
            // After a reconnect (possibly to another node), and on every tick while the last
            // check failed (a failed read must not leave readiness down for good).
            if ok && (!serving || !policy_ok) {
                let policy = store.check_eviction_policy(allow_eviction).await;
                if let Err(e) = &policy
                    && policy_ok
                {
                    tracing::error!(store = store.kind(), error = %e, "readiness NOT_SERVING");
                }
                policy_ok = policy.is_ok();
                self.set_input(ReadinessInput::StorePolicy, policy_ok).await;
            }
            if ok != serving {
                serving = ok;
                self.set_input(ReadinessInput::Store, serving).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Flags of `healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Broker address (host:port); the same variable the broker listens on.
    #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Service name to check. Default: liveness (`""`, the process can recover on its own),
    /// which is what a container health check should ask; see --ready.
    #[arg(long, default_value = "", conflicts_with = "ready")]
    pub service: String,
    /// Check readiness instead (the broker service's name: SERVING only while Redis answers and
    /// start-up finished), as clients and the load path see it.
    #[arg(long, env = "BROKER_HEALTHCHECK_READY")]
    pub ready: bool,
    /// Give up after this long.
    #[arg(long, default_value = "3s")]
    pub timeout: humantime::Duration,
    /// CA to verify a TLS broker with, enables TLS: a PEM file path or the PEM text itself (as
    /// ECS injects secrets), read exactly as the server reads BROKER_TLS_CERT.
    #[arg(long, env = "BROKER_HEALTHCHECK_CA", allow_hyphen_values = true)]
    pub tls_ca: Option<std::ffi::OsString>,
    /// Name to verify in the broker's certificate (default: the host of --addr).
    #[arg(long, env = "BROKER_HEALTHCHECK_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Client certificate for a broker that requires mTLS: PEM file path or PEM text.
    #[arg(
        long,
        env = "BROKER_HEALTHCHECK_CLIENT_CERT",
        allow_hyphen_values = true
    )]
    pub tls_cert: Option<std::ffi::OsString>,
    /// Client key for a broker that requires mTLS: PEM file path or PEM text.
    #[arg(
        long,
        env = "BROKER_HEALTHCHECK_CLIENT_KEY",
        allow_hyphen_values = true,
        hide_env_values = true
    )]
    pub tls_key: Option<std::ffi::OsString>,
}

/// Why the health check could not even ask: the setting and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthcheckError {
    /// A PEM setting could not be used (the value itself is never shown).
    #[error("{var}: {reason}")]
    Pem { var: &'static str, reason: String },
    /// A client certificate without its key, or the reverse.
    #[error(
        "BROKER_HEALTHCHECK_CLIENT_CERT and BROKER_HEALTHCHECK_CLIENT_KEY go together; set both or neither"
    )]
    HalfIdentity,
}

/// Reads one PEM setting of the health check.
fn pem(var: &'static str, value: &std::ffi::OsStr) -> Result<Vec<u8>, HealthcheckError> {
    credbroker_kit::pem::PemSource::parse(value)
        .map_err(|reason| HealthcheckError::Pem { var, reason })?
        .load(var)
        .map_err(|e| HealthcheckError::Pem {
            var,
            reason: e.message,
        })
}

/// The endpoint the health check dials, with TLS when a CA is given.
fn health_endpoint(
    args: &HealthcheckArgs,
    uri: &str,
) -> Result<tonic::transport::Endpoint, Box<dyn std::error::Error>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let Some(ca) = &args.tls_ca else {
        return Ok(tonic::transport::Endpoint::from_shared(uri.to_string())?);
    };
    let uri = uri.replacen("http://", "https://", 1);
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem("BROKER_HEALTHCHECK_CA", ca)?));
    if let Some(domain) = &args.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                pem("BROKER_HEALTHCHECK_CLIENT_CERT", cert)?,
                pem("BROKER_HEALTHCHECK_CLIENT_KEY", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(HealthcheckError::HalfIdentity.into()),
    }
    Ok(tonic::transport::Endpoint::from_shared(uri)?.tls_config(tls)?)
}

/// Runs the health check; the exit code is the answer (0 SERVING, 1 anything else).
pub async fn healthcheck(args: HealthcheckArgs) -> i32 {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus as S, health_client::HealthClient,
    };
    let addr = args
        .addr
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let uri = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let check = async {
        let channel = health_endpoint(&args, &uri)?.connect().await?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: if args.ready {
                    SERVICE_NAME.to_string()
                } else {
                    args.service.clone()
                },
            })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(resp.into_inner().status)
    };
    match tokio::time::timeout(args.timeout.into(), check).await {
        Ok(Ok(s)) if s == S::Serving as i32 => {
            println!("SERVING");
            0
        }
        Ok(Ok(s)) => {
            println!(
                "{}",
                S::try_from(s).map(|s| s.as_str_name()).unwrap_or("UNKNOWN")
            );
            1
        }
        Ok(Err(e)) => {
            eprintln!("healthcheck: {uri}: {e}");
            1
        }
        Err(_) => {
            eprintln!("healthcheck: {uri}: no answer within {}", args.timeout);
            1
        }
    }
}
