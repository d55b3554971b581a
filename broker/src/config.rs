//! Configuration: clap flags, each with an environment variable (ECS passes env), validated into
//! a [`Config`] whose every field is usable as is. A bad setting stops the broker at start with one
//! line that names the variable, e.g. `BROKER_JWT_LEEWAY: "soon" is not a duration (e.g. 60s)`.

use crate::audit::AuditTarget;
use crate::role::ArnGlob;
use crate::secret::{Key32, Secret};
use crate::token::JwksSource;
use clap::{Args, Parser, Subcommand, ValueEnum};
use credbroker_kit::pem::PemSource;
use jsonwebtoken::Algorithm;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// `credential-broker`: validates JWTs and serves scoped, short-lived STS credentials over gRPC.
#[derive(Debug, Parser)]
#[command(
    name = "credential-broker",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// Parses flags and environment. On a bad value: one line naming the environment variable
    /// (`BROKER_JWT_LEEWAY: invalid value 'soon' …: "soon" is not a duration …`). `--help` and
    /// `--version` come back as `Err(Ok(text))`, to print and exit 0.
    pub fn parse_from_env<I, T>(args: I) -> Result<Cli, Result<String, ConfigError>>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::error::ErrorKind;
        Cli::try_parse_from(args).map_err(|error| match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Ok(error.render().to_string()),
            _ => Err(describe_clap_error(&error)),
        })
    }
}

/// A clap error as `VARIABLE: what was wrong`, one line (the rule both binaries share).
fn describe_clap_error(error: &clap::Error) -> ConfigError {
    use clap::CommandFactory;
    credbroker_kit::config::describe_clap_error(error, &Cli::command())
}

/// Subcommands; none means `serve`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service (the default).
    Serve(Box<ServeArgs>),
    /// Sign a development HS256 token with the configured secret.
    MintToken(crate::mint::MintArgs),
    /// Exit 0 if the broker at --addr reports SERVING (for container health checks).
    Healthcheck(crate::ops::HealthcheckArgs),
    /// The audit trail: `audit verify FILE` checks its hash chain.
    Audit(crate::audit::AuditArgs),
}

pub use credbroker_kit::logging::LogFormat;

/// How credentials are obtained from STS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StsMode {
    /// sts:AssumeRole with the broker's own identity (SourceIdentity, tags, session policy).
    AssumeRole,
    /// sts:AssumeRoleWithWebIdentity with the caller's token; the broker needs no AWS identity.
    WebIdentity,
}

