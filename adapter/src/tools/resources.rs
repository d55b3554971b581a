//! S3 objects as MCP resources and completions, on the caller's broker credentials only.
//!
//! * `resources/templates/list` offers one template, `s3://{bucket}/{+key}`;
//! * `resources/read` returns an object as UTF-8 text (with S3's `Content-Type` as `mimeType`)
//!   or as a base64 blob, if it is within the tools' size limit (8 MiB): a resource is read
//!   whole, so a larger one is refused with the limit named rather than cut short;
//! * `resources/list` lists objects, 100 per page with `cursor`, of the buckets the caller's
//!   token is scoped to (its `buckets` claim) or else of `ADAPTER_LISTED_BUCKETS`; empty when
//!   neither names a bucket (the adapter never lists buckets it was not told about);
//! * `completion/complete` completes the template's `bucket` (from the same buckets) and `key`
//!   (keys and `/`-prefixes from ListObjectsV2 under the typed prefix; at most 100, `hasMore`).
//!
//! Every S3 request is made with the caller's credentials (see [`BucketTools::caller`]); a caller
//! without them gets an error and causes no S3 request.

use base64::Engine;
use rmcp::{
    ErrorData,
    model::{
        CompleteRequestParams, CompleteResult, CompletionInfo, ListResourceTemplatesResult,
        ListResourcesResult, ReadResourceResult, Reference, Resource, ResourceContents,
        ResourceTemplate,
    },
};
use serde_json::json;

use super::{BucketTools, S3Session, object::read_head};
use crate::s3::{ObjectUri, object_uri, parse_object_uri, validate_bucket};

/// The one resource template.
pub(crate) const TEMPLATE: &str = "s3://{bucket}/{+key}";
/// Objects per `resources/list` page.
const PAGE: i32 = 100;
/// Largest object `resources/read` returns: the tools' `max_bytes` limit.
const MAX_READ: i64 = super::object::MAX_MAX_BYTES;

/// `resources/templates/list`.
pub(crate) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(TEMPLATE, "s3-object")
            .with_title("S3 object")
            .with_description(
                "An object in an S3 bucket, read with your own credentials (text or base64, up to 8 MiB).",
            ),
    ])
}

/// Where `resources/list` continues: the bucket's index among the listed ones and S3's
/// continuation token (opaque to clients: base64url of this JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Cursor {
    bucket: usize,
    #[serde(default)]
    token: Option<String>,
}

fn encode_cursor(cursor: &Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode_cursor(value: &str) -> Result<Cursor, ErrorData> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ErrorData::invalid_params(
                "invalid cursor: pass `nextCursor` of the previous resources/list answer unchanged",
                None,
            )
        })
}

/// The error for an S3 failure while serving a resource request.
fn s3_error(operation: &str, target: &str, failure: crate::s3::S3Failure) -> ErrorData {
    let data = Some(json!({ "code": failure.code, "operation": operation, "target": target }));
    let message = format!("S3 {operation} on {target} failed: {}", failure.message);
    match failure.code.as_str() {
        "NoSuchKey" | "NoSuchBucket" | "NotFound" => ErrorData::resource_not_found(message, data),
        _ => ErrorData::internal_error(message, data),
    }
}

impl BucketTools {
    /// The buckets this caller's resources come from: its token's `buckets` claim, else
    /// `ADAPTER_LISTED_BUCKETS`.
    fn listed(&self, s3: &S3Session) -> Vec<String> {
        if s3.issued.buckets.is_empty() {
            self.listed_buckets.as_ref().clone()
        } else {
            s3.issued.buckets.clone()
        }
    }

    /// `resources/list`.
    pub(crate) async fn list_resources_page(
        &self,
        s3: &S3Session,
        cursor: Option<&str>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let buckets = self.listed(s3);
        let mut at = match cursor.filter(|c| !c.is_empty()) {
            Some(cursor) => decode_cursor(cursor)?,
            None => Cursor {
                bucket: 0,
                token: None,
            },
        };
        let mut resources = Vec::new();
        let Some(bucket) = buckets.get(at.bucket) else {
            return Ok(ListResourcesResult::with_all_items(resources));
        };
        {
            let page = s3
                .client
                .list_objects_v2()
                .bucket(bucket)
                .max_keys(PAGE)
                .set_continuation_token(at.token.take())
                .send()
                .await
                .map_err(|error| {
                    s3_error(
                        "ListObjectsV2",
                        &format!("s3://{bucket}"),
                        crate::s3::S3Failure::from_sdk(&error),
                    )
                })?;
            for object in page.contents() {
                let key = object.key().unwrap_or_default();
                let mut resource = Resource::new(object_uri(bucket, key), key);
                if let Some(size) = object.size().and_then(|s| u64::try_from(s).ok()) {
                    resource = resource.with_size(size);
                }
                resources.push(resource);
            }
            let next = page.next_continuation_token().map(str::to_string);
            let next = match next {
                Some(token) => Some(Cursor {
                    bucket: at.bucket,
                    token: Some(token),
                }),
                None if at.bucket + 1 < buckets.len() => Some(Cursor {
                    bucket: at.bucket + 1,
                    token: None,
                }),
                None => None,
            };
            // One S3 page per answer keeps each answer's cost bounded.
            let mut result = ListResourcesResult::with_all_items(resources);
            result.next_cursor = next.as_ref().map(encode_cursor);
            Ok(result)
        }
    }

