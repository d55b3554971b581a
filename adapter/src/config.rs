//! Settings: one flag per setting, each with its environment variable.
//!
//! Every value is parsed and checked before the adapter binds its port, so a typo fails the start
//! with one line that names the environment variable, instead of surfacing later as a refused
//! request. The adapter reads no AWS credential settings: `AWS_REGION` only picks the signing
//! region, credentials always come from the broker.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use url::Url;

/// Which requests need `Authorization: Bearer <JWT>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RequireAuth {
    /// Compatibility mode, opt-in, for clients that connect before they have a token (the
    /// incident's frontend): `initialize`, `ping`, `tools/list`, `server/discover` and
    /// `notifications/initialized` may come without a token, and only until the session's first
    /// accepted token gives it an owner. Everything else needs the owner's token.
    Tools,
    /// Every request on `/mcp` (the MCP authorization spec; the default).
    All,
}

/// Where MCP sessions live (README, "Adapter replicas").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionSharing {
    /// Every replica serves every session: the session's record is kept in the broker's store,
    /// read in the broker call each request makes (the default; no load-balancer stickiness).
    Broker,
    /// Sessions live only in this process: one replica, or a balancer that keeps each session on
    /// one replica. A request for a session another replica opened gets 404.
    Process,
}

/// How an answer that needs no stream is sent (README, "Answers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnswerFormat {
    /// `tools/list` and the tools that send nothing while they run (the reads and
    /// `bucket_access_check`, which stores nothing) answer with one `application/json` body (the
    /// default, as the official SDKs' JSON response mode). Such an answer is not resumable: a
    /// client that lost the connection sends the request again, which for these tools is the
    /// same. The tools that send notifications (fetch, put) still answer on an event stream.
    Json,
    /// Every answer on an event stream with event ids (and a priming event from 2025-11-25), so a
    /// client that lost the connection resumes it with `Last-Event-ID`.
    EventStream,
}

/// Log line format (shared with the broker).
pub use credbroker_kit::logging::LogFormat;

