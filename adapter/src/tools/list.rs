//! `bucket_objects_list`: one page of ListObjectsV2.

use http::request::Parts;
use rmcp::{
    ErrorData,
    handler::server::{tool::Extension, wrapper::Parameters},
    model::CallToolResult,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{BucketTools, invalid_argument, s3_failure, success, timestamp};
use crate::s3::{S3Failure, object_uri, parse_bucket};

const DEFAULT_MAX_KEYS: i64 = 100;

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct ListArgs {
    /// Bucket name, or `s3://name` (an `s3://name/prefix` URI sets the prefix too).
    bucket: String,
    /// Only keys that start with this prefix.
    #[serde(default)]
    prefix: Option<String>,
    /// Keys per page, 1–1000 (default 100).
    #[serde(default)]
    max_keys: Option<i64>,
    /// `next_continuation_token` of the previous page.
    #[serde(default)]
    continuation_token: Option<String>,
}

#[tool_router(router = list_router, vis = "pub(super)")]
impl BucketTools {
    #[tool(
        name = "bucket_objects_list",
        description = "List objects in an S3 bucket, one page at a time. Returns bucket, prefix, objects [{key, s3_uri, size, last_modified, etag}], count, is_truncated and next_continuation_token.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    pub(super) async fn bucket_objects_list(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (bucket, uri_prefix) = match parse_bucket(&args.bucket) {
            Ok(parsed) => parsed,
            Err(problem) => return Ok(invalid_argument("bucket", problem)),
        };
        let prefix = match (args.prefix.filter(|p| !p.is_empty()), uri_prefix) {
            (Some(prefix), Some(from_uri)) if prefix != from_uri => {
                return Ok(invalid_argument(
                    "prefix",
                    format!("{prefix:?} differs from the prefix {from_uri:?} in `bucket`"),
                ));
            }
            (prefix, from_uri) => prefix.or(from_uri),
        };
        let max_keys = args.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if !(1..=1000).contains(&max_keys) {
            return Ok(invalid_argument(
                "max_keys",
                format!("{max_keys} is not between 1 and 1000"),
            ));
        }
        let s3 = match self.session(&parts) {
            Ok(s3) => s3,
            Err(refusal) => return Ok(refusal),
        };

        let page = s3
            .client
            .list_objects_v2()
            .bucket(&bucket)
            .set_prefix(prefix.clone())
            .max_keys(max_keys as i32)
            .set_continuation_token(args.continuation_token.filter(|t| !t.is_empty()))
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                return Ok(s3_failure(
                    "ListObjectsV2",
                    &format!("s3://{bucket}"),
                    S3Failure::from_sdk(&error),
                ));
            }
        };
        let objects: Vec<Value> = page
            .contents()
            .iter()
            .map(|object| {
                let key = object.key().unwrap_or_default();
                json!({
                    "key": key,
                    "s3_uri": object_uri(&bucket, key),
                    "size": object.size(),
                    "last_modified": timestamp(object.last_modified()),
                    "etag": object.e_tag(),
                })
            })
            .collect();
        let mut result = json!({
            "bucket": bucket,
            "prefix": prefix.unwrap_or_default(),
            "count": objects.len(),
            "is_truncated": page.is_truncated().unwrap_or(false),
            "next_continuation_token": page.next_continuation_token(),
        });
        // Moved in, not through `json!`: it would copy the whole list (`to_value` of a `&Vec`).
        result["objects"] = Value::Array(objects);
        Ok(success(result))
    }
}
