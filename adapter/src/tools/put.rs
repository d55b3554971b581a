//! `bucket_objects_put`: PutObject for a batch of items, all validated before the first upload.

use std::collections::HashMap;

use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use futures::{StreamExt, stream};
use http::request::Parts;
use rmcp::{
    ErrorData, Peer, RoleServer,
    handler::server::{tool::Extension, wrapper::Parameters},
    model::{CallToolResult, RequestMetaObject},
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{BucketTools, failure, invalid_argument, notify::Reporter, success};
use crate::s3::{S3Failure, object_uri, parse_bucket, parse_object_uri, validate_key};

/// Items per call.
const MAX_ITEMS: usize = 100;
/// Uploads in flight at once.
const CONCURRENCY: usize = 4;

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct PutArgs {
    /// Bucket name or `s3://name`.
    bucket: String,
    /// Objects to write (1–100).
    items: Vec<PutItem>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct PutItem {
    /// Object key (or `s3://bucket/key` in the same bucket).
    key: String,
    /// Content as text (UTF-8). Give exactly one of `text` and `data`.
    #[serde(default)]
    text: Option<String>,
    /// Content as base64. Give exactly one of `text` and `data`.
    #[serde(default)]
    data: Option<String>,
    /// Content-Type (default: text/plain; charset=utf-8 for text, application/octet-stream for data).
    #[serde(default)]
    content_type: Option<String>,
    /// User metadata (x-amz-meta-*).
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

/// One item, checked and decoded.
struct Upload {
    key: String,
    body: Vec<u8>,
    content_type: String,
    metadata: Option<HashMap<String, String>>,
}

/// Checks every item; the first problem names its argument (`items[2].data`).
fn validate(bucket: &str, items: Vec<PutItem>) -> Result<Vec<Upload>, CallToolResult> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(invalid_argument(
            "items",
            format!("{} items; give 1 to {MAX_ITEMS}", items.len()),
        ));
    }
    let mut uploads = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let argument = |field: &str| format!("items[{index}].{field}");
        let key = if item.key.starts_with("s3://") {
            let object = parse_object_uri(&item.key)
                .map_err(|problem| invalid_argument(&argument("key"), problem))?;
            if object.bucket != bucket {
                return Err(invalid_argument(
                    &argument("key"),
                    format!(
                        "names bucket {:?}, but this call writes to {bucket:?}",
                        object.bucket
                    ),
                ));
            }
            object.key
        } else {
            validate_key(&item.key)
                .map_err(|problem| invalid_argument(&argument("key"), problem))?;
            item.key
        };
        let (body, default_type) = match (item.text, item.data) {
            (Some(text), None) => (text.into_bytes(), "text/plain; charset=utf-8"),
            (None, Some(data)) => (
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| invalid_argument(&argument("data"), format!("not base64: {e}")))?,
                "application/octet-stream",
            ),
            _ => {
                return Err(invalid_argument(
                    &argument("text"),
                    "give exactly one of `text` and `data`",
                ));
            }
        };
        if let Some(metadata) = &item.metadata
            && let Some(bad) = metadata.keys().find(|name| {
                name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        {
            return Err(invalid_argument(
                &argument("metadata"),
                format!("{bad:?} is not a metadata name (letters, digits, '-', '_')"),
            ));
        }
        uploads.push(Upload {
            key,
            body,
            content_type: item
                .content_type
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| default_type.into()),
            metadata: item.metadata,
        });
    }
    Ok(uploads)
}

