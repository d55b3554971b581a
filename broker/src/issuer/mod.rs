//! One STS call per credential: `AssumeRole` (the broker's own identity assumes the user's role,
//! adding SourceIdentity, session tags and the bucket policy) or `AssumeRoleWithWebIdentity` (the
//! user's token is itself the proof; the broker needs no AWS identity).
//!
//! Errors are classified by what the caller can do about them, as aws-config's credential
//! providers do: retry later, fix the request, or fix the broker's configuration.

mod assume_role;
mod web_identity;

pub use assume_role::AssumeRoleIssuer;
pub use web_identity::WebIdentityIssuer;

use crate::secret::Secret;
use aws_sdk_sts::error::ProvideErrorMetadata;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// What one STS call needs.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub role_arn: String,
    pub role_session_name: String,
    pub source_identity: String,
    pub tags: BTreeMap<String, String>,
    pub policy: Option<String>,
    pub duration_secs: i32,
    /// The caller's token, for web-identity mode only.
    pub web_identity_token: Option<Secret>,
}

/// Credentials STS returned. Secrets stay in [`Secret`].
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expiration: SystemTime,
    pub assumed_role_arn: String,
}

/// Why STS gave no credentials, by what can be done about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// Throttling, 5xx, timeouts, network: try again later (UNAVAILABLE).
    #[error("STS is unavailable: {0}")]
    Retryable(String),
    /// STS refused this role for this caller: the role's trust policy or the broker's permissions
    /// do not allow it (PERMISSION_DENIED).
    #[error("STS refused to issue credentials for the role: {0}")]
    Denied(String),
    /// STS refused the request's content (policy, tags, duration) (FAILED_PRECONDITION).
    #[error("STS rejected the request: {0}")]
    Rejected(String),
    /// The broker itself cannot call STS: no or invalid AWS identity, bad endpoint
    /// (FAILED_PRECONDITION; an operator must act).
    #[error("the broker cannot call STS: {0}")]
    Configuration(String),
}

/// The issuer in use.
#[derive(Debug, Clone)]
pub enum Issuer {
    AssumeRole(AssumeRoleIssuer),
    WebIdentity(WebIdentityIssuer),
    /// Unit tests only: counts calls, can be slowed down or made to fail.
    #[cfg(test)]
    Fake(std::sync::Arc<fake::FakeIssuer>),
}