/// The adapter's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mcp-adapter",
    version,
    about = "MCP server (Streamable HTTP) whose S3 tools run only on credentials from the credential broker",
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    /// Subcommand; none means serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the HTTP server listens on.
    #[arg(long, env = "ADAPTER_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Once listening, write the bound address (`host:port`) to this file: with a port of 0 in
    /// ADAPTER_LISTEN, how whoever started the adapter learns the port the kernel chose.
    #[arg(long, env = "ADAPTER_LISTEN_ADDR_FILE")]
    pub listen_addr_file: Option<PathBuf>,

    /// gRPC URL of the credential broker (http:// or https://).
    #[arg(long, env = "ADAPTER_BROKER_URL", default_value = "http://127.0.0.1:50051", value_parser = parse_broker_url)]
    pub broker_url: Url,

    /// CA that signed the broker's certificate (https only; default: system roots): a PEM file
    /// path, or the PEM text itself (a value holding a `-----BEGIN ` line).
    #[arg(long, env = "ADAPTER_BROKER_CA", value_parser = PemSource::clap, allow_hyphen_values = true)]
    pub broker_ca: Option<PemSource>,

    /// Client certificate (chain) for mTLS to the broker: PEM file path or PEM text. Needs
    /// ADAPTER_BROKER_CLIENT_KEY.
    #[arg(long, env = "ADAPTER_BROKER_CLIENT_CERT", value_parser = PemSource::clap, allow_hyphen_values = true)]
    pub broker_client_cert: Option<PemSource>,

    /// Private key of the client certificate: PEM file path or PEM text (its value is never
    /// shown in help or errors).
    #[arg(long, env = "ADAPTER_BROKER_CLIENT_KEY", value_parser = PemSource::clap, allow_hyphen_values = true, hide_env_values = true)]
    pub broker_client_key: Option<PemSource>,

    /// Name to verify in the broker's certificate (default: the host of ADAPTER_BROKER_URL).
    #[arg(long, env = "ADAPTER_BROKER_TLS_DOMAIN")]
    pub broker_tls_domain: Option<String>,

    /// Deadline for one broker call, retries included (for example 5s, 800ms).
    #[arg(long, env = "ADAPTER_BROKER_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub broker_timeout: Duration,

    /// S3 endpoint URL (an emulator or a VPC endpoint); path-style addressing when set.
    #[arg(long, env = "ADAPTER_S3_ENDPOINT", value_parser = parse_http_url)]
    pub s3_endpoint: Option<Url>,

    /// AWS region used to sign S3 requests.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1", value_parser = parse_region)]
    pub region: String,

    /// Canonical URL of this MCP endpoint, as clients reach it (RFC 9728 `resource`).
    /// Default: http://<ADAPTER_LISTEN>/mcp.
    #[arg(long, env = "ADAPTER_RESOURCE_URL", value_parser = parse_http_url)]
    pub resource_url: Option<Url>,

    /// Comma-separated OAuth authorization server issuer URLs for the protected resource metadata.
    #[arg(long, env = "ADAPTER_AUTHORIZATION_SERVERS", value_delimiter = ',', value_parser = parse_http_url)]
    pub authorization_servers: Vec<Url>,

    /// Comma-separated browser origins allowed to call /mcp (`https://app.example.com`, `null`).
    /// Empty: every request that carries an Origin header is refused.
    #[arg(long, env = "ADAPTER_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Comma-separated buckets whose objects `resources/list` offers to callers whose token has
    /// no `buckets` claim (the objects are still read with the caller's own credentials). Empty:
    /// such callers get an empty list.
    #[arg(long, env = "ADAPTER_LISTED_BUCKETS", value_delimiter = ',', value_parser = parse_listed_bucket)]
    pub listed_buckets: Vec<String>,

    /// Comma-separated Host header values accepted on /mcp (DNS-rebinding protection); `*` accepts
    /// any. The host of ADAPTER_RESOURCE_URL is always accepted.
    #[arg(long, env = "ADAPTER_ALLOWED_HOSTS", value_delimiter = ',', default_value = "localhost,127.0.0.1,::1", value_parser = parse_host)]
    pub allowed_hosts: Vec<String>,

    /// Which requests need a bearer token: `all` (every request, as the MCP authorization spec
    /// says) or `tools` (compatibility mode: connecting may come without a token until the
    /// session has an owner).
    #[arg(long, env = "ADAPTER_REQUIRE_AUTH", value_enum, default_value_t = RequireAuth::All)]
    pub require_auth: RequireAuth,

    /// Where MCP sessions live: `broker` (every replica serves every session, through the
    /// broker's store) or `process` (only the replica that opened it).
    #[arg(long, env = "ADAPTER_SESSION_SHARING", value_enum, default_value_t = SessionSharing::Broker)]
    pub session_sharing: SessionSharing,

    /// How answers that need no stream are sent: `json` (tools/list and the tool calls that send
    /// no notifications answer with one application/json body) or `event-stream` (every answer
    /// on a resumable event stream).
    #[arg(long, env = "ADAPTER_ANSWER_FORMAT", value_enum, default_value_t = AnswerFormat::Json)]
    pub answer_format: AnswerFormat,

    /// Log format.
    #[arg(long, env = "ADAPTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest accepted request body (bytes, or with a KiB/MiB suffix); larger bodies get 413.
    #[arg(long, env = "ADAPTER_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: usize,

    /// How long an MCP session is kept without a request (for example 5m); a session still
    /// answering a request (a long tool call) is not idle.
    #[arg(long, env = "ADAPTER_SESSION_IDLE", default_value = "5m", value_parser = parse_session_idle)]
    pub session_idle: Duration,

    /// How long a session without an owner (opened without a token under
    /// ADAPTER_REQUIRE_AUTH=tools) is kept without a request (for example 30s).
    #[arg(long, env = "ADAPTER_ANONYMOUS_SESSION_IDLE", default_value = "30s", value_parser = parse_session_idle)]
    pub anonymous_session_idle: Duration,

    /// Most sessions without an owner at once; past it, `initialize` without a token gets 503
    /// with Retry-After.
    #[arg(long, env = "ADAPTER_MAX_ANONYMOUS_SESSIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_anonymous_sessions: u32,

    /// Most sessions one user (token subject) owns; a new one closes the user's least recently
    /// used session.
    #[arg(long, env = "ADAPTER_MAX_SESSIONS_PER_SUBJECT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_sessions_per_subject: u32,

    /// Most requests on /mcp being read, authenticated or answered at once; past it, 503 with
    /// Retry-After. Bounds the memory of request bodies read before authentication
    /// (ADAPTER_MAX_IN_FLIGHT × ADAPTER_MAX_BODY).
    #[arg(long, env = "ADAPTER_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,

    /// Address of the Prometheus listener (`/metrics`); off when unset.
    #[arg(long, env = "ADAPTER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Once the metrics listener listens, write its bound address (`host:port`) to this file:
    /// with a port of 0 in ADAPTER_METRICS_LISTEN, how a starter learns the port.
    #[arg(long, env = "ADAPTER_METRICS_ADDR_FILE")]
    pub metrics_addr_file: Option<PathBuf>,
}