#[tool_router(router = put_router, vis = "pub(super)")]
impl BucketTools {
    #[tool(
        name = "bucket_objects_put",
        description = "Write objects to an S3 bucket. Each item has a key and exactly one of text or data (base64), optionally content_type and metadata. Returns requested, uploaded, failed and results [{key, etag, size, error?}].",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn bucket_objects_put(
        &self,
        Extension(parts): Extension<Parts>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
        Parameters(args): Parameters<PutArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let reporter = Reporter::new(peer, &meta, self.log_level.clone());
        let bucket = match parse_bucket(&args.bucket) {
            Ok((bucket, None)) => bucket,
            Ok((_, Some(prefix))) => {
                return Ok(invalid_argument(
                    "bucket",
                    format!("give the bucket only; put the prefix {prefix:?} into the keys"),
                ));
            }
            Err(problem) => return Ok(invalid_argument("bucket", problem)),
        };
        let uploads = match validate(&bucket, args.items) {
            Ok(uploads) => uploads,
            Err(refusal) => return Ok(refusal),
        };
        let s3 = match self.session(&parts) {
            Ok(s3) => s3,
            Err(refusal) => return Ok(refusal),
        };

        let requested = uploads.len();
        let results: Vec<(Value, Option<S3Failure>)> = stream::iter(uploads)
            .map(|upload| {
                let client = s3.client.clone();
                let bucket = bucket.clone();
                async move {
                    let size = upload.body.len();
                    let outcome = client
                        .put_object()
                        .bucket(&bucket)
                        .key(&upload.key)
                        .content_type(upload.content_type)
                        .set_metadata(upload.metadata)
                        .body(ByteStream::from(upload.body))
                        .send()
                        .await;
                    let uri = object_uri(&bucket, &upload.key);
                    match outcome {
                        Ok(output) => (
                            json!({ "key": upload.key, "s3_uri": uri, "etag": output.e_tag(), "size": size, "version_id": output.version_id() }),
                            None,
                        ),
                        Err(error) => {
                            let failure = S3Failure::from_sdk(&error);
                            (
                                json!({ "key": upload.key, "s3_uri": uri, "etag": null, "size": size,
                                        "error": { "code": failure.code, "message": failure.message } }),
                                Some(failure),
                            )
                        }
                    }
                }
            })
            .buffered(CONCURRENCY)
            .enumerate()
            .then(|(index, outcome)| {
                let reporter = &reporter;
                async move {
                    let done = index + 1;
                    reporter
                        .progress(
                            done as f64,
                            Some(requested as f64),
                            format!("{done} of {requested} items written"),
                        )
                        .await;
                    outcome
                }
            })
            .collect()
            .await;

        let failures: Vec<&S3Failure> = results.iter().filter_map(|(_, f)| f.as_ref()).collect();
        let failed = failures.len();
        let summary = json!({
            "bucket": bucket,
            "requested": requested,
            "uploaded": requested - failed,
            "failed": failed,
            "results": results.iter().map(|(value, _)| value.clone()).collect::<Vec<_>>(),
        });
        reporter
            .log(
                failed > 0,
                json!({
                    "message": format!(
                        "bucket_objects_put wrote {} of {requested} objects to s3://{bucket}",
                        requested - failed
                    ),
                    "bucket": bucket,
                    "uploaded": requested - failed,
                    "failed": failed,
                }),
            )
            .await;
        if failed == 0 {
            return Ok(success(summary));
        }
        // Some or all writes failed: an error result, with the AWS code of the first failure at
        // the top so a caller sees `AccessDenied` without walking the list.
        let first = failures[0];
        let Value::Object(details) = summary else {
            unreachable!("summary is an object")
        };
        Ok(failure(
            &first.code,
            format!(
                "{failed} of {requested} uploads to s3://{bucket} failed; first: {}: {}",
                first.code, first.message
            ),
            Value::Object(details),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, text: Option<&str>, data: Option<&str>) -> PutItem {
        PutItem {
            key: key.into(),
            text: text.map(Into::into),
            data: data.map(Into::into),
            content_type: None,
            metadata: None,
        }
    }

    fn refused_argument(result: Result<Vec<Upload>, CallToolResult>) -> String {
        let refusal = result.err().expect("must be refused");
        refusal.structured_content.unwrap()["error"]["argument"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn items_are_checked_before_anything_is_written() {
        let ok = validate(
            "b12",
            vec![
                item("a.txt", Some("hi"), None),
                item("s3://b12/b.bin", None, Some("AAE=")),
            ],
        );
        let ok = ok.ok().unwrap();
        assert_eq!(ok[0].content_type, "text/plain; charset=utf-8");
        assert_eq!(ok[1].key, "b.bin");
        assert_eq!(ok[1].body, vec![0, 1]);

        assert_eq!(refused_argument(validate("b12", vec![])), "items");
        assert_eq!(
            refused_argument(validate("b12", vec![item("a", None, None)])),
            "items[0].text"
        );
        assert_eq!(
            refused_argument(validate("b12", vec![item("a", Some("x"), Some("eA=="))])),
            "items[0].text"
        );
        assert_eq!(
            refused_argument(validate(
                "b12",
                vec![item("a", Some("x"), None), item("b", None, Some("!!"))]
            )),
            "items[1].data"
        );
        assert_eq!(
            refused_argument(validate(
                "b12",
                vec![item("s3://other-bucket/k", Some("x"), None)]
            )),
            "items[0].key"
        );
        assert_eq!(
            refused_argument(validate("b12", vec![item("", Some("x"), None)])),
            "items[0].key"
        );
    }
}