/// Flags of `serve`, parsed into typed values by clap value parsers (an error names the variable:
/// see [`Cli::parse_from_env`]); [`ServeArgs::validate`] then checks only what spans settings,
/// and reads files. Secret-bearing values stay [`Secret`] strings until `validate`, so no parse
/// error can echo them (clap's errors quote the value). Another module's flags join with one
/// `#[command(flatten)]` field.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the gRPC listener.
    #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:50051", value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// Once listening, write the bound address (`host:port`) to this file: with a port of 0 in
    /// BROKER_LISTEN, how whoever started the broker learns the port the kernel chose.
    #[arg(long, env = "BROKER_LISTEN_ADDR_FILE")]
    pub listen_addr_file: Option<PathBuf>,
    /// Address of the Prometheus metrics listener (off when unset or empty; port 0 picks one).
    #[arg(long, env = "BROKER_METRICS_LISTEN", default_value = "", hide_default_value = true, value_parser = unless_empty(parse_addr))]
    pub metrics_listen: Maybe<SocketAddr>,
    /// Once the metrics listener listens, write its bound address (`host:port`) to this file:
    /// with a port of 0 in BROKER_METRICS_LISTEN, how a starter learns the port.
    #[arg(long, env = "BROKER_METRICS_ADDR_FILE")]
    pub metrics_addr_file: Option<PathBuf>,
    /// Shared secret for HS256/384/512 tokens.
    #[arg(long, env = "BROKER_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<Secret>,
    /// File holding the HS256 secret (trailing newline ignored).
    #[arg(long, env = "BROKER_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// URL of a JWKS document with the token issuer's public keys.
    #[arg(long, env = "BROKER_JWKS_URL", value_parser = parse_url)]
    pub jwks_url: Option<Url>,
    /// File holding a JWKS document.
    #[arg(long, env = "BROKER_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Allow a plain-http JWKS URL or OIDC issuer that is not on loopback. Never in production:
    /// whoever can alter the document on the way can sign tokens the broker accepts.
    #[arg(long, env = "BROKER_JWKS_ALLOW_HTTP")]
    pub jwks_allow_http: bool,
    /// OIDC issuer URL (exactly its `iss`): keys from its discovery document's `jwks_uri`, and the
    /// issuer becomes the required `iss`.
    #[arg(long, env = "BROKER_OIDC_ISSUER_URL", default_value = "", hide_default_value = true, value_parser = unless_empty(WrittenUrl::parse))]
    pub oidc_issuer_url: Maybe<WrittenUrl>,
    /// Accepted `typ` header values, comma-separated (e.g. `at+jwt`, RFC 9068); unchecked when unset.
    #[arg(long, env = "BROKER_JWT_TYPES", value_delimiter = ',')]
    pub jwt_types: Vec<String>,
    /// Least time between JWKS refetches triggered by an unknown `kid`.
    #[arg(long, env = "BROKER_JWKS_REFETCH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub jwks_refetch_interval: Duration,
    /// Allowed token algorithms, comma-separated (default: HS256 with a secret, RS256,ES256,EdDSA with a JWKS).
    #[arg(long, env = "BROKER_JWT_ALGORITHMS", default_value = "", hide_default_value = true, value_parser = unless_empty(parse_algorithms))]
    pub jwt_algorithms: Maybe<Vec<Algorithm>>,
    /// Accepted `iss` values, comma-separated (required with a JWKS; unchecked for HS256 when unset).
    #[arg(long, env = "BROKER_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,
    /// Accepted `aud` values, comma-separated (required with a JWKS; unchecked for HS256 when unset).
    #[arg(long, env = "BROKER_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
    /// Clock skew allowed on `nbf` (never on `exp`: no credential past a token's expiry).
    #[arg(long, env = "BROKER_JWT_LEEWAY", default_value = "60s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
    /// Role ARN globs a token may be granted, comma-separated; `*` stays within one ARN segment.
    #[arg(long, env = "BROKER_ALLOWED_ROLE_ARNS", default_value = "", hide_default_value = true, value_parser = unless_empty(crate::role::parse_allowlist))]
    pub allowed_role_arns: Maybe<Vec<ArnGlob>>,
    /// Allow any role a token names (no allowlist). For development only.
    #[arg(long, env = "BROKER_ALLOW_ANY_ROLE")]
    pub allow_any_role: bool,
    /// Account for role names (not ARNs) in the `roles` claim.
    #[arg(long, env = "BROKER_ROLE_ACCOUNT_ID", default_value = "", hide_default_value = true, value_parser = unless_empty(crate::role::parse_account_id))]
    pub role_account_id: Maybe<String>,
    /// Claims copied into STS session tags, comma-separated.
    #[arg(long, env = "BROKER_TAG_CLAIMS", value_delimiter = ',', value_parser = parse_tag_claim)]
    pub tag_claims: Vec<String>,
    /// How credentials are obtained.
    #[arg(long, env = "BROKER_STS_MODE", value_enum, ignore_case = true, default_value_t = StsMode::AssumeRole)]
    pub sts_mode: StsMode,
    /// STS endpoint override (local emulators, VPC endpoints).
    #[arg(long, env = "BROKER_STS_ENDPOINT", default_value = "", hide_default_value = true, value_parser = unless_empty(WrittenUrl::parse))]
    pub sts_endpoint: Maybe<WrittenUrl>,
    /// AWS region for STS (default: the SDK's region chain, then us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Attempts per STS call; throttling and 5xx back off with jitter in between.
    #[arg(long, env = "BROKER_STS_MAX_ATTEMPTS", default_value = "3", value_parser = parse_sts_max_attempts)]
    pub sts_max_attempts: u32,
    /// After an STS call failed (throttling, 5xx, network), requests for that credential are
    /// answered UNAVAILABLE without asking STS for about this long; doubles per failure.
    #[arg(long, env = "BROKER_STS_COOLDOWN", default_value = "1s", value_parser = parse_sts_cooldown)]
    pub sts_cooldown: Duration,
    /// The longest such pause.
    #[arg(long, env = "BROKER_STS_COOLDOWN_MAX", default_value = "4s", value_parser = parse_sts_cooldown_max)]
    pub sts_cooldown_max: Duration,
    /// After STS refused a role (AccessDenied: its trust policy does not allow the broker or the
    /// token), requests for that credential are answered PERMISSION_DENIED without asking STS
    /// again for this long.
    #[arg(long, env = "BROKER_STS_DENIED_PAUSE", default_value = "30s", value_parser = parse_denied_pause)]
    pub sts_denied_pause: Duration,
    /// Requested credential lifetime (at least 15m; capped by the role's maximum).
    #[arg(long, env = "BROKER_CREDENTIAL_TTL", default_value = "1h", value_parser = parse_credential_ttl)]
    pub credential_ttl: Duration,
    /// Refresh credentials this long before they expire (jittered by up to 20 %).
    #[arg(long, env = "BROKER_REFRESH_MARGIN", default_value = "5m", value_parser = parse_duration)]
    pub refresh_margin: Duration,
    /// `memory`, `redis://…`, `rediss://…` or `redis+cluster://host:port,host:port`.
    #[arg(
        long,
        env = "BROKER_CACHE_URL",
        default_value = "memory",
        hide_env_values = true
    )]
    pub cache_url: Secret,
    /// Base64 32-byte key sealing what the store holds (and keying session handles).
    #[arg(long, env = "BROKER_CACHE_KEY", hide_env_values = true)]
    pub cache_key: Option<Secret>,
    /// File holding the cache key.
    #[arg(long, env = "BROKER_CACHE_KEY_FILE")]
    pub cache_key_file: Option<PathBuf>,
    /// The previous cache key, still accepted for reading during a rotation.
    #[arg(long, env = "BROKER_CACHE_KEY_PREVIOUS", hide_env_values = true)]
    pub cache_key_previous: Option<Secret>,
    /// Base64 32-byte key for session handles, credential ids and token fingerprints. Set it so
    /// that rotating BROKER_CACHE_KEY does not rename every stored record (default: derived from
    /// the cache key).
    #[arg(long, env = "BROKER_HANDLE_KEY", hide_env_values = true)]
    pub handle_key: Option<Secret>,
    /// File holding the handle key.
    #[arg(long, env = "BROKER_HANDLE_KEY_FILE")]
    pub handle_key_file: Option<PathBuf>,
    /// Allow a Redis store without a cache key (values stored in plaintext). Never in production.
    #[arg(long, env = "BROKER_INSECURE_PLAINTEXT_CACHE")]
    pub insecure_plaintext_cache: bool,
    /// How long to wait for Redis at start before exiting; `0` waits until it answers. Liveness
    /// is SERVING meanwhile (readiness is not), so an orchestrator does not restart the wait.
    #[arg(long, env = "BROKER_STORE_STARTUP_TIMEOUT", default_value = "0", value_parser = parse_startup_timeout)]
    pub store_startup_timeout: Maybe<Duration>,
    /// Accept a Redis whose maxmemory-policy evicts keys (revocations may be dropped).
    #[arg(long, env = "BROKER_REDIS_ALLOW_EVICTION")]
    pub redis_allow_eviction: bool,
    /// Serve `McpSessionWithoutToken`, which records MCP sessions opened without a token, for
    /// adapters run with ADAPTER_REQUIRE_AUTH=tools behind a load balancer. Off by default: the
    /// call needs no token, so anyone who can reach the broker could fill the store with records.
    #[arg(long, env = "BROKER_MCP_TOKENLESS_SESSIONS")]
    pub mcp_tokenless_sessions: bool,
    /// How long a session outlives its token's `exp`, waiting for a refreshed token.
    #[arg(long, env = "BROKER_SESSION_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub session_grace: Duration,
    /// How long a revoked session id stays refused.
    #[arg(long, env = "BROKER_REVOKED_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub revoked_retention: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "BROKER_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Log format.
    #[arg(long, env = "BROKER_LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// PEM certificate chain: serve gRPC over TLS (with BROKER_TLS_KEY). A file path, or the
    /// PEM text itself (a value holding a `-----BEGIN ` line).
    #[arg(long, env = "BROKER_TLS_CERT", value_parser = PemSource::clap, allow_hyphen_values = true)]
    pub tls_cert: Option<PemSource>,
    /// PEM private key of the certificate (a file path, or the PEM text itself).
    #[arg(long, env = "BROKER_TLS_KEY", value_parser = PemSource::clap, allow_hyphen_values = true, hide_env_values = true)]
    pub tls_key: Option<PemSource>,
    /// PEM CA bundle: require client certificates signed by it (mTLS). A file path or the PEM text.
    #[arg(long, env = "BROKER_TLS_CLIENT_CA", value_parser = PemSource::clap, allow_hyphen_values = true)]
    pub tls_client_ca: Option<PemSource>,
    /// Operators: JWT subjects (exact `sub`, comma-separated) allowed to call
    /// credbroker.v1.SessionAdmin with `authorization: Bearer <token>`.
    #[arg(long, env = "BROKER_ADMIN_SUBJECTS", value_delimiter = ',')]
    pub admin_subjects: Vec<String>,
    /// Operators: mTLS client-certificate names (DNS or URI SANs, comma-separated) allowed to call
    /// credbroker.v1.SessionAdmin. Needs BROKER_TLS_CLIENT_CA.
    #[arg(long, env = "BROKER_ADMIN_CLIENT_NAMES", value_delimiter = ',')]
    pub admin_client_names: Vec<String>,
    /// The audit trail: a file path (appended to; its hash chain continues across restarts) or
    /// `stdout`. One hash-chained JSON line per decision; when set and it cannot be written, the
    /// broker serves nothing (fail closed). Check a file with `credential-broker audit verify`.
    #[arg(long, env = "BROKER_AUDIT_LOG", default_value = "", hide_default_value = true, value_parser = unless_empty(parse_audit_target))]
    pub audit_log: Maybe<AuditTarget>,
    /// Per-subject rate limit and STS budget (`quota`), parsed and checked by clap there.
    #[command(flatten)]
    pub limits: crate::quota::LimitArgs,
}