impl Issuer {
    /// Makes one STS call, in an `sts.<operation>` client span when traces are exported (the
    /// role ARN only: no token, no session policy, no tags).
    pub async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssueError> {
        use tracing::Instrument;
        let operation = self.operation();
        let span = crate::telemetry::span!(
            "sts.call",
            otel.name = format!("STS.{operation}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "aws-api",
            rpc.service = "STS",
            rpc.method = operation,
            aws.iam.role_arn = %req.role_arn,
        );
        let result = self.issue_untraced(req).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// The STS operation this issuer calls.
    fn operation(&self) -> &'static str {
        match self {
            Issuer::AssumeRole(_) => "AssumeRole",
            Issuer::WebIdentity(_) => "AssumeRoleWithWebIdentity",
            #[cfg(test)]
            Issuer::Fake(_) => "Fake",
        }
    }

    async fn issue_untraced(&self, req: &IssueRequest) -> Result<Issued, IssueError> {
        match self {
            Issuer::AssumeRole(i) => i.issue(req).await,
            Issuer::WebIdentity(i) => i.issue(req).await,
            #[cfg(test)]
            Issuer::Fake(i) => i.issue(req).await,
        }
    }

    /// Does STS read the caller's token (web identity), so a credential belongs to one token?
    pub fn keys_by_token(&self) -> bool {
        match self {
            Issuer::AssumeRole(_) => false,
            Issuer::WebIdentity(_) => true,
            #[cfg(test)]
            Issuer::Fake(i) => i.web_identity,
        }
    }
}

/// Settings shared by both issuers.
#[derive(Debug, Clone, Default)]
pub struct StsSettings {
    /// Endpoint override for emulators or VPC endpoints; `None`: the SDK's regional endpoint.
    pub endpoint: Option<String>,
    /// Region; `None`: the SDK's default region chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Attempts per call, including the first; throttling and 5xx back off with jitter between.
    pub max_attempts: u32,
}

/// Builds the STS client. Only the broker loads an AWS identity, and only to call STS.
pub(crate) async fn sts_client(settings: &StsSettings, anonymous: bool) -> aws_sdk_sts::Client {
    use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(settings.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .connect_timeout(Duration::from_secs(2))
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if anonymous {
        loader = loader.no_credentials();
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_sts::config::Builder::from(&shared);
    if shared.region().is_none() {
        builder = builder.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint.clone());
    }
    aws_sdk_sts::Client::from_conf(builder.build())
}

/// Classifies an SDK error. The message names the code and STS's text; it never holds a secret
/// because STS requests carry none (the web identity token is not echoed by STS).
pub(crate) fn classify<E>(
    err: aws_sdk_sts::error::SdkError<E, aws_sdk_sts::config::http::HttpResponse>,
) -> IssueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_sts::error::SdkError;
    match &err {
        SdkError::TimeoutError(_) => IssueError::Retryable("request timed out".into()),
        SdkError::DispatchFailure(d) => {
            if d.is_user() {
                IssueError::Configuration(format!(
                    "request could not be sent: {}",
                    short(&format!("{d:?}"))
                ))
            } else {
                // Connection refused, reset or closed mid-response, timeouts: the endpoint is
                // unreachable for now, whatever the transport calls it.
                IssueError::Retryable("could not reach the STS endpoint".into())
            }
        }
        SdkError::ConstructionFailure(_) => IssueError::Configuration(
            "request could not be built (are the broker's AWS credentials configured?)".into(),
        ),
        SdkError::ResponseError(_) => IssueError::Retryable("unreadable response from STS".into()),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let body = se.raw().body().bytes().unwrap_or_default();
            let code = match se.err().code().filter(|c| !c.is_empty()) {
                Some(code) => code.to_string(),
                // moto wraps STS errors EC2-style, so the SDK finds no code (FACTS.md); real
                // STS names it. A 403 whose body says AccessDenied is the same denial.
                None if denial_without_code(status, body) => "AccessDenied".to_string(),
                None => "Unknown".to_string(),
            };
            let msg = se.err().message().map(short).unwrap_or_default();
            let text = if msg.is_empty() {
                format!("{code} (HTTP {status})")
            } else {
                format!("{code} (HTTP {status}): {msg}")
            };
            match code.as_str() {
                "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "InternalError"
                | "IDPCommunicationError" => IssueError::Retryable(text),
                "AccessDenied" | "AccessDeniedException" => IssueError::Denied(text),
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "IncompleteSignature"
                | "RegionDisabledException"
                | "MissingAuthenticationToken"
                | "UnrecognizedClientException" => IssueError::Configuration(text),
                "InvalidIdentityToken" | "ExpiredTokenException" | "IDPRejectedClaim" => {
                    IssueError::Denied(text)
                }
                _ if status >= 500 => IssueError::Retryable(text),
                _ => IssueError::Rejected(text),
            }
        }
        _ => IssueError::Retryable("unexpected STS failure".into()),
    }
}

/// An STS answer the SDK found no error code in, recognised as a denial: HTTP 403 whose body
/// names `AccessDenied` (moto's EC2-style wrapper).
pub(crate) fn denial_without_code(status: u16, body: &[u8]) -> bool {
    status == 403 && body.windows(12).any(|w| w == b"AccessDenied")
}

