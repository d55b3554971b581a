//! AWS clients built from exactly the credentials a test holds.
//!
//! Tests check what broker-issued credentials can really do, by calling moto with them: S3 puts
//! and gets, and `sts:GetCallerIdentity` to see whose they are. The clients are built from static
//! credentials only — never from the default provider chain — so nothing on the machine can lend
//! them rights.

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use credbroker_proto::v1::AwsCredentials;

use crate::moto::AwsUser;

/// Static AWS credentials.
#[derive(Clone)]
pub struct StaticCreds {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCreds")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl From<&AwsCredentials> for StaticCreds {
    fn from(c: &AwsCredentials) -> StaticCreds {
        StaticCreds {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: Some(c.session_token.clone()).filter(|t| !t.is_empty()),
        }
    }
}

impl From<&AwsUser> for StaticCreds {
    fn from(u: &AwsUser) -> StaticCreds {
        StaticCreds {
            access_key_id: u.access_key_id.clone(),
            secret_access_key: u.secret_access_key.clone(),
            session_token: None,
        }
    }
}

impl StaticCreds {
    fn provider(&self) -> Credentials {
        Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            None,
            "e2e-static",
        )
    }
}

/// An S3 client for `endpoint` (path-style, us-east-1) using only `creds`.
pub fn s3(endpoint: &str, creds: impl Into<StaticCreds>) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds.into().provider())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An STS client for `endpoint` (us-east-1) using only `creds`.
pub fn sts(endpoint: &str, creds: impl Into<StaticCreds>) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds.into().provider())
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

/// The ARN `sts:GetCallerIdentity` names for `creds`.
pub async fn caller_arn(endpoint: &str, creds: impl Into<StaticCreds>) -> String {
    let out = sts(endpoint, creds)
        .get_caller_identity()
        .send()
        .await
        .expect("sts:GetCallerIdentity with these credentials");
    out.arn().unwrap_or_default().to_string()
}

/// The AWS error code of a failed call (`AccessDenied`, `InvalidAccessKeyId`, …), or a
/// description of the failure when there is no code (a transport error).
///
/// moto answers some STS errors (AccessDenied on AssumeRole) in the EC2-style
/// `<ErrorResponse><Errors><Error>` envelope, which the SDK does not parse into a code; the code
/// is then taken from the raw body.
pub fn error_code<E: ProvideErrorMetadata + std::fmt::Debug>(err: &E) -> String {
    if let Some(code) = err.code() {
        return code.to_string();
    }
    let debug = format!("{err:?}");
    if let Some((_, rest)) = debug.split_once("<Code>")
        && let Some((code, _)) = rest.split_once("</Code>")
    {
        return code.to_string();
    }
    format!("<no AWS error code: {debug}>")
}

/// Puts `body` at `bucket/key`; `Err(code)` with the AWS error code when refused.
pub async fn put_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &[u8],
) -> Result<(), String> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error_code(&e))
}

/// Reads `bucket/key`; `Err(code)` when refused.
pub async fn get_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, String> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| error_code(&e))?;
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| format!("read body: {e}"))?;
    Ok(body.into_bytes().to_vec())
}

/// Lists `bucket`'s keys; `Err(code)` when refused.
pub async fn list_keys(client: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<String>, String> {
    let out = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| error_code(&e))?;
    Ok(out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect())
}
