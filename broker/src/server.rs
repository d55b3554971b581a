//! Builds the broker from a validated [`Config`] and serves it until SIGTERM, then drains.
//!
//! Start-up: the listener is bound and serves health (liveness SERVING, readiness NOT_SERVING)
//! and reflection at once; the store is awaited (`BROKER_STORE_STARTUP_TIMEOUT`, back-off, a log
//! line per attempt); then the same listener serves the broker and readiness follows its inputs.
//!
//! Shutdown order (ECS stop): health flips to NOT_SERVING, the listener stops accepting, in-flight
//! requests get `BROKER_SHUTDOWN_TIMEOUT` to finish, then the process exits 0.

use crate::admin::AdminService;
use crate::broker::{Broker, BrokerSettings};
use crate::clock::Clock;
use crate::config::{CacheConfig, Config, StsMode};
use crate::credentials::{CredentialEngine, EngineSettings};
use crate::hashing::KeyedHasher;
use crate::issuer::{AssumeRoleIssuer, Issuer, StsSettings, WebIdentityIssuer};
use crate::ops::{Health, ReadinessInput, reflection};
use crate::role::RolePolicy;
use crate::service::BrokerService;
use crate::store::redis::ConnectOptions;
use crate::store::{AnyStore, MemoryStore, RedisStore};
use crate::token::{Jwks, TokenValidator, ValidatorConfig};
use anyhow::Context;
use credbroker_proto::v1::credential_broker_server::CredentialBrokerServer;
use credbroker_proto::v1::session_admin_server::SessionAdminServer;
use std::sync::Arc;
use std::time::Duration;

/// Opens the configured store, waiting for Redis as long as `BROKER_STORE_STARTUP_TIMEOUT` says.
async fn open_store(config: &Config, clock: &Clock) -> anyhow::Result<AnyStore> {
    match &config.cache {
        CacheConfig::Memory => Ok(AnyStore::Memory(MemoryStore::with_clock(clock.clone()))),
        CacheConfig::Redis(url) => {
            let options = ConnectOptions {
                startup_timeout: config.store_startup_timeout,
                allow_eviction: config.redis_allow_eviction,
            };
            let store = RedisStore::connect_with(
                url,
                &config.cache_keys,
                config.insecure_plaintext_cache,
                options,
            )
            .await
            .map_err(anyhow::Error::msg)?
            .with_clock(clock.clone());
            if store.is_sealed() {
                tracing::info!(
                    store = store.name(),
                    keys = config.cache_keys.len(),
                    "Redis store connected; values sealed with AES-256-GCM"
                );
            } else {
                tracing::warn!(
                    store = store.name(),
                    "Redis store connected WITHOUT encryption (--insecure-plaintext-cache): anyone who can read Redis can read credentials"
                );
            }
            Ok(AnyStore::Redis(store))
        }
    }
}

/// A gRPC server builder with the configured TLS (the same for both phases of start-up).
fn server_builder(config: &Config) -> anyhow::Result<tonic::transport::Server> {
    let mut builder = tonic::transport::Server::builder();
    if crate::telemetry::enabled() {
        builder = builder.trace_fn(crate::telemetry::grpc_span);
    }
    if let Some(tls) = &config.tls {
        let mut t = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&tls.cert_pem, tls.key_pem.expose().as_bytes()),
        );
        if let Some(ca) = &tls.client_ca_pem {
            t = t.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(t)
            .context("BROKER_TLS_CERT / BROKER_TLS_KEY: unusable TLS material")?;
    }
    Ok(builder)
}

/// Connections accepted from a listener shared by the start-up server and the full one (TCP
/// no-delay on each); the socket closes when the last server stops.
fn accept(
    listener: Arc<tokio::net::TcpListener>,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    })
}