/// TLS material read at start, so a missing or unreadable file stops the broker with its variable.
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Secret,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"[redacted]")
            .field("mtls", &self.client_ca_pem.is_some())
            .finish()
    }
}

impl ServeArgs {
    /// BROKER_ADMIN_SUBJECTS / BROKER_ADMIN_CLIENT_NAMES: trimmed, non-empty entries; client
    /// names only where client certificates are verified.
    fn operators(&self) -> Result<crate::operator::OperatorPolicy, ConfigError> {
        let clean = |v: &[String]| -> std::collections::HashSet<String> {
            v.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let policy = crate::operator::OperatorPolicy {
            subjects: clean(&self.admin_subjects),
            client_names: clean(&self.admin_client_names),
        };
        if !policy.client_names.is_empty() && self.tls_client_ca.is_none() {
            return Err(bad(
                "BROKER_ADMIN_CLIENT_NAMES",
                "names client certificates, but none are verified: set BROKER_TLS_CLIENT_CA (mTLS)",
            ));
        }
        Ok(policy)
    }

    fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => {
                if self.tls_client_ca.is_some() {
                    return Err(bad(
                        "BROKER_TLS_CLIENT_CA",
                        "needs BROKER_TLS_CERT and BROKER_TLS_KEY",
                    ));
                }
                Ok(None)
            }
            (Some(_), None) => Err(bad("BROKER_TLS_KEY", "is required with BROKER_TLS_CERT")),
            (None, Some(_)) => Err(bad("BROKER_TLS_CERT", "is required with BROKER_TLS_KEY")),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert_pem: cert.load("BROKER_TLS_CERT")?,
                key_pem: Secret::new(
                    String::from_utf8(key.load("BROKER_TLS_KEY")?)
                        .map_err(|_| bad("BROKER_TLS_KEY", "is not UTF-8 PEM"))?,
                ),
                client_ca_pem: self
                    .tls_client_ca
                    .as_ref()
                    .map(|ca| ca.load("BROKER_TLS_CLIENT_CA"))
                    .transpose()?,
            })),
        }
    }
}

/// A setting that cannot be used; displayed as `VARIABLE: reason` (shared with the adapter).
pub use credbroker_kit::config::ConfigError;

fn bad(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(var, reason)
}

/// Where sessions and credentials are kept.
#[derive(Debug, Clone)]
pub enum CacheConfig {
    Memory,
    /// A Redis URL (`redis://`, `rediss://`, or `redis+cluster://` with comma-separated nodes).
    Redis(Secret),
}

