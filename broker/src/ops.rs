//! What operators and orchestrators see: gRPC health (for `""` and the broker service), server
//! reflection in v1 and v1alpha (grpcurl 1.8 only speaks v1alpha), logging, the shutdown signal,
//! and the `healthcheck` subcommand that ECS container health checks run.

use crate::config::LogFormat;
use crate::store::{AnyStore, Store};
use credbroker_proto::{FILE_DESCRIPTOR_SET, SERVICE_NAME};
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Installs the tracing subscriber. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Reflection services (v1 and v1alpha) describing the broker and health APIs.
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

/// Health of the broker: SERVING while its store answers, NOT_SERVING when it does not or when
/// shutting down. Cloneable handle over the reporter.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    pub fn new(reporter: HealthReporter) -> Self {
        Self { reporter }
    }

    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(SERVICE_NAME, status).await;
    }

    /// Pings the store every `every`; flips the status when the answer changes and logs the flip.
    /// Stops when `shutdown` fires.
    pub async fn watch_store(
        self,
        store: Arc<AnyStore>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut serving = true;
        loop {
            let ok = match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    if serving {
                        tracing::error!(store = store.kind(), error = %e, "store unreachable; health NOT_SERVING");
                    }
                    false
                }
                Err(_) => {
                    if serving {
                        tracing::error!(
                            store = store.kind(),
                            "store ping timed out; health NOT_SERVING"
                        );
                    }
                    false
                }
            };
            if ok && !serving {
                tracing::info!(
                    store = store.kind(),
                    "store reachable again; health SERVING"
                );
            }
            if ok != serving {
                serving = ok;
                if !*shutdown.borrow() {
                    self.set(serving).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Resolves on SIGTERM (ECS stop) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Flags of `healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Broker address (host:port); the same variable the broker listens on.
    #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Service to check; the empty string checks the server as a whole.
    #[arg(long, default_value = SERVICE_NAME)]
    pub service: String,
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
    crate::pem::load(value).map_err(|reason| HealthcheckError::Pem { var, reason })
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
                service: args.service.clone(),
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