/// First line, at most 300 characters: enough to act on, not enough to flood a log.
fn short(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// Converts STS's credentials type.
pub(crate) fn convert(
    creds: Option<&aws_sdk_sts::types::Credentials>,
    assumed_role_arn: Option<&str>,
) -> Result<Issued, IssueError> {
    let c =
        creds.ok_or_else(|| IssueError::Retryable("STS answered without credentials".into()))?;
    let expiration = SystemTime::try_from(*c.expiration())
        .map_err(|_| IssueError::Retryable("STS answered with an unreadable expiration".into()))?;
    Ok(Issued {
        access_key_id: c.access_key_id().to_string(),
        secret_access_key: Secret::new(c.secret_access_key()),
        session_token: Secret::new(c.session_token()),
        expiration,
        assumed_role_arn: assumed_role_arn.unwrap_or_default().to_string(),
    })
}

/// STS's message when the requested duration is above the role's MaxSessionDuration.
fn is_duration_too_long(e: &IssueError) -> bool {
    matches!(e, IssueError::Rejected(m) if m.contains("DurationSeconds"))
}

/// Both issuers' duration rule: `call` at the requested duration; one above the role's maximum
/// is retried once at 3600 s (every role allows an hour), so `BROKER_CREDENTIAL_TTL` acts as
/// "up to the role's limit".
pub(crate) async fn with_duration_fallback<F, Fut>(
    requested: i32,
    call: F,
) -> Result<Issued, IssueError>
where
    F: Fn(i32) -> Fut,
    Fut: std::future::Future<Output = Result<Issued, IssueError>>,
{
    match call(requested).await {
        Err(e) if is_duration_too_long(&e) && requested > 3600 => {
            tracing::warn!(
                requested,
                "duration above the role's maximum; retrying with 3600 s"
            );
            call(3600).await
        }
        other => other,
    }
}

#[cfg(test)]
pub mod fake {
    //! A stand-in for STS in unit tests of the engine and the broker (the end-to-end tests use a
    //! real emulator).
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    pub struct FakeIssuer {
        pub calls: AtomicUsize,
        pub fail: AtomicBool,
        /// Answer as STS does for a role whose trust policy refuses the caller.
        pub deny: AtomicBool,
        /// Behave as the web-identity issuer (credentials belong to one token).
        pub web_identity: bool,
        pub delay_ms: u64,
        /// Lifetime of issued credentials, seconds (default 3600).
        pub lifetime_secs: u64,
    }

    impl FakeIssuer {
        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        pub async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssueError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(IssueError::Retryable("Throttling: Rate exceeded".into()));
            }
            if self.deny.load(Ordering::SeqCst) {
                return Err(IssueError::Denied("AccessDenied (HTTP 403)".into()));
            }
            let lifetime = if self.lifetime_secs == 0 {
                3600
            } else {
                self.lifetime_secs
            };
            Ok(Issued {
                access_key_id: format!("ASIAFAKE{n:08}"),
                secret_access_key: Secret::new(format!("secret-{n}")),
                session_token: Secret::new(format!("token-{n}")),
                expiration: SystemTime::now() + Duration::from_secs(lifetime),
                assumed_role_arn: format!(
                    "{}/{}",
                    req.role_arn
                        .replace(":iam:", ":sts:")
                        .replace(":role/", ":assumed-role/"),
                    req.role_session_name
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both issuers' duration rule, one place: a duration STS refuses as above the role's
    /// maximum is retried once at 3600 s; an hour or less, or any other error, is not retried.
    #[tokio::test]
    async fn a_duration_above_the_roles_maximum_is_retried_once_at_an_hour() {
        let tried = std::sync::Mutex::new(Vec::new());
        let call = |answer: fn(i32) -> Result<Issued, IssueError>| {
            let tried = &tried;
            move |duration: i32| {
                tried.lock().unwrap().push(duration);
                std::future::ready(answer(duration))
            }
        };
        let too_long = |_| {
            Err(IssueError::Rejected(
                "ValidationError: The requested DurationSeconds exceeds the MaxSessionDuration"
                    .into(),
            ))
        };
        let result = with_duration_fallback(43_200, call(too_long)).await;
        assert!(matches!(result, Err(IssueError::Rejected(_))));
        assert_eq!(*tried.lock().unwrap(), vec![43_200, 3600]);

        tried.lock().unwrap().clear();
        let _ = with_duration_fallback(3600, call(too_long)).await;
        assert_eq!(*tried.lock().unwrap(), vec![3600], "an hour is not retried");

        tried.lock().unwrap().clear();
        let other = |_| Err(IssueError::Retryable("throttled".into()));
        let _ = with_duration_fallback(43_200, call(other)).await;
        assert_eq!(*tried.lock().unwrap(), vec![43_200], "other errors are not");
    }

    #[test]
    fn a_403_naming_access_denied_without_a_code_is_a_denial() {
        let moto = br#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>AccessDenied</Code><Message>User is not authorized</Message></Error></Errors><RequestID>x</RequestID></Response>"#;
        assert!(denial_without_code(403, moto));
        assert!(!denial_without_code(400, moto));
        assert!(!denial_without_code(
            403,
            b"<Error><Code>Other</Code></Error>"
        ));
    }
}