/// Subcommands of `mcp-adapter`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Exit 0 if GET /healthz on the adapter answers 200 (for container health checks).
    Healthcheck(HealthcheckArgs),
}

/// Flags of `mcp-adapter healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Adapter address (0.0.0.0 is dialled as 127.0.0.1, [::] as [::1]).
    #[arg(long, env = "ADAPTER_LISTEN", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// A PEM value as configured: a file to read, or the PEM text itself (shared with the broker).
pub use credbroker_kit::pem::PemSource;

/// PEM material for the broker connection, read at start.
#[derive(Clone, Default)]
pub struct BrokerTls {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub domain: Option<String>,
}

/// A setting that could not be used, with the environment variable that holds it (shared with
/// the broker).
pub use credbroker_kit::config::ConfigError;

impl Config {
    /// Parses flags and environment; on a bad value returns one line naming the variable.
    /// `--help` and `--version` come back as `Err(Ok(text))` so the caller prints and exits 0.
    pub fn load_from<I, T>(args: I) -> Result<Self, Result<String, ConfigError>>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = match Self::try_parse_from(args) {
            Ok(config) => config,
            Err(error) => {
                use clap::error::ErrorKind;
                return match error.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        Err(Ok(error.render().to_string()))
                    }
                    _ => Err(Err(describe_clap_error(&error))),
                };
            }
        };
        config.validate().map_err(Err)?;
        Ok(config)
    }

    /// Rules that span settings or need more than one value parser.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.command.is_some() {
            return Ok(());
        }
        let https = self.broker_url.scheme() == "https";
        for (variable, set) in [
            ("ADAPTER_BROKER_CA", self.broker_ca.is_some()),
            (
                "ADAPTER_BROKER_CLIENT_CERT",
                self.broker_client_cert.is_some(),
            ),
            (
                "ADAPTER_BROKER_CLIENT_KEY",
                self.broker_client_key.is_some(),
            ),
            (
                "ADAPTER_BROKER_TLS_DOMAIN",
                self.broker_tls_domain.is_some(),
            ),
        ] {
            if set && !https {
                return Err(ConfigError {
                    variable: variable.into(),
                    message: "set, but ADAPTER_BROKER_URL is not https://".into(),
                });
            }
        }
        match (&self.broker_client_cert, &self.broker_client_key) {
            (Some(_), None) => {
                return Err(ConfigError {
                    variable: "ADAPTER_BROKER_CLIENT_KEY".into(),
                    message: "missing: ADAPTER_BROKER_CLIENT_CERT is set".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    variable: "ADAPTER_BROKER_CLIENT_CERT".into(),
                    message: "missing: ADAPTER_BROKER_CLIENT_KEY is set".into(),
                });
            }
            _ => {}
        }
        if let Some(domain) = &self.broker_tls_domain
            && (domain.trim().is_empty() || domain.contains(['/', ' ', ':']))
        {
            return Err(ConfigError {
                variable: "ADAPTER_BROKER_TLS_DOMAIN".into(),
                message: format!("{domain:?} is not a host name"),
            });
        }
        self.broker_tls().map(|_| ())
    }

    /// Reads the broker TLS material (files or inline PEM).
    pub fn broker_tls(&self) -> Result<BrokerTls, ConfigError> {
        let ca = match &self.broker_ca {
            Some(source) => Some(source.load("ADAPTER_BROKER_CA")?),
            None => None,
        };
        let identity = match (&self.broker_client_cert, &self.broker_client_key) {
            (Some(cert), Some(key)) => Some((
                cert.load("ADAPTER_BROKER_CLIENT_CERT")?,
                key.load("ADAPTER_BROKER_CLIENT_KEY")?,
            )),
            _ => None,
        };
        Ok(BrokerTls {
            ca,
            identity,
            domain: self.broker_tls_domain.clone(),
        })
    }

    /// The RFC 9728 `resource` identifier: the configured URL, or `http://<listen>/mcp`.
    #[allow(
        clippy::expect_used,
        reason = "`http://` + a formatted socket address + `/mcp` is always a valid URL"
    )]
    pub fn resource(&self) -> Url {
        match &self.resource_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{}/mcp", self.listen))
                .expect("a socket address forms a valid URL"),
        }
    }

    /// Host header values accepted on /mcp; empty means any (the `*` setting).
    pub fn effective_allowed_hosts(&self) -> Vec<String> {
        if self.allowed_hosts.iter().any(|h| h == "*") {
            return Vec::new();
        }
        let mut hosts = self.allowed_hosts.clone();
        if let Some(host) = self.resource().host_str() {
            let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        hosts
    }
}