/// Validated configuration of `serve`.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where to write the bound address once listening (BROKER_LISTEN_ADDR_FILE).
    pub listen_addr_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    /// Where to write the metrics listener's bound address (BROKER_METRICS_ADDR_FILE).
    pub metrics_addr_file: Option<PathBuf>,
    pub hs256_secret: Option<Secret>,
    pub jwks: Option<JwksSource>,
    pub jwks_refetch_interval: Duration,
    /// Accepted `typ` headers (`BROKER_JWT_TYPES`); empty: unchecked.
    pub jwt_types: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    /// `None`: any role (`--allow-any-role`).
    pub allowed_roles: Option<Vec<ArnGlob>>,
    pub role_account_id: Option<String>,
    pub tag_claims: Vec<String>,
    pub sts_mode: StsMode,
    pub sts_endpoint: Option<String>,
    pub region: Option<String>,
    pub sts_max_attempts: u32,
    /// First pause after a failed STS call for a credential, and the longest (see `cooldown`).
    pub sts_cooldown: Duration,
    pub sts_cooldown_max: Duration,
    /// Pause after STS refused a role (`BROKER_STS_DENIED_PAUSE`).
    pub sts_denied_pause: Duration,
    pub credential_ttl: Duration,
    pub refresh_margin: Duration,
    pub cache: CacheConfig,
    /// Current cache key (32 bytes), then the previous one if any.
    pub cache_keys: Vec<Key32>,
    /// Key of the keyed hashes (handles, credential ids, fingerprints), when set apart from the
    /// cache key.
    pub handle_key: Option<Key32>,
    pub insecure_plaintext_cache: bool,
    /// How long start-up waits for Redis; `None`: until it answers.
    pub store_startup_timeout: Option<Duration>,
    /// BROKER_REDIS_ALLOW_EVICTION: an evicting Redis is accepted (and the risk logged).
    pub redis_allow_eviction: bool,
    /// BROKER_MCP_TOKENLESS_SESSIONS: `McpSessionWithoutToken` is served (it is refused otherwise).
    pub mcp_tokenless_sessions: bool,
    /// BROKER_RATE_PER_SUBJECT, BROKER_STS_RATE, BROKER_STS_MAX_WAIT (checked by clap).
    pub limits: crate::quota::LimitArgs,
    pub session_grace: Duration,
    pub revoked_retention: Duration,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    /// TLS (and mTLS) for the gRPC listener; `None`: plaintext (behind a TLS-terminating network
    /// only).
    pub tls: Option<TlsFiles>,
    /// Who may call the operator plane.
    pub operators: crate::operator::OperatorPolicy,
    /// Where the audit trail goes; `None`: no audit trail.
    pub audit: Option<crate::audit::AuditTarget>,
}

/// A duration as operators write it (`60s`, `5m`, `1h`).
fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration (e.g. 60s, 5m, 1h): {e}"))
}

/// A duration no longer than `max` (`limit` is how the error writes it).
fn duration_at_most(value: &str, max: Duration, limit: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d > max {
        return Err(format!("must be at most {limit}"));
    }
    Ok(d)
}

fn parse_sts_cooldown(value: &str) -> Result<Duration, String> {
    duration_at_most(value, Duration::from_secs(60), "60s")
}

fn parse_sts_cooldown_max(value: &str) -> Result<Duration, String> {
    duration_at_most(value, Duration::from_secs(300), "5m")
}

fn parse_denied_pause(value: &str) -> Result<Duration, String> {
    duration_at_most(value, Duration::from_secs(3600), "1h")
}

/// What STS accepts as a credential lifetime.
fn parse_credential_ttl(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d < Duration::from_secs(900) || d > Duration::from_secs(43_200) {
        return Err("must be between 15m and 12h (STS limits)".into());
    }
    Ok(d)
}

/// BROKER_STORE_STARTUP_TIMEOUT: `0` waits until the store answers (no limit), else a duration.
fn parse_startup_timeout(value: &str) -> Result<Maybe<Duration>, String> {
    match value.trim() {
        "0" => Ok(Maybe(None)),
        limit => parse_duration(limit).map(|d| Maybe(Some(d))),
    }
}

fn parse_sts_max_attempts(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=10).contains(n))
        .ok_or_else(|| "must be a whole number from 1 to 10".into())
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a socket address (e.g. 127.0.0.1:50051)"))
}

/// An absolute URL (BROKER_JWKS_URL); whether plain http is allowed spans settings, so
/// [`ServeArgs::validate`] decides that.
fn parse_url(value: &str) -> Result<Url, String> {
    Url::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))
}

/// BROKER_JWT_ALGORITHMS: comma-separated names jsonwebtoken knows (HS256/384/512, RS256/384/512,
/// PS256/384/512, ES256/384, EdDSA — each one the broker verifies, with the secret or a JWKS).
fn parse_algorithms(list: &str) -> Result<Vec<Algorithm>, String> {
    list.split(',')
        .map(|a| {
            a.trim().parse::<Algorithm>().map_err(|_| {
                format!(
                    "{:?} is not a JWT algorithm (e.g. HS256, RS256, ES256, EdDSA)",
                    a.trim()
                )
            })
        })
        .collect()
}

/// One BROKER_TAG_CLAIMS entry: a claim the broker may copy into a session tag. Empty entries
/// (`a,,b`) pass here and are dropped by [`non_empty`].
fn parse_tag_claim(value: &str) -> Result<String, String> {
    let claim = value.trim();
    if !claim.is_empty() {
        crate::token::check_tag_claim(claim).map_err(|e| e.to_string())?;
    }
    Ok(claim.to_string())
}

/// BROKER_AUDIT_LOG: `stdout` (or `-`) or a file path.
fn parse_audit_target(value: &str) -> Result<AuditTarget, String> {
    Ok(AuditTarget::parse(value))
}

/// An optional setting, already parsed: `None` when unset or set to the empty string (task
/// definitions and env files write `VAR=` for "off"). A plain `Option` field cannot mean that:
/// clap hands an empty environment value to the parser, which would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maybe<T>(pub Option<T>);

/// The value parser of a [`Maybe`] setting (with `default_value = ""`): blank is unset,
/// anything else must satisfy `parse`.
fn unless_empty<T: Clone + Send + Sync + 'static>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Maybe<T>, String> + Clone + Send + Sync + 'static {
    move |value: &str| match value.trim() {
        "" => Ok(Maybe(None)),
        value => parse(value).map(|v| Maybe(Some(v))),
    }
}

/// A URL setting parsed once, keeping the text as written: an OIDC issuer must equal the
/// tokens' `iss` byte for byte, and the parsed form is normalised (`https://idp` gains a `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenUrl {
    /// The value as configured (trimmed).
    pub text: String,
    /// The same, parsed.
    pub url: Url,
}

impl WrittenUrl {
    /// An absolute URL, or an error naming the value.
    fn parse(value: &str) -> Result<WrittenUrl, String> {
        let text = value.trim();
        Ok(WrittenUrl {
            url: parse_url(text)?,
            text: text.to_string(),
        })
    }
}

fn read_secret_file(var: &'static str, path: &PathBuf) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(var, format!("cannot read {}: {e}", path.display())))?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
}

