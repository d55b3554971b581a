//! `bucket_object_link`: a presigned GET URL.
//!
//! The URL is signed with the caller's broker credentials, so it works only while they do: its
//! real lifetime is the shorter of `expiration` and the credentials' remaining life, and the
//! result says which. The object is checked with HeadObject first so that a missing object or a
//! denied read is reported now, not as a URL that fails later. The URL carries the STS session
//! token (that is how presigned URLs of temporary credentials work); it is returned to the caller
//! and never logged.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use http::request::Parts;
use rmcp::{
    ErrorData,
    handler::server::{tool::Extension, wrapper::Parameters},
    model::CallToolResult,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{BucketTools, failure, invalid_argument, s3_failure, success, system_time};
use crate::s3::{S3Failure, parse_object_uri};

const DEFAULT_EXPIRATION: i64 = 3600;
const MAX_EXPIRATION: i64 = 604_800;

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct LinkArgs {
    /// Object URI, `s3://bucket/key`.
    s3_uri: String,
    /// Seconds the URL should stay valid, 1–604800 (default 3600); never longer than the
    /// caller's credentials.
    #[serde(default)]
    expiration: Option<i64>,
}

/// Lifetime of a URL signed with credentials that expire at `credentials_expire`.
fn effective_lifetime(
    requested: Duration,
    now: SystemTime,
    credentials_expire: SystemTime,
) -> (Duration, bool) {
    let remaining = credentials_expire.duration_since(now).unwrap_or_default();
    if remaining < requested {
        (remaining, true)
    } else {
        (requested, false)
    }
}

#[tool_router(router = link_router, vis = "pub(super)")]
impl BucketTools {
    #[tool(
        name = "bucket_object_link",
        description = "A presigned HTTPS GET URL for an S3 object, valid for `expiration` seconds (default 3600, at most 604800, never longer than your current credentials).",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    pub(super) async fn bucket_object_link(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<LinkArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let object = match parse_object_uri(&args.s3_uri) {
            Ok(object) => object,
            Err(problem) => return Ok(invalid_argument("s3_uri", problem)),
        };
        let requested = args.expiration.unwrap_or(DEFAULT_EXPIRATION);
        if !(1..=MAX_EXPIRATION).contains(&requested) {
            return Ok(invalid_argument(
                "expiration",
                format!("{requested} is not between 1 and {MAX_EXPIRATION} seconds"),
            ));
        }
        let s3 = match self.session(&parts) {
            Ok(s3) => s3,
            Err(refusal) => return Ok(refusal),
        };
        if let Err(error) = s3
            .client
            .head_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .send()
            .await
        {
            let mut failure = S3Failure::from_sdk(&error);
            if failure.code == "NotFound" {
                failure.code = "NoSuchKey".into();
                failure.message = "the object (or its bucket) does not exist".into();
            }
            return Ok(s3_failure("HeadObject", &object.uri(), failure));
        }

        let now = SystemTime::now();
        let (lifetime, limited) = effective_lifetime(
            Duration::from_secs(requested as u64),
            now,
            s3.issued.expires_at,
        );
        if lifetime < Duration::from_secs(1) {
            return Ok(failure(
                "CredentialsExpiring",
                "your credentials expire now; call again for a fresh link".into(),
                json!({}),
            ));
        }
        let config = match PresigningConfig::builder()
            .start_time(now)
            .expires_in(lifetime)
            .build()
        {
            Ok(config) => config,
            Err(error) => return Ok(invalid_argument("expiration", error)),
        };
        let presigned = s3
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .presigned(config)
            .await;
        match presigned {
            Ok(presigned) => Ok(success(json!({
                "s3_uri": object.uri(),
                "url": presigned.uri(),
                "method": "GET",
                "expires_in": lifetime.as_secs(),
                "expires_at": system_time(now + lifetime),
                "limited_by_credentials": limited,
            }))),
            Err(error) => Ok(s3_failure(
                "presign GetObject",
                &object.uri(),
                S3Failure::from_sdk(&error),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_never_outlive_the_credentials() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(effective_lifetime(hour, now, now + 2 * hour), (hour, false));
        assert_eq!(
            effective_lifetime(hour, now, now + Duration::from_secs(600)),
            (Duration::from_secs(600), true)
        );
        assert_eq!(
            effective_lifetime(hour, now, now - hour),
            (Duration::ZERO, true)
        );
    }
}