/// Runs the broker until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // One clock for the engine, sessions, pauses and the store.
    let clock = Clock::system();
    // The audit log first: a path that cannot be opened stops the broker before anything is served.
    let audit = match &config.audit {
        Some(target) => Some(crate::audit::install(
            crate::audit::AuditLog::open(target).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let mut signal = Box::pin(
        credbroker_kit::signals::shutdown_signal()
            .context("cannot register the SIGTERM / SIGINT handlers")?,
    );
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health::new(reporter).await;
    if let Some(addr) = config.metrics_listen {
        crate::metrics::install(addr, config.metrics_addr_file.as_deref()).await?;
    }
    let listener = Arc::new(
        tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("BROKER_LISTEN: cannot listen on {}", config.listen))?,
    );
    let local = listener.local_addr()?;
    if let Some(path) = &config.listen_addr_file {
        credbroker_kit::listen::write_addr_file(path, local)
            .with_context(|| format!("BROKER_LISTEN_ADDR_FILE: cannot write {}", path.display()))?;
    }

    // Start-up phase: health and reflection only, while the store connects.
    let (early_stop, early_stopped) = tokio::sync::oneshot::channel::<()>();
    let (v1, v1alpha) = reflection();
    let early = tokio::spawn(
        server_builder(&config)?
            .add_service(health_service.clone())
            .add_service(v1)
            .add_service(v1alpha)
            .serve_with_incoming_shutdown(accept(Arc::clone(&listener)), async move {
                let _ = early_stopped.await;
            }),
    );
    let opened = tokio::select! {
        opened = open_store(&config, &clock) => opened,
        () = &mut signal => {
            health.stopping().await;
            let _ = early_stop.send(());
            let _ = early.await;
            tracing::info!("stopped while waiting for the store");
            return Ok(());
        }
    };
    let _ = early_stop.send(());
    let store = Arc::new(opened?);
    let hasher = KeyedHasher::for_store(
        config.handle_key.as_ref(),
        config.cache_keys.first(),
        matches!(config.cache, CacheConfig::Redis(_)),
    );

    let jwks = match &config.jwks {
        Some(source) => Some(
            Jwks::load(source.clone(), config.jwks_refetch_interval)
                .await
                .context("BROKER_JWKS_URL / BROKER_JWKS_FILE")?,
        ),
        None => None,
    };
    let validator = TokenValidator::new(
        ValidatorConfig {
            algorithms: config.algorithms.clone(),
            issuers: config.issuers.clone(),
            audiences: config.audiences.clone(),
            leeway_secs: config.leeway.as_secs(),
            tag_claims: config.tag_claims.clone(),
            types: config.jwt_types.clone(),
        },
        config.hs256_secret.as_ref(),
        jwks,
    )
    .with_clock(clock.clone());
    let roles = RolePolicy::new(config.allowed_roles.clone(), config.role_account_id.clone());
    let sts = StsSettings {
        endpoint: config.sts_endpoint.clone(),
        region: config.region.clone(),
        max_attempts: config.sts_max_attempts,
    };
    let issuer = match config.sts_mode {
        StsMode::AssumeRole => Issuer::AssumeRole(AssumeRoleIssuer::new(&sts).await),
        StsMode::WebIdentity => Issuer::WebIdentity(WebIdentityIssuer::new(&sts).await),
    };
    let duration_secs = config.credential_ttl.as_secs() as i32;
    let sts_budget = config.limits.sts_budget(&store, &clock);
    let subject_limit = config.limits.subject_limit(&store, &clock, &hasher);
    let engine = CredentialEngine::new(
        Arc::clone(&store),
        issuer,
        hasher.clone(),
        EngineSettings {
            refresh_margin: config.refresh_margin,
            sts_cooldown: config.sts_cooldown,
            sts_cooldown_max: config.sts_cooldown_max,
            sts_denied_pause: config.sts_denied_pause,
            clock,
            sts_budget,
            ..EngineSettings::default()
        },
    );
    let broker = Arc::new(Broker::new(
        validator,
        roles,
        Arc::clone(&engine),
        Arc::clone(&store),
        hasher,
        BrokerSettings {
            session_grace: config.session_grace,
            revoked_retention: config.revoked_retention,
            duration_secs,
            subject_limit,
        },
    ));

    if let Some(audit) = audit {
        let mut start = crate::audit::Event::new("start", "ok");
        start.version = Some(env!("CARGO_PKG_VERSION"));
        if let Err(e) = audit.record(&start) {
            // Not fatal: the broker starts NOT_SERVING and recovers when the log is writable.
            tracing::error!(error = %e, "cannot write the audit log's start record");
            health.set_input(ReadinessInput::Audit, false).await;
        }
    }
    if !config.operators.is_enabled() {
        tracing::warn!(
            "credbroker.v1.SessionAdmin refuses every call: set BROKER_ADMIN_SUBJECTS and/or BROKER_ADMIN_CLIENT_NAMES to name operators"
        );
    }
    let (v1, v1alpha) = reflection();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(health.clone().watch_store(
        Arc::clone(&store),
        Duration::from_secs(1),
        config.redis_allow_eviction,
        stop_rx.clone(),
    ));
    {
        // Expired records: the memory store drops them here; Redis expires records itself, and
        // here only the session index is trimmed. Old STS pauses are forgotten too.
        let store = Arc::clone(&store);
        let engine = Arc::clone(&engine);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(store.sweep_interval()) => {}
                    _ = stop.changed() => return,
                }
                engine.sweep();
                if let Err(e) = store.sweep().await {
                    tracing::warn!(store = store.kind(), error = %e, "store sweep failed; retrying later");
                }
            }
        });
    }

    let allowlist = match &config.allowed_roles {
        Some(globs) => globs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        None => "ANY ROLE (--allow-any-role)".to_string(),
    };
    tracing::info!(
        listen = %local,
        store = store.kind(),
        sts_mode = ?config.sts_mode,
        sts_endpoint = config.sts_endpoint.as_deref().unwrap_or("default"),
        algorithms = ?config.algorithms,
        allowed_roles = %allowlist,
        tls = match &config.tls { None => "off", Some(t) if t.client_ca_pem.is_some() => "mtls", Some(_) => "on" },
        startup_ms = started.elapsed().as_millis() as u64,
        "credential broker serving"
    );

    let mut stop_for_server = stop_rx.clone();
    let server = tokio::spawn(
        server_builder(&config)?
            .add_service(health_service)
            .add_service(v1)
            .add_service(v1alpha)
            .add_service(CredentialBrokerServer::new(
                BrokerService::new(Arc::clone(&broker))
                    .with_tokenless_sessions(config.mcp_tokenless_sessions),
            ))
            .add_service(SessionAdminServer::new(AdminService::new(
                broker,
                config.operators.clone(),
            )))
            .serve_with_incoming_shutdown(accept(listener), async move {
                let _ = stop_for_server.wait_for(|s| *s).await;
            }),
    );
    health.set_input(ReadinessInput::Started, true).await;

    signal.await;
    health.stopping().await;
    let _ = stop_tx.send(true);
    let outcome = match tokio::time::timeout(config.shutdown_timeout, server).await {
        Ok(Ok(Ok(()))) => {
            tracing::info!("drained; bye");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(e).context("gRPC server failed"),
        Ok(Err(e)) => Err(e).context("gRPC server task failed"),
        Err(_) => {
            tracing::warn!(timeout = ?config.shutdown_timeout, "in-flight requests did not finish in time; exiting");
            Ok(())
        }
    };
    // The last record, after in-flight requests finished (or were given up).
    if let Some(audit) = audit {
        let _ = audit.record(&crate::audit::Event::new("stop", "ok"));
    }
    outcome
}