/// A secret given as a value (`var`) or as a file (`file_var`, trailing newline ignored), not
/// both; returned with the variable it came from, so a later error names the one that was set.
fn secret_or_file(
    value: Option<&Secret>,
    file: Option<&PathBuf>,
    var: &'static str,
    file_var: &'static str,
) -> Result<Option<(&'static str, Secret)>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(bad(
            var,
            format!("give either {var} or {file_var}, not both"),
        )),
        (Some(secret), None) => Ok(Some((var, secret.clone()))),
        (None, Some(path)) => Ok(Some((file_var, read_secret_file(file_var, path)?))),
        (None, None) => Ok(None),
    }
}

/// Decodes a base64 32-byte key, once: the rest of the broker takes the bytes.
pub fn decode_key(var: &'static str, value: &str) -> Result<Key32, ConfigError> {
    Key32::from_base64(value).map_err(|e| bad(var, e.to_string()))
}

impl ServeArgs {
    /// Builds the [`Config`]. What each setting means alone its clap parser has already checked;
    /// left here are the rules that span settings (one token key source, issuer and audience
    /// with a JWKS, TLS pairs, margins against lifetimes), the secrets (kept out of clap so no
    /// error can quote them) and the files to read.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let hs256_secret = secret_or_file(
            self.jwt_hs256_secret.as_ref(),
            self.jwt_hs256_secret_file.as_ref(),
            "BROKER_JWT_HS256_SECRET",
            "BROKER_JWT_HS256_SECRET_FILE",
        )?
        .map(|(_, secret)| secret);
        if let Some(s) = &hs256_secret
            && s.len() < 32
        {
            return Err(bad(
                "BROKER_JWT_HS256_SECRET",
                format!(
                    "is {} bytes; HS256 secrets must be at least 32 bytes (RFC 7518 §3.2)",
                    s.len()
                ),
            ));
        }
        let jwks = self.jwks()?;
        let issuers = match &self.oidc_issuer_url.0 {
            Some(issuer) => vec![issuer.text.clone()],
            None => non_empty(&self.jwt_issuer),
        };
        let audiences = non_empty(&self.jwt_audience);
        if jwks.is_some() && (issuers.is_empty() || audiences.is_empty()) {
            return Err(bad(
                "BROKER_JWT_ISSUER",
                "a JWKS is configured, so BROKER_JWT_ISSUER and BROKER_JWT_AUDIENCE are both required: \
                 without them any token the identity provider issued for another application \
                 (an ID token, another API's access token) would be accepted",
            ));
        }
        if hs256_secret.is_none() && jwks.is_none() {
            return Err(bad(
                "BROKER_JWT_HS256_SECRET",
                "no token key is configured: set BROKER_JWT_HS256_SECRET(_FILE) or BROKER_JWKS_URL / BROKER_JWKS_FILE",
            ));
        }
        let algorithms = self.algorithms(hs256_secret.is_some(), jwks.is_some())?;

        let allowed_roles = match (&self.allowed_role_arns.0, self.allow_any_role) {
            (Some(globs), _) => Some(globs.clone()),
            (None, true) => None,
            (None, false) => {
                return Err(bad(
                    "BROKER_ALLOWED_ROLE_ARNS",
                    "no role allowlist: set it (e.g. arn:aws:iam::123456789012:role/app-*) or pass --allow-any-role",
                ));
            }
        };

        let (sts_cooldown, sts_cooldown_max) = (self.sts_cooldown, self.sts_cooldown_max);
        if sts_cooldown_max < sts_cooldown {
            return Err(bad(
                "BROKER_STS_COOLDOWN_MAX",
                "must be at least BROKER_STS_COOLDOWN",
            ));
        }
        if self.refresh_margin * 2 > self.credential_ttl {
            return Err(bad(
                "BROKER_REFRESH_MARGIN",
                "must be at most half of BROKER_CREDENTIAL_TTL",
            ));
        }

        let cache = match self.cache_url.expose().trim() {
            "" | "memory" => CacheConfig::Memory,
            u if u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("redis+cluster://")
                || u.starts_with("rediss+cluster://") =>
            {
                CacheConfig::Redis(Secret::new(u))
            }
            _ => {
                return Err(bad(
                    "BROKER_CACHE_URL",
                    "must be memory, redis://…, rediss://… or redis+cluster://host:port,host:port",
                ));
            }
        };
        let mut cache_keys = Vec::new();
        if let Some((var, key)) = secret_or_file(
            self.cache_key.as_ref(),
            self.cache_key_file.as_ref(),
            "BROKER_CACHE_KEY",
            "BROKER_CACHE_KEY_FILE",
        )? {
            cache_keys.push(decode_key(var, key.expose())?);
        }
        if let Some(prev) = self
            .cache_key_previous
            .as_ref()
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
        {
            if cache_keys.is_empty() {
                return Err(bad(
                    "BROKER_CACHE_KEY_PREVIOUS",
                    "is set without BROKER_CACHE_KEY",
                ));
            }
            cache_keys.push(decode_key("BROKER_CACHE_KEY_PREVIOUS", prev)?);
        }
        let handle_key = secret_or_file(
            self.handle_key.as_ref(),
            self.handle_key_file.as_ref(),
            "BROKER_HANDLE_KEY",
            "BROKER_HANDLE_KEY_FILE",
        )?
        .map(|(var, key)| decode_key(var, key.expose()))
        .transpose()?;
        if matches!(cache, CacheConfig::Redis(_))
            && cache_keys.is_empty()
            && !self.insecure_plaintext_cache
        {
            return Err(bad(
                "BROKER_CACHE_KEY",
                "a Redis store needs a cache key to seal what it holds (openssl rand -base64 32), or --insecure-plaintext-cache",
            ));
        }

        Ok(Config {
            listen: self.listen,
            listen_addr_file: self.listen_addr_file.clone(),
            metrics_listen: self.metrics_listen.0,
            metrics_addr_file: self.metrics_addr_file.clone(),
            hs256_secret,
            jwks,
            jwks_refetch_interval: self.jwks_refetch_interval,
            jwt_types: non_empty(&self.jwt_types),
            algorithms,
            issuers,
            audiences,
            leeway: self.jwt_leeway,
            allowed_roles,
            role_account_id: self.role_account_id.0.clone(),
            tag_claims: non_empty(&self.tag_claims),
            sts_mode: self.sts_mode,
            sts_endpoint: self.sts_endpoint.0.as_ref().map(|u| u.text.clone()),
            region: self.region.clone().filter(|s| !s.is_empty()),
            sts_max_attempts: self.sts_max_attempts,
            sts_cooldown,
            sts_cooldown_max,
            sts_denied_pause: self.sts_denied_pause,
            credential_ttl: self.credential_ttl,
            refresh_margin: self.refresh_margin,
            cache,
            cache_keys,
            handle_key,
            insecure_plaintext_cache: self.insecure_plaintext_cache,
            store_startup_timeout: self.store_startup_timeout.0,
            redis_allow_eviction: self.redis_allow_eviction,
            mcp_tokenless_sessions: self.mcp_tokenless_sessions,
            limits: self.limits.clone(),
            session_grace: self.session_grace,
            revoked_retention: self.revoked_retention,
            shutdown_timeout: self.shutdown_timeout,
            log_format: self.log_format,
            tls: self.tls()?,
            operators: self.operators()?,
            audit: self.audit_log.0.clone(),
        })
    }

    /// The token key set: at most one of BROKER_JWKS_URL, BROKER_JWKS_FILE and
    /// BROKER_OIDC_ISSUER_URL; a URL is https unless on loopback or BROKER_JWKS_ALLOW_HTTP is set.
    fn jwks(&self) -> Result<Option<JwksSource>, ConfigError> {
        let allow_http = self.jwks_allow_http;
        let jwks = match (&self.jwks_url, &self.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "BROKER_JWKS_URL",
                    "give either BROKER_JWKS_URL or BROKER_JWKS_FILE, not both",
                ));
            }
            (Some(url), None) => {
                crate::token::check_jwks_url(url, allow_http)
                    .map_err(|e| bad("BROKER_JWKS_URL", e.to_string()))?;
                Some(JwksSource::Url {
                    url: url.clone(),
                    allow_http,
                })
            }
            (None, Some(p)) => Some(JwksSource::File(p.clone())),
            (None, None) => None,
        };
        let Some(issuer) = &self.oidc_issuer_url.0 else {
            return Ok(jwks);
        };
        if jwks.is_some() {
            return Err(bad(
                "BROKER_OIDC_ISSUER_URL",
                "give either BROKER_OIDC_ISSUER_URL or BROKER_JWKS_URL / BROKER_JWKS_FILE, not both",
            ));
        }
        crate::token::check_jwks_url(&issuer.url, allow_http)
            .map_err(|e| bad("BROKER_OIDC_ISSUER_URL", e.to_string()))?;
        if non_empty(&self.jwt_issuer)
            .iter()
            .any(|i| *i != issuer.text)
        {
            return Err(bad(
                "BROKER_JWT_ISSUER",
                "with BROKER_OIDC_ISSUER_URL the issuer is that URL: leave BROKER_JWT_ISSUER unset (or equal to it)",
            ));
        }
        Ok(Some(JwksSource::Oidc {
            issuer: issuer.text.clone(),
            allow_http,
        }))
    }

    /// BROKER_JWT_ALGORITHMS (or its default for the configured keys); each one needs its key.
    fn algorithms(&self, has_secret: bool, has_jwks: bool) -> Result<Vec<Algorithm>, ConfigError> {
        const VAR: &str = "BROKER_JWT_ALGORITHMS";
        let list = match &self.jwt_algorithms.0 {
            Some(list) => list.clone(),
            None => {
                let mut v = Vec::new();
                if has_secret {
                    v.push(Algorithm::HS256);
                }
                if has_jwks {
                    v.extend([Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
                }
                v
            }
        };
        for alg in &list {
            let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
            if hmac && !has_secret {
                return Err(bad(VAR, format!("{alg:?} needs BROKER_JWT_HS256_SECRET")));
            }
            if !hmac && !has_jwks {
                return Err(bad(
                    VAR,
                    format!("{alg:?} needs BROKER_JWKS_URL or BROKER_JWKS_FILE"),
                ));
            }
        }
        Ok(list)
    }
}

fn non_empty(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid command line, then `extra`.
    /// (The default allowlist only where `extra` gives none.)
    fn argv<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec![
            "credential-broker",
            "--jwt-hs256-secret",
            "0123456789abcdef0123456789abcdef",
        ];
        if !extra.contains(&"--allowed-role-arns") {
            argv.extend([
                "--allowed-role-arns",
                "arn:aws:iam::123456789012:role/demo-*",
            ]);
        }
        argv.extend_from_slice(extra);
        argv
    }

    fn args(extra: &[&str]) -> ServeArgs {
        Cli::try_parse_from(argv(extra)).unwrap().serve
    }

    /// The error a start with `extra` gets, from parsing or from validation.
    fn err(extra: &[&str]) -> String {
        match Cli::parse_from_env(argv(extra)) {
            Ok(cli) => cli.serve.validate().unwrap_err().to_string(),
            Err(Err(e)) => e.to_string(),
            Err(Ok(help)) => panic!("help instead of an error: {help}"),
        }
    }

    #[test]
    fn defaults_are_usable() {
        let c = args(&[]).validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.algorithms, vec![Algorithm::HS256]);
        assert_eq!(c.leeway, Duration::from_secs(60));
        assert_eq!(c.credential_ttl, Duration::from_secs(3600));
        assert!(matches!(c.cache, CacheConfig::Memory));
    }

    #[test]
    fn bad_duration_names_the_variable() {
        assert!(err(&["--jwt-leeway", "soon"]).starts_with("BROKER_JWT_LEEWAY: "));
        assert!(err(&["--credential-ttl", "1m"]).starts_with("BROKER_CREDENTIAL_TTL: "));
    }

    #[test]
    fn no_allowlist_refuses_to_start_unless_any_role() {
        let mut a = args(&[]);
        a.allowed_role_arns = Maybe(None);
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .starts_with("BROKER_ALLOWED_ROLE_ARNS: ")
        );
        a.allow_any_role = true;
        assert!(a.validate().unwrap().allowed_roles.is_none());
    }

    #[test]
    fn short_secret_is_refused() {
        let mut a = args(&[]);
        a.jwt_hs256_secret = Some(Secret::new("short"));
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .starts_with("BROKER_JWT_HS256_SECRET: ")
        );
    }

    #[test]
    fn algorithms_need_their_keys() {
        assert!(err(&["--jwt-algorithms", "RS256"]).contains("needs BROKER_JWKS_URL"));
        assert!(err(&["--jwt-algorithms", "none"]).starts_with("BROKER_JWT_ALGORITHMS: "));
    }

    #[test]
    fn redis_without_key_needs_the_insecure_flag() {
        assert!(err(&["--cache-url", "redis://127.0.0.1:6379"]).starts_with("BROKER_CACHE_KEY: "));
        let c = args(&[
            "--cache-url",
            "redis://127.0.0.1:6379",
            "--insecure-plaintext-cache",
        ])
        .validate();
        assert!(c.is_ok());
        assert!(
            err(&["--cache-url", "redis://x", "--cache-key", "c2hvcnQ="])
                .starts_with("BROKER_CACHE_KEY: ")
        );
        assert!(err(&["--cache-url", "postgres://x"]).starts_with("BROKER_CACHE_URL: "));
    }

    #[test]
    fn bad_listen_and_mode_are_named() {
        assert!(err(&["--listen", "nowhere"]).starts_with("BROKER_LISTEN: "));
        assert!(err(&["--sts-mode", "magic"]).starts_with("BROKER_STS_MODE: "));
        assert!(err(&["--role-account-id", "12"]).starts_with("BROKER_ROLE_ACCOUNT_ID: "));
    }

    #[test]
    fn a_jwks_without_issuer_and_audience_refuses_to_start_naming_both() {
        for source in [
            ["--jwks-file", "/nonexistent/jwks.json"],
            ["--jwks-url", "https://idp.example.com/jwks"],
        ] {
            for extra in [
                &[][..],
                &["--jwt-issuer", "https://idp.example.com/"][..],
                &["--jwt-audience", "mcp"][..],
            ] {
                let mut argv = source.to_vec();
                argv.extend_from_slice(extra);
                let e = err(&argv);
                assert!(
                    e.starts_with("BROKER_JWT_ISSUER: ") && e.contains("BROKER_JWT_AUDIENCE"),
                    "{argv:?}: {e}"
                );
            }
            let mut argv = source.to_vec();
            argv.extend(["--jwt-issuer", "https://idp/", "--jwt-audience", "mcp"]);
            assert!(args(&argv).validate().is_ok(), "{argv:?}");
        }
        // HS256 alone may stay unchecked.
        assert!(args(&[]).validate().unwrap().issuers.is_empty());
    }

    #[test]
    fn jwks_url_must_be_https_unless_loopback_or_allowed() {
        let base = ["--jwt-issuer", "https://idp/", "--jwt-audience", "mcp"];
        let with = |extra: &[&str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            args(&argv).validate()
        };
        let e = with(&["--jwks-url", "http://idp.example.com/jwks"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("BROKER_JWKS_URL: ") && e.contains("BROKER_JWKS_ALLOW_HTTP"),
            "{e}"
        );
        assert!(with(&["--jwks-url", "http://127.0.0.1:9/jwks"]).is_ok());
        assert!(
            with(&[
                "--jwks-url",
                "http://idp.example.com/jwks",
                "--jwks-allow-http"
            ])
            .is_ok()
        );
    }

    #[test]
    fn oidc_issuer_becomes_the_required_issuer() {
        let c = args(&[
            "--oidc-issuer-url",
            "https://tenant.auth0.com/",
            "--jwt-audience",
            "mcp",
        ])
        .validate()
        .unwrap();
        assert_eq!(c.issuers, vec!["https://tenant.auth0.com/".to_string()]);
        assert!(matches!(c.jwks, Some(JwksSource::Oidc { .. })));
        assert!(
            err(&["--oidc-issuer-url", "https://idp/"]).contains("BROKER_JWT_AUDIENCE"),
            "audience still required"
        );
        assert!(
            err(&[
                "--oidc-issuer-url",
                "https://idp/",
                "--jwt-audience",
                "mcp",
                "--jwt-issuer",
                "https://other/"
            ])
            .starts_with("BROKER_JWT_ISSUER: ")
        );
        assert!(
            err(&[
                "--oidc-issuer-url",
                "https://idp/",
                "--jwt-audience",
                "mcp",
                "--jwks-url",
                "https://idp/jwks"
            ])
            .starts_with("BROKER_OIDC_ISSUER_URL: ")
        );
        assert!(
            err(&[
                "--oidc-issuer-url",
                "http://idp.example.com/",
                "--jwt-audience",
                "mcp"
            ])
            .starts_with("BROKER_OIDC_ISSUER_URL: ")
        );
    }

    #[test]
    fn tag_claims_the_broker_cannot_tag_refuse_to_start() {
        for claim in ["sub", "iss", "exp", "nbf", "roles", "aws:x", "a\"b"] {
            let e = err(&["--tag-claims", &format!("team,{claim}")]);
            assert!(
                e.starts_with("BROKER_TAG_CLAIMS: ") && e.contains(": claim "),
                "{claim}: {e}"
            );
        }
        assert_eq!(
            args(&["--tag-claims", "team, department"])
                .validate()
                .unwrap()
                .tag_claims,
            vec!["team", "department"]
        );
    }

    #[test]
    fn jwt_types_and_denied_pause_are_read() {
        let c = args(&["--jwt-types", "at+jwt, application/at+jwt"])
            .validate()
            .unwrap();
        assert_eq!(c.jwt_types, vec!["at+jwt", "application/at+jwt"]);
        assert_eq!(c.sts_denied_pause, Duration::from_secs(30));
        assert!(err(&["--sts-denied-pause", "2h"]).starts_with("BROKER_STS_DENIED_PAUSE: "));
    }

    /// Every setting with a parser of its own: a bad value stops the start with a line that
    /// names its environment variable (clap's error, mapped from the flag to the variable; the
    /// e2e tests `broker_config` set the variables themselves).
    #[test]
    fn each_parsed_setting_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("--metrics-listen", "BROKER_METRICS_LISTEN", "nowhere"),
            ("--jwks-url", "BROKER_JWKS_URL", "not a url"),
            (
                "--oidc-issuer-url",
                "BROKER_OIDC_ISSUER_URL",
                "idp.example.com",
            ),
            ("--sts-endpoint", "BROKER_STS_ENDPOINT", "localhost-4566"),
            (
                "--allowed-role-arns",
                "BROKER_ALLOWED_ROLE_ARNS",
                "arn:aws:s3:::bucket",
            ),
            ("--jwt-algorithms", "BROKER_JWT_ALGORITHMS", "RS256,none"),
            (
                "--store-startup-timeout",
                "BROKER_STORE_STARTUP_TIMEOUT",
                "soon",
            ),
            (
                "--role-account-id",
                "BROKER_ROLE_ACCOUNT_ID",
                "12345678901x",
            ),
            ("--tag-claims", "BROKER_TAG_CLAIMS", "team,aws:x"),
            ("--tls-cert", "BROKER_TLS_CERT", ""),
            ("--tls-key", "BROKER_TLS_KEY", " "),
            ("--tls-client-ca", "BROKER_TLS_CLIENT_CA", ""),
        ];
        for (flag, var, value) in cases {
            let e = err(&[flag, value]);
            assert!(e.starts_with(&format!("{var}: ")), "{flag} {value:?}: {e}");
        }
    }

    /// An empty value leaves an optional setting unset (`VAR=` in a task definition or env
    /// file), as before these settings were parsed by clap.
    #[test]
    fn empty_values_mean_unset() {
        let c = args(&[
            "--metrics-listen",
            "",
            "--oidc-issuer-url",
            " ",
            "--sts-endpoint",
            "",
            "--jwt-algorithms",
            "",
            "--role-account-id",
            "",
            "--audit-log",
            "",
        ])
        .validate()
        .unwrap();
        assert_eq!(c.metrics_listen, None);
        assert!(c.jwks.is_none());
        assert_eq!(c.sts_endpoint, None);
        assert_eq!(c.algorithms, vec![Algorithm::HS256]);
        assert_eq!(c.role_account_id, None);
        assert!(c.audit.is_none());
        assert_eq!(
            c.store_startup_timeout, None,
            "default 0 waits without limit"
        );
        let e = err(&["--allowed-role-arns", ""]);
        assert!(
            e.starts_with("BROKER_ALLOWED_ROLE_ARNS: no role allowlist"),
            "{e}"
        );
    }

    /// The parsed values reach the configuration as typed: an address, a duration, the URL as
    /// written (an OIDC issuer stays byte for byte what tokens carry), globs, an account.
    #[test]
    fn parsed_values_reach_the_config() {
        let c = args(&[
            "--metrics-listen",
            "127.0.0.1:9464",
            "--store-startup-timeout",
            "90s",
            "--sts-endpoint",
            "http://127.0.0.1:4566",
            "--allowed-role-arns",
            "arn:aws:iam::123456789012:role/a-*,,arn:aws:iam::123456789012:role/b",
            "--role-account-id",
            "123456789012",
            "--audit-log",
            "stdout",
        ])
        .validate()
        .unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.store_startup_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.sts_endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(c.allowed_roles.map(|g| g.len()), Some(2));
        assert_eq!(c.role_account_id.as_deref(), Some("123456789012"));
        assert_eq!(c.audit, Some(AuditTarget::Stdout));
        let c = args(&[
            "--oidc-issuer-url",
            "https://idp.example.com",
            "--jwt-audience",
            "mcp",
        ])
        .validate()
        .unwrap();
        assert_eq!(c.issuers, vec!["https://idp.example.com"], "not normalised");
    }

    /// TLS material comes through the kit's PemSource: inline PEM text or a file, and a
    /// certificate without its key (or the other way round) names the missing variable.
    #[test]
    fn tls_settings_load_through_pem_source() {
        const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----";
        let c = args(&["--tls-cert", CERT, "--tls-key", KEY])
            .validate()
            .unwrap();
        let tls = c.tls.expect("TLS on");
        assert!(
            String::from_utf8(tls.cert_pem)
                .unwrap()
                .contains("\nMIIB\n")
        );
        assert!(!format!("{:?}", args(&["--tls-key", KEY])).contains("MIIE"));
        assert!(err(&["--tls-cert", CERT]).starts_with("BROKER_TLS_KEY: "));
        assert!(err(&["--tls-key", KEY]).starts_with("BROKER_TLS_CERT: "));
        assert!(err(&["--tls-client-ca", CERT]).starts_with("BROKER_TLS_CLIENT_CA: "));
        let e = err(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", KEY]);
        assert!(e.starts_with("BROKER_TLS_CERT: cannot read"), "{e}");
    }

    /// A secret given both as a value and as a file is refused, naming both variables.
    #[test]
    fn a_secret_and_its_file_together_are_refused() {
        for (extra, var) in [
            (
                &["--cache-key", "AAAA", "--cache-key-file", "/dev/null"][..],
                "BROKER_CACHE_KEY",
            ),
            (
                &["--handle-key", "AAAA", "--handle-key-file", "/dev/null"][..],
                "BROKER_HANDLE_KEY",
            ),
            (
                &["--jwt-hs256-secret-file", "/dev/null"][..],
                "BROKER_JWT_HS256_SECRET",
            ),
        ] {
            let e = err(extra);
            assert!(
                e.starts_with(&format!("{var}: give either {var} or {var}_FILE, not both")),
                "{extra:?}: {e}"
            );
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = args(&[
            "--cache-url",
            "redis://:password@host:6379",
            "--insecure-plaintext-cache",
        ])
        .validate()
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("0123456789abcdef0123456789abcdef"));
        assert!(!dbg.contains("password"));
    }
}
