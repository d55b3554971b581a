//! S3 clients built from exactly the credentials the broker issued, and `s3://` parsing.
//!
//! This is the only place the adapter builds an AWS client, and it never consults the default
//! credential chain: the crate does not depend on `aws-config`, and every client gets a static
//! provider holding one broker answer. A client is reused for as long as those credentials are
//! valid (keyed by access key id: STS issues a new one with every new credential set); all
//! clients share one HTTPS connection pool.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, Region, SharedHttpClient, http::HttpResponse, timeout::TimeoutConfig,
    },
    error::{ProvideErrorMetadata, SdkError},
};
use aws_smithy_http_client::tls;
use url::Url;

/// Most clients kept; beyond it the ones expiring first are dropped.
const MAX_CACHED_CLIENTS: usize = 1024;

/// Builds and caches per-credential S3 clients.
pub(crate) struct S3Clients {
    region: Region,
    endpoint: Option<String>,
    http: SharedHttpClient,
    cache: Mutex<HashMap<String, CachedClient>>,
}

struct CachedClient {
    credentials: Credentials,
    expires_at: SystemTime,
    client: Client,
}

impl S3Clients {
    pub(crate) fn new(region: &str, endpoint: Option<&Url>) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        Self {
            region: Region::new(region.to_string()),
            endpoint: endpoint.map(|url| url.as_str().trim_end_matches('/').to_string()),
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The client for these credentials: cached while they are valid, built otherwise.
    pub(crate) fn client(&self, credentials: &Credentials, expires_at: SystemTime) -> Client {
        let now = SystemTime::now();
        let key = credentials.access_key_id().to_string();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.get(&key)
            && cached.expires_at > now
            && cached.credentials == *credentials
        {
            return cached.client.clone();
        }
        let client = self.build(credentials.clone());
        cache.retain(|_, cached| cached.expires_at > now);
        if cache.len() >= MAX_CACHED_CLIENTS
            && let Some(first) = cache
                .iter()
                .min_by_key(|(_, cached)| cached.expires_at)
                .map(|(key, _)| key.clone())
        {
            cache.remove(&first);
        }
        cache.insert(
            key,
            CachedClient {
                credentials: credentials.clone(),
                expires_at,
                client: client.clone(),
            },
        );
        client
    }

    /// Number of cached clients (tests and diagnostics).
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().unwrap().len()
    }

    fn build(&self, credentials: Credentials) -> Client {
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(self.region.clone())
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .http_client(self.http.clone())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        Client::from_conf(config.build())
    }
}

pub(crate) use credbroker_kit::s3::{
    ObjectUri, object_uri, parse_bucket, parse_object_uri, validate_bucket, validate_key,
};

/// An S3 call that failed, reduced to what a tool result shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Failure {
    /// The AWS error code (`AccessDenied`, `NoSuchKey`, `NoSuchBucket`, …), or the adapter's name
    /// for a failure without one (`NetworkError`, `Timeout`).
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) http_status: Option<u16>,
}

impl S3Failure {
    pub(crate) fn from_sdk<E>(error: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match error {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let err = service.err();
                let code = err
                    .code()
                    .map(str::to_string)
                    .unwrap_or_else(|| code_for_status(Some(status)));
                let message = err
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("S3 answered HTTP {status}"));
                Self {
                    code,
                    message,
                    http_status: Some(status),
                }
            }
            SdkError::TimeoutError(_) => Self {
                code: "Timeout".into(),
                message: "S3 did not answer in time".into(),
                http_status: None,
            },
            SdkError::DispatchFailure(_) => Self {
                code: "NetworkError".into(),
                message: format!("could not reach S3: {}", describe_chain(error)),
                http_status: None,
            },
            SdkError::ResponseError(_) => Self {
                code: "InvalidResponse".into(),
                message: "S3 sent a response that could not be read".into(),
                http_status: None,
            },
            _ => Self {
                code: "RequestNotSent".into(),
                message: describe_chain(error),
                http_status: None,
            },
        }
    }
}

/// A code for errors S3 answers without a body (HEAD requests).
fn code_for_status(status: Option<u16>) -> String {
    match status {
        Some(403) => "AccessDenied",
        Some(404) => "NotFound",
        Some(301) => "PermanentRedirect",
        Some(400) => "BadRequest",
        Some(412) => "PreconditionFailed",
        Some(500..=599) => "InternalError",
        _ => "UnknownError",
    }
    .to_string()
}

fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker refuses a token's `buckets` claim naming `192.168.1.1`; the adapter's tool
    /// arguments and `ADAPTER_LISTED_BUCKETS` now refuse it too (before, it was accepted here).
    #[test]
    fn ip_shaped_bucket_names_are_refused_as_the_broker_refuses_them() {
        assert!(validate_bucket("192.168.1.1").is_err());
        assert!(parse_bucket("192.168.1.1").is_err());
        assert!(parse_bucket("s3://192.168.1.1/logs/").is_err());
        assert!(parse_object_uri("s3://192.168.1.1/a.txt").is_err());
        let listed = crate::config::parse_listed_bucket("192.168.1.1").unwrap_err();
        assert!(listed.contains("not an IP address"), "{listed}");
    }

    #[test]
    fn clients_are_reused_per_access_key_while_valid() {
        let clients = S3Clients::new("us-east-1", None);
        let expires = SystemTime::now() + Duration::from_secs(600);
        let a = Credentials::new("ASIAA", "s", Some("t".into()), Some(expires), "test");
        let b = Credentials::new("ASIAB", "s", Some("t".into()), Some(expires), "test");
        clients.client(&a, expires);
        clients.client(&a, expires);
        assert_eq!(clients.cached(), 1);
        clients.client(&b, expires);
        assert_eq!(clients.cached(), 2);
        // Same key id with other secrets is never served from the cache entry of the first.
        let a2 = Credentials::new("ASIAA", "other", Some("t".into()), Some(expires), "test");
        clients.client(&a2, expires);
        assert_eq!(clients.cached(), 2);
    }

    #[test]
    fn missing_codes_come_from_the_status() {
        assert_eq!(code_for_status(Some(403)), "AccessDenied");
        assert_eq!(code_for_status(Some(404)), "NotFound");
        assert_eq!(code_for_status(None), "UnknownError");
    }
}
