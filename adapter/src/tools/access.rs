//! `bucket_access_check`: what the caller's credentials may do in a bucket, each answer from a
//! real S3 request made with those credentials.
//!
//! * `list`: ListObjectsV2 with `max-keys=1`.
//! * `read`: GetObject of byte 0 of an object the listing returned; when there is none (empty
//!   bucket or listing denied), of a random key that does not exist, where `NoSuchKey` means the
//!   read was authorized (S3 and moto check the permission before looking for the key). Real S3
//!   answers AccessDenied for a missing key when `s3:ListBucket` is missing, so that fallback can
//!   under-report; the check's `detail` says which way was used.
//! * `write`: PutObject of an empty body to a random probe key under `.mcp-adapter-probe/`
//!   with a deliberately **wrong `Content-MD5`**. S3 authorizes a request before it checks the
//!   digest, so `BadDigest` proves the write was authorized while storing nothing; AccessDenied
//!   proves it was not. Some emulators (moto) do not check `Content-MD5` and store the object:
//!   a success is therefore also an authorized write, and the probe object is deleted again at
//!   once (the result reports if the delete was refused, naming the key). We chose this over a
//!   plain probe object because against real S3 it never writes anything, and the cleanup only
//!   matters on emulators.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_sdk_s3::{Client, primitives::ByteStream};
use http::request::Parts;
use rmcp::{
    ErrorData,
    handler::server::{tool::Extension, wrapper::Parameters},
    model::CallToolResult,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{BucketTools, invalid_argument, success};
use crate::s3::{S3Failure, parse_bucket};

/// Prefix of probe keys, so that a probe left behind is recognizable.
const PROBE_PREFIX: &str = ".mcp-adapter-probe/";
/// Base64 MD5 of 16 zero bytes: never the digest of the empty body we send.
const WRONG_CONTENT_MD5: &str = "AAAAAAAAAAAAAAAAAAAAAA==";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Operation {
    Read,
    Write,
    List,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct AccessArgs {
    /// Bucket name or `s3://name` (`bucket_name` is accepted too).
    #[serde(alias = "bucket_name")]
    bucket: String,
    /// Operations to check, a subset of read, write, list (default all three).
    #[serde(default)]
    operations: Option<Vec<Operation>>,
}

/// The outcome of one probe.
struct Check {
    operation: Operation,
    allowed: bool,
    detail: String,
    error_code: Option<String>,
}

impl Check {
    fn to_json(&self) -> Value {
        json!({
            "operation": self.operation,
            "allowed": self.allowed,
            "detail": self.detail,
            "error_code": self.error_code,
        })
    }
}

fn random_probe_key() -> String {
    let mut bytes = [0u8; 12];
    // SystemRandom fails only if the OS has no entropy source; then the key is merely predictable.
    let _ = SystemRandom::new().fill(&mut bytes);
    format!("{PROBE_PREFIX}{}", hex::encode(bytes))
}

/// Turns an S3 answer into allowed / not allowed; `authorized_codes` are error codes that S3 only
/// returns after authorizing the request.
fn judge(
    operation: Operation,
    outcome: Result<String, S3Failure>,
    authorized_codes: &[&str],
) -> Check {
    match outcome {
        Ok(detail) => Check {
            operation,
            allowed: true,
            detail,
            error_code: None,
        },
        Err(failure) if authorized_codes.contains(&failure.code.as_str()) => Check {
            operation,
            allowed: true,
            detail: format!(
                "authorized (S3 answered {} after authorizing)",
                failure.code
            ),
            error_code: None,
        },
        Err(failure) => Check {
            operation,
            allowed: false,
            detail: failure.message,
            error_code: Some(failure.code),
        },
    }
}

async fn check_list(client: &Client, bucket: &str) -> (Check, Option<String>) {
    match client
        .list_objects_v2()
        .bucket(bucket)
        .max_keys(1)
        .send()
        .await
    {
        Ok(page) => {
            let sample = page
                .contents()
                .first()
                .and_then(|o| o.key())
                .map(str::to_string);
            (
                judge(Operation::List, Ok("ListObjectsV2 allowed".into()), &[]),
                sample,
            )
        }
        Err(error) => (
            judge(Operation::List, Err(S3Failure::from_sdk(&error)), &[]),
            None,
        ),
    }
}

async fn check_read(client: &Client, bucket: &str, sample: Option<String>) -> Check {
    let (key, how) = match sample {
        Some(key) => (key, "GetObject of an existing object"),
        None => (
            random_probe_key(),
            "GetObject of a missing key (bucket empty or not listable)",
        ),
    };
    let outcome = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .range("bytes=0-0")
        .send()
        .await
        .map(|_| format!("{how} allowed"))
        .map_err(|error| S3Failure::from_sdk(&error));
    judge(Operation::Read, outcome, &["NoSuchKey", "InvalidRange"])
}

async fn check_write(client: &Client, bucket: &str) -> Check {
    let key = random_probe_key();
    let put = client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_md5(WRONG_CONTENT_MD5)
        .body(ByteStream::from_static(b""))
        .send()
        .await;
    match put {
        // Stored despite the wrong digest (an emulator): authorized; remove the probe.
        Ok(_) => {
            let cleanup = client.delete_object().bucket(bucket).key(&key).send().await;
            let detail = match cleanup {
                Ok(_) => "PutObject authorized (the endpoint ignored the wrong Content-MD5 and stored the probe; it was deleted)".to_string(),
                Err(error) => format!(
                    "PutObject authorized; the probe object s3://{bucket}/{key} could not be deleted: {}",
                    S3Failure::from_sdk(&error).code
                ),
            };
            judge(Operation::Write, Ok(detail), &[])
        }
        Err(error) => judge(
            Operation::Write,
            Err(S3Failure::from_sdk(&error)),
            &["BadDigest", "InvalidDigest"],
        ),
    }
}

#[tool_router(router = access_router, vis = "pub(super)")]
impl BucketTools {
    #[tool(
        name = "bucket_access_check",
        description = "Check what your credentials may do in a bucket (read, write, list) with real S3 requests. The write check sends a PutObject with a wrong Content-MD5, which S3 authorizes and then rejects, so nothing is stored (on emulators that store it, the probe is deleted). Returns access_summary {can_read, can_write, can_list} and checks.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    pub(super) async fn bucket_access_check(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<AccessArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let bucket = match parse_bucket(&args.bucket) {
            Ok((bucket, _)) => bucket,
            Err(problem) => return Ok(invalid_argument("bucket", problem)),
        };
        let operations = args
            .operations
            .unwrap_or_else(|| vec![Operation::Read, Operation::Write, Operation::List]);
        if operations.is_empty() {
            return Ok(invalid_argument(
                "operations",
                "name at least one of read, write, list",
            ));
        }
        let s3 = match self.session(&parts) {
            Ok(s3) => s3,
            Err(refusal) => return Ok(refusal),
        };

        let wants = |op| operations.contains(&op);
        let mut checks = Vec::new();
        let mut sample = None;
        if wants(Operation::List) || wants(Operation::Read) {
            let (list, found) = check_list(&s3.client, &bucket).await;
            sample = found;
            if wants(Operation::List) {
                checks.push(list);
            }
        }
        if wants(Operation::Read) {
            checks.push(check_read(&s3.client, &bucket, sample).await);
        }
        if wants(Operation::Write) {
            checks.push(check_write(&s3.client, &bucket).await);
        }
        let verdict = |op| {
            checks
                .iter()
                .find(|check| check.operation == op)
                .map(|check| Value::Bool(check.allowed))
                .unwrap_or(Value::Null)
        };
        Ok(success(json!({
            "bucket": bucket,
            "access_summary": {
                "can_read": verdict(Operation::Read),
                "can_write": verdict(Operation::Write),
                "can_list": verdict(Operation::List),
            },
            "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>(),
            "role_arn": s3.issued.role_arn,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: &str) -> S3Failure {
        S3Failure {
            code: code.into(),
            message: format!("{code} message"),
            http_status: Some(400),
        }
    }

    #[test]
    fn a_bad_digest_is_an_authorized_write_and_access_denied_is_not() {
        let authorized = ["BadDigest", "InvalidDigest"];
        assert!(judge(Operation::Write, Err(failure("BadDigest")), &authorized).allowed);
        let denied = judge(Operation::Write, Err(failure("AccessDenied")), &authorized);
        assert!(!denied.allowed);
        assert_eq!(denied.error_code.as_deref(), Some("AccessDenied"));
        assert!(!judge(Operation::Write, Err(failure("NoSuchBucket")), &authorized).allowed);
        assert!(judge(Operation::Write, Ok("stored".into()), &authorized).allowed);
    }

    #[test]
    fn probes_are_random_and_recognizable() {
        let a = random_probe_key();
        assert!(a.starts_with(PROBE_PREFIX));
        assert_ne!(a, random_probe_key());
    }

    #[test]
    fn the_incident_clients_argument_names_are_accepted() {
        let args: AccessArgs = serde_json::from_value(json!({
            "bucket_name": "quilt-sandbox-bucket", "operations": ["write"]
        }))
        .unwrap();
        assert_eq!(args.bucket, "quilt-sandbox-bucket");
        assert_eq!(args.operations, Some(vec![Operation::Write]));
        assert!(
            serde_json::from_value::<AccessArgs>(json!({"bucket": "b", "operations": ["delete"]}))
                .is_err()
        );
    }
}