/// Turns a clap error into `VARIABLE: what was wrong`, one line (the rule both binaries share).
fn describe_clap_error(error: &clap::Error) -> ConfigError {
    credbroker_kit::config::describe_clap_error(error, &Config::command())
}

fn parse_broker_url(value: &str) -> Result<Url, String> {
    let url = parse_http_url(value)?;
    if url.path() != "/" && !url.path().is_empty() {
        return Err("a gRPC URL has no path".into());
    }
    Ok(url)
}

fn parse_http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if url.host_str().is_none() {
        return Err("URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not carry credentials".into());
    }
    Ok(url)
}

fn parse_timeout(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value.trim()).map_err(|e| e.to_string())?;
    if duration < Duration::from_millis(10) || duration > Duration::from_secs(60) {
        return Err("must be between 10ms and 60s".into());
    }
    Ok(duration)
}

fn parse_session_idle(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value.trim()).map_err(|e| e.to_string())?;
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(24 * 3600) {
        return Err("must be between 1s and 24h".into());
    }
    Ok(duration)
}

fn parse_region(value: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = !value.is_empty()
        && value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(value.to_string())
    } else {
        Err("not an AWS region name (like us-east-1)".into())
    }
}

/// Bytes, or a number with a `KiB`/`MiB` (or `K`/`M`/`KB`/`MB`, also binary) suffix.
fn parse_size(value: &str) -> Result<usize, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| "expected a number of bytes, like 1048576 or 1MiB".to_string())?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown unit {other:?}; use KiB or MiB")),
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| "too large".to_string())?;
    if !(1024..=64 * 1024 * 1024).contains(&bytes) {
        return Err("must be between 1KiB and 64MiB".into());
    }
    Ok(bytes)
}

/// An origin as browsers serialize it (`scheme://host[:port]`, default port omitted), or `null`.
/// A bucket name for `ADAPTER_LISTED_BUCKETS` (S3's naming rules).
pub(crate) fn parse_listed_bucket(value: &str) -> Result<String, String> {
    let bucket = value.trim();
    crate::s3::validate_bucket(bucket)
        .map(|()| bucket.to_string())
        .map_err(|problem| format!("ADAPTER_LISTED_BUCKETS entry {bucket:?}: {problem}"))
}

pub(crate) fn parse_origin(value: &str) -> Result<String, String> {
    crate::origin::normalize(value.trim())
        .ok_or_else(|| format!("{value:?} is not an origin like https://app.example.com"))
}