    /// `resources/read`.
    pub(crate) async fn read_object(
        &self,
        s3: &S3Session,
        uri: &str,
    ) -> Result<ReadResourceResult, ErrorData> {
        let object: ObjectUri = parse_object_uri(uri).map_err(|problem| {
            ErrorData::invalid_params(
                format!("invalid resource uri: {problem} (expected {TEMPLATE})"),
                Some(json!({ "uri": uri })),
            )
        })?;
        // One byte more than the limit tells a too-large object from one exactly at it.
        let head = read_head(&s3.client, &object, MAX_READ + 1)
            .await
            .map_err(|refusal| {
                let error = refusal
                    .structured_content
                    .as_ref()
                    .and_then(|value| value.get("error"))
                    .cloned()
                    .unwrap_or_default();
                let code = error["code"].as_str().unwrap_or_default().to_string();
                let message = error["message"].as_str().unwrap_or("S3 failed").to_string();
                s3_error(
                    "GetObject",
                    &object.uri(),
                    crate::s3::S3Failure {
                        code,
                        message,
                        http_status: None,
                    },
                )
            })?;
        if head.bytes.len() as i64 > MAX_READ {
            return Err(ErrorData::invalid_request(
                format!(
                    "{} is larger than {MAX_READ} bytes, the limit for resources; read a part with the bucket_object_text or bucket_object_fetch tool (max_bytes)",
                    object.uri()
                ),
                Some(json!({ "uri": object.uri(), "size": head.size, "limit": MAX_READ })),
            ));
        }
        let content_type = head.content_type.clone();
        let uri = object.uri();
        let contents = match String::from_utf8(head.bytes) {
            Ok(text) if is_textual(content_type.as_deref()) => ResourceContents::text(text, uri),
            Ok(text) => {
                ResourceContents::blob(base64::engine::general_purpose::STANDARD.encode(text), uri)
            }
            Err(error) => ResourceContents::blob(
                base64::engine::general_purpose::STANDARD.encode(error.into_bytes()),
                uri,
            ),
        };
        let contents = match content_type {
            Some(mime) => contents.with_mime_type(mime),
            None => contents,
        };
        Ok(ReadResourceResult::new(vec![contents]))
    }

    /// `completion/complete` for the template's `bucket` and `key`.
    pub(crate) async fn complete_argument(
        &self,
        s3: &S3Session,
        request: &CompleteRequestParams,
    ) -> Result<CompleteResult, ErrorData> {
        match &request.r#ref {
            Reference::Resource(reference) if reference.uri == TEMPLATE => {}
            _ => return Ok(CompleteResult::default()),
        }
        let typed = request.argument.value.as_str();
        let (values, has_more) = match request.argument.name.as_str() {
            "bucket" => {
                let mut values: Vec<String> = self
                    .listed(s3)
                    .into_iter()
                    .filter(|bucket| bucket.starts_with(typed))
                    .collect();
                let more = values.len() > CompletionInfo::MAX_VALUES;
                values.truncate(CompletionInfo::MAX_VALUES);
                (values, more)
            }
            "key" => {
                let bucket = request
                    .context
                    .as_ref()
                    .and_then(|context| context.get_argument("bucket"))
                    .cloned()
                    .unwrap_or_default();
                validate_bucket(&bucket).map_err(|problem| {
                    ErrorData::invalid_params(
                        format!(
                            "completing `key` needs the `bucket` argument in context.arguments: {problem}"
                        ),
                        None,
                    )
                })?;
                let page = s3
                    .client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(typed)
                    .delimiter("/")
                    .max_keys(CompletionInfo::MAX_VALUES as i32)
                    .send()
                    .await
                    .map_err(|error| {
                        s3_error(
                            "ListObjectsV2",
                            &format!("s3://{bucket}"),
                            crate::s3::S3Failure::from_sdk(&error),
                        )
                    })?;
                let mut values: Vec<String> = page
                    .common_prefixes()
                    .iter()
                    .filter_map(|prefix| prefix.prefix().map(str::to_string))
                    .chain(
                        page.contents()
                            .iter()
                            .filter_map(|object| object.key().map(str::to_string)),
                    )
                    .collect();
                values.sort();
                let more = page.is_truncated().unwrap_or(false)
                    || values.len() > CompletionInfo::MAX_VALUES;
                values.truncate(CompletionInfo::MAX_VALUES);
                (values, more)
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("{TEMPLATE} has no argument {other:?}; complete `bucket` or `key`"),
                    None,
                ));
            }
        };
        let info = CompletionInfo::with_pagination(values, None, has_more)
            .map_err(|problem| ErrorData::internal_error(problem, None))?;
        Ok(CompleteResult::new(info))
    }
}

/// Whether a `Content-Type` says text (then valid UTF-8 goes out as text, not base64).
fn is_textual(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return true;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || ["json", "xml", "yaml", "javascript", "csv", "toml"]
            .iter()
            .any(|kind| essence.contains(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let cursor = Cursor {
            bucket: 2,
            token: Some("abc".into()),
        };
        let back = decode_cursor(&encode_cursor(&cursor)).unwrap();
        assert_eq!(back.bucket, 2);
        assert_eq!(back.token.as_deref(), Some("abc"));
        assert!(decode_cursor("!!").is_err());
    }

    #[test]
    fn text_types_are_text() {
        assert!(is_textual(Some("text/plain; charset=utf-8")));
        assert!(is_textual(Some("application/json")));
        assert!(!is_textual(Some("image/png")));
        assert!(!is_textual(Some("application/octet-stream")));
    }

    #[test]
    fn the_template_is_offered() {
        let templates = templates();
        assert_eq!(templates.resource_templates[0].uri_template, TEMPLATE);
    }
}
