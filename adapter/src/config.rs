//! Settings: one flag per setting, each with its environment variable.
//!
//! Every value is parsed and checked before the adapter binds its port, so a typo fails the start
//! with one line that names the environment variable, instead of surfacing later as a refused
//! request. The adapter reads no AWS credential settings: `AWS_REGION` only picks the signing
//! region, credentials always come from the broker.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory, Parser, ValueEnum, error::ContextKind, error::ContextValue};
use url::Url;

/// Which JSON-RPC requests need `Authorization: Bearer <JWT>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RequireAuth {
    /// Everything except `initialize`, `ping`, `tools/list`, `server/discover`, notifications and
    /// responses (the incident's frontend initializes without a token).
    Tools,
    /// Every request on `/mcp`.
    All,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The adapter's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mcp-adapter",
    version,
    about = "MCP server (Streamable HTTP) whose S3 tools run only on credentials from the credential broker"
)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "ADAPTER_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// gRPC URL of the credential broker (http:// or https://).
    #[arg(long, env = "ADAPTER_BROKER_URL", default_value = "http://127.0.0.1:50051", value_parser = parse_broker_url)]
    pub broker_url: Url,

    /// PEM file with the CA that signed the broker's certificate (https only; default: system roots).
    #[arg(long, env = "ADAPTER_BROKER_CA_FILE")]
    pub broker_ca_file: Option<PathBuf>,

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

    /// Comma-separated Host header values accepted on /mcp (DNS-rebinding protection); `*` accepts
    /// any. The host of ADAPTER_RESOURCE_URL is always accepted.
    #[arg(long, env = "ADAPTER_ALLOWED_HOSTS", value_delimiter = ',', default_value = "localhost,127.0.0.1,::1", value_parser = parse_host)]
    pub allowed_hosts: Vec<String>,

    /// Which requests need a bearer token: `tools` (tool calls and everything that is not part of
    /// connecting) or `all`.
    #[arg(long, env = "ADAPTER_REQUIRE_AUTH", value_enum, default_value_t = RequireAuth::Tools)]
    pub require_auth: RequireAuth,

    /// Log format.
    #[arg(long, env = "ADAPTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest accepted request body (bytes, or with a KiB/MiB suffix); larger bodies get 413.
    #[arg(long, env = "ADAPTER_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: usize,

    /// How long an idle MCP session is kept (for example 5m).
    #[arg(long, env = "ADAPTER_SESSION_IDLE", default_value = "5m", value_parser = parse_session_idle)]
    pub session_idle: Duration,
}

/// A setting that could not be used, with the environment variable that holds it.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

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
        if self.broker_ca_file.is_some() && self.broker_url.scheme() != "https" {
            return Err(ConfigError {
                variable: "ADAPTER_BROKER_CA_FILE".into(),
                message: "set, but ADAPTER_BROKER_URL is not https://".into(),
            });
        }
        if let Some(path) = &self.broker_ca_file
            && !path.is_file()
        {
            return Err(ConfigError {
                variable: "ADAPTER_BROKER_CA_FILE".into(),
                message: format!("{} is not a readable file", path.display()),
            });
        }
        Ok(())
    }

    /// The RFC 9728 `resource` identifier: the configured URL, or `http://<listen>/mcp`.
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

/// Turns a clap error into `VARIABLE: what was wrong`, one line.
fn describe_clap_error(error: &clap::Error) -> ConfigError {
    let rendered = error.render().to_string();
    let first_line = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid configuration")
        .trim_start_matches("error: ")
        .to_string();
    let variable = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => env_for_arg(arg),
        _ => None,
    }
    .unwrap_or_else(|| "command line".into());
    ConfigError {
        variable,
        message: first_line,
    }
}

/// `--listen <LISTEN>` → `ADAPTER_LISTEN`.
fn env_for_arg(rendered_arg: &str) -> Option<String> {
    let long = rendered_arg
        .split_whitespace()
        .next()?
        .trim_start_matches("--");
    Config::command()
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
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
        assert_eq!(config.require_auth, RequireAuth::Tools);
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

    #[test]
    fn ca_file_needs_https() {
        let error = load(&["--broker-ca-file", "/etc/hostname"])
            .expect_err("must fail")
            .expect_err("not help");
        assert_eq!(error.variable, "ADAPTER_BROKER_CA_FILE");
    }

    #[test]
    fn help_is_not_an_error() {
        assert!(matches!(load(&["--help"]), Err(Ok(_))));
    }
}