fn parse_host(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(value.into());
    }
    if value.parse::<std::net::IpAddr>().is_err() {
        http::uri::Authority::try_from(value)
            .map_err(|_| format!("{value:?} is not a host or host:port"))?;
    }
    Ok(value.trim_matches(['[', ']']).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, Result<String, ConfigError>> {
        let mut all = vec!["mcp-adapter"];
        all.extend_from_slice(args);
        Config::load_from(all)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(&[]).expect("defaults parse");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(config.broker_url.as_str(), "http://127.0.0.1:50051/");
        assert_eq!(config.broker_timeout, Duration::from_secs(5));
        assert_eq!(config.max_body, 1024 * 1024);
        assert_eq!(config.require_auth, RequireAuth::All);
        assert_eq!(config.session_sharing, SessionSharing::Broker);
        assert_eq!(config.anonymous_session_idle, Duration::from_secs(30));
        assert_eq!(config.max_anonymous_sessions, 256);
        assert_eq!(config.max_sessions_per_subject, 64);
        assert_eq!(config.max_in_flight, 256);
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(config.allowed_origins.is_empty());
        assert_eq!(config.resource().as_str(), "http://127.0.0.1:8000/mcp");
    }

    #[test]
    fn a_bad_value_names_its_environment_variable_in_one_line() {
        for (args, variable) in [
            (vec!["--listen", "nowhere"], "ADAPTER_LISTEN"),
            (vec!["--broker-url", "ftp://x"], "ADAPTER_BROKER_URL"),
            (vec!["--broker-timeout", "0s"], "ADAPTER_BROKER_TIMEOUT"),
            (vec!["--max-body", "12 parsecs"], "ADAPTER_MAX_BODY"),
            (vec!["--require-auth", "some"], "ADAPTER_REQUIRE_AUTH"),
            (
                vec!["--anonymous-session-idle", "0s"],
                "ADAPTER_ANONYMOUS_SESSION_IDLE",
            ),
            (
                vec!["--max-anonymous-sessions", "0"],
                "ADAPTER_MAX_ANONYMOUS_SESSIONS",
            ),
            (
                vec!["--max-sessions-per-subject", "many"],
                "ADAPTER_MAX_SESSIONS_PER_SUBJECT",
            ),
            (vec!["--max-in-flight", "0"], "ADAPTER_MAX_IN_FLIGHT"),
            (vec!["--log-format", "xml"], "ADAPTER_LOG_FORMAT"),
            (
                vec!["--allowed-origins", "https://a.example/path"],
                "ADAPTER_ALLOWED_ORIGINS",
            ),
            (vec!["--region", "US EAST"], "AWS_REGION"),
            (
                vec!["--resource-url", "https://user:pw@h/mcp"],
                "ADAPTER_RESOURCE_URL",
            ),
        ] {
            let error = load(&args).expect_err("must fail").expect_err("not help");
            let line = error.to_string();
            assert!(line.starts_with(variable), "{line}");
            assert_eq!(line.lines().count(), 1, "{line}");
        }
    }

    #[test]
    fn sizes_accept_units_and_bounds() {
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("10").is_err());
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn lists_split_on_commas_and_resource_host_is_allowed() {
        let config = load(&[
            "--allowed-origins",
            "https://App.Example.com:443,http://localhost:3000",
            "--resource-url",
            "https://mcp.example.com/mcp",
            "--authorization-servers",
            "https://idp.example.com,https://idp2.example.com",
        ])
        .unwrap();
        assert_eq!(
            config.allowed_origins,
            vec!["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(config.authorization_servers.len(), 2);
        assert!(
            config
                .effective_allowed_hosts()
                .contains(&"mcp.example.com".to_string())
        );
    }

    #[test]
    fn star_accepts_any_host() {
        let config = load(&["--allowed-hosts", "*"]).unwrap();
        assert!(config.effective_allowed_hosts().is_empty());
    }

    fn error_variable(args: &[&str]) -> String {
        load(args)
            .expect_err("must fail")
            .expect_err("not help")
            .variable
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn ca_needs_https() {
        assert_eq!(
            error_variable(&["--broker-ca", "/etc/hostname"]),
            "ADAPTER_BROKER_CA"
        );
        assert_eq!(
            error_variable(&["--broker-tls-domain", "broker.internal"]),
            "ADAPTER_BROKER_TLS_DOMAIN"
        );
    }

    #[test]
    fn pem_text_is_recognised_by_content_and_flattened_pem_is_refused_unechoed() {
        let https = ["--broker-url", "https://broker:50051"];
        let commented = format!("# broker CA\n{PEM}");
        let config = load(&[https[0], https[1], "--broker-ca", &commented]).unwrap();
        assert!(matches!(config.broker_ca, Some(PemSource::Inline(_))));
        assert!(config.broker_tls().unwrap().ca.is_some());
        let flat = "-----BEGIN PRIVATE KEY----- c2VjcmV0a2V5 -----END PRIVATE KEY-----";
        let error = load(&[
            https[0],
            https[1],
            "--broker-client-cert",
            PEM,
            "--broker-client-key",
            flat,
        ])
        .expect_err("flattened PEM refused")
        .expect_err("not help");
        assert_eq!(error.variable, "ADAPTER_BROKER_CLIENT_KEY");
        assert!(error.message.contains("no line breaks"), "{error}");
        assert!(!error.to_string().contains("c2VjcmV0a2V5"), "{error}");
    }

    #[test]
    fn pem_values_are_files_or_inline_text() {
        let https = ["--broker-url", "https://broker.internal:50051"];
        let config = load(&[https[0], https[1], "--broker-ca", PEM]).unwrap();
        assert!(matches!(config.broker_ca, Some(PemSource::Inline(_))));
        assert_eq!(config.broker_tls().unwrap().ca.unwrap(), PEM.as_bytes());
        assert!(
            !format!("{config:?}").contains("MIIB"),
            "inline PEM is not shown"
        );

        let escaped = PEM.replace('\n', "\\n");
        let config = load(&[https[0], https[1], "--broker-ca", &escaped]).unwrap();
        assert_eq!(config.broker_tls().unwrap().ca.unwrap(), PEM.as_bytes());

        let dir = std::env::temp_dir().join(format!("adapter-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, PEM).unwrap();
        let config = load(&[https[0], https[1], "--broker-ca", file.to_str().unwrap()]).unwrap();
        assert_eq!(config.broker_ca, Some(PemSource::File(file.clone())));

        assert_eq!(
            error_variable(&[https[0], https[1], "--broker-ca", "/nonexistent/ca.pem"]),
            "ADAPTER_BROKER_CA"
        );
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        assert_eq!(
            error_variable(&[https[0], https[1], "--broker-ca", not_pem.to_str().unwrap()]),
            "ADAPTER_BROKER_CA"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn client_cert_and_key_come_together() {
        let https = ["--broker-url", "https://broker.internal:50051"];
        assert_eq!(
            error_variable(&[https[0], https[1], "--broker-client-cert", PEM]),
            "ADAPTER_BROKER_CLIENT_KEY"
        );
        assert_eq!(
            error_variable(&[https[0], https[1], "--broker-client-key", PEM]),
            "ADAPTER_BROKER_CLIENT_CERT"
        );
        assert_eq!(
            error_variable(&["--broker-client-cert", PEM, "--broker-client-key", PEM]),
            "ADAPTER_BROKER_CLIENT_CERT",
            "plain http refuses TLS settings"
        );
        let config = load(&[
            https[0],
            https[1],
            "--broker-client-cert",
            PEM,
            "--broker-client-key",
            PEM,
            "--broker-tls-domain",
            "broker.internal",
        ])
        .unwrap();
        let tls = config.broker_tls().unwrap();
        assert!(tls.identity.is_some());
        assert_eq!(tls.domain.as_deref(), Some("broker.internal"));
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_parsed() {
        assert!(load(&[]).unwrap().metrics_listen.is_none());
        let config = load(&["--metrics-listen", "0.0.0.0:9464"]).unwrap();
        assert_eq!(config.metrics_listen.unwrap().port(), 9464);
        assert_eq!(
            error_variable(&["--metrics-listen", "nowhere"]),
            "ADAPTER_METRICS_LISTEN"
        );
    }

    #[test]
    fn healthcheck_is_a_subcommand_and_no_subcommand_serves() {
        assert!(load(&[]).unwrap().command.is_none());
        let config = load(&["healthcheck", "--addr", "0.0.0.0:9000"]).unwrap();
        let Some(Command::Healthcheck(args)) = config.command else {
            panic!("healthcheck expected")
        };
        assert_eq!(args.addr.port(), 9000);
        assert_eq!(args.timeout, Duration::from_secs(3));
    }

    #[test]
    fn help_is_not_an_error() {
        assert!(matches!(load(&["--help"]), Err(Ok(_))));
    }
}
