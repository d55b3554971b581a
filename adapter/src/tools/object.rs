//! One object: `bucket_object_info` (HeadObject), `bucket_object_text` and `bucket_object_fetch`
//! (GetObject of at most `max_bytes`, with a Range request so a large object is never downloaded
//! whole).

use base64::Engine;
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

use super::{BucketTools, invalid_argument, notify::Reporter, s3_failure, success, timestamp};
use crate::s3::{ObjectUri, S3Failure, parse_object_uri};

const DEFAULT_MAX_BYTES: i64 = 65_536;
/// Upper bound for `max_bytes`: a tool result lives in memory and in the model's context.
pub(super) const MAX_MAX_BYTES: i64 = 8 * 1024 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct InfoArgs {
    /// Object URI, `s3://bucket/key`.
    s3_uri: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct TextArgs {
    /// Object URI, `s3://bucket/key`.
    s3_uri: String,
    /// Bytes to read from the start of the object, 1–8388608 (default 65536).
    #[serde(default)]
    max_bytes: Option<i64>,
    /// Text encoding: `utf-8` (default), `latin-1` or `ascii`.
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct FetchArgs {
    /// Object URI, `s3://bucket/key`.
    s3_uri: String,
    /// Bytes to read from the start of the object, 1–8388608 (default 65536).
    #[serde(default)]
    max_bytes: Option<i64>,
}

/// Supported text encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Latin1,
    Ascii,
}

impl Encoding {
    fn parse(value: Option<&str>) -> Result<Self, String> {
        match value
            .map(|v| v.trim().to_ascii_lowercase().replace('_', "-"))
            .as_deref()
        {
            None | Some("utf-8" | "utf8") => Ok(Self::Utf8),
            Some("latin-1" | "latin1" | "iso-8859-1") => Ok(Self::Latin1),
            Some("ascii" | "us-ascii") => Ok(Self::Ascii),
            Some(other) => Err(format!("{other:?} is not one of utf-8, latin-1, ascii")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Latin1 => "latin-1",
            Self::Ascii => "ascii",
        }
    }

    /// Decodes; returns the text and whether bytes had to be replaced. A truncated read may end
    /// inside a UTF-8 sequence: that tail is dropped, not replaced.
    fn decode(self, bytes: &[u8], truncated: bool) -> (String, bool) {
        match self {
            Self::Latin1 => (bytes.iter().map(|&b| b as char).collect(), false),
            Self::Ascii => {
                let replaced = bytes.iter().any(|b| !b.is_ascii());
                let text = bytes
                    .iter()
                    .map(|&b| if b.is_ascii() { b as char } else { '\u{fffd}' })
                    .collect();
                (text, replaced)
            }
            Self::Utf8 => {
                let bytes = if truncated {
                    trim_partial_utf8(bytes)
                } else {
                    bytes
                };
                match std::str::from_utf8(bytes) {
                    Ok(text) => (text.to_string(), false),
                    Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
                }
            }
        }
    }
}

/// Drops an incomplete UTF-8 sequence at the end (at most 3 bytes).
fn trim_partial_utf8(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes,
        Err(error) if error.error_len().is_none() => &bytes[..error.valid_up_to()],
        Err(_) => bytes,
    }
}

/// The first bytes of an object and what S3 said about it.
pub(super) struct Head {
    pub(super) bytes: Vec<u8>,
    /// Whole object size, when S3 told it.
    pub(super) size: Option<i64>,
    pub(super) content_type: Option<String>,
    etag: Option<String>,
    last_modified: Value,
}

impl Head {
    fn truncated(&self) -> bool {
        self.size.is_some_and(|size| size > self.bytes.len() as i64)
    }
}

fn parse_max_bytes(value: Option<i64>) -> Result<i64, CallToolResult> {
    let max = value.unwrap_or(DEFAULT_MAX_BYTES);
    if (1..=MAX_MAX_BYTES).contains(&max) {
        Ok(max)
    } else {
        Err(invalid_argument(
            "max_bytes",
            format!("{max} is not between 1 and {MAX_MAX_BYTES}"),
        ))
    }
}

fn parse_uri(value: &str) -> Result<ObjectUri, CallToolResult> {
    parse_object_uri(value).map_err(|problem| invalid_argument("s3_uri", problem))
}

/// Total size from `Content-Range: bytes 0-99/1234`.
fn total_from_content_range(range: Option<&str>) -> Option<i64> {
    range?.rsplit_once('/')?.1.parse().ok()
}

/// GetObject of the first `max_bytes` bytes; an empty object (where S3 refuses any Range with
/// InvalidRange) is read without one. Either way the body is read as a stream that stops at
/// `max_bytes`: the object may have grown between the two requests, and a tool result must never
/// cost more memory or transfer than its limit.
pub(super) async fn read_head(
    client: &aws_sdk_s3::Client,
    object: &ObjectUri,
    max_bytes: i64,
) -> Result<Head, CallToolResult> {
    let ranged = client
        .get_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .range(format!("bytes=0-{}", max_bytes - 1))
        .send()
        .await;
    let output = match ranged {
        Ok(output) => output,
        Err(error) => {
            let failure = S3Failure::from_sdk(&error);
            if failure.code != "InvalidRange" {
                return Err(s3_failure("GetObject", &object.uri(), failure));
            }
            client
                .get_object()
                .bucket(&object.bucket)
                .key(&object.key)
                .send()
                .await
                .map_err(|error| {
                    s3_failure("GetObject", &object.uri(), S3Failure::from_sdk(&error))
                })?
        }
    };
    let size = total_from_content_range(output.content_range()).or(output.content_length());
    let content_type = output.content_type().map(str::to_string);
    let etag = output.e_tag().map(str::to_string);
    let last_modified = timestamp(output.last_modified());
    let bytes = read_at_most(output.body, max_bytes as usize)
        .await
        .map_err(|error| {
            s3_failure(
                "GetObject",
                &object.uri(),
                S3Failure {
                    code: "NetworkError".into(),
                    message: format!("reading the object failed: {error}"),
                    http_status: None,
                },
            )
        })?;
    Ok(Head {
        bytes,
        size,
        content_type,
        etag,
        last_modified,
    })
}

/// Reads at most `limit` bytes of `body` and drops the rest unread (the connection is closed
/// rather than drained), so neither memory nor transfer exceeds the limit by more than a chunk.
async fn read_at_most(
    mut body: aws_sdk_s3::primitives::ByteStream,
    limit: usize,
) -> Result<Vec<u8>, aws_sdk_s3::primitives::ByteStreamError> {
    let mut bytes = Vec::with_capacity(limit.min(DEFAULT_MAX_BYTES as usize));
    while bytes.len() < limit {
        match body.try_next().await? {
            Some(chunk) => {
                let take = chunk.len().min(limit - bytes.len());
                bytes.extend_from_slice(&chunk[..take]);
            }
            None => break,
        }
    }
    Ok(bytes)
}

#[tool_router(router = object_router, vis = "pub(super)")]
impl BucketTools {
    #[tool(
        name = "bucket_object_info",
        description = "Metadata of one S3 object: size, content type, etag, last modified, user metadata and version id.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    pub(super) async fn bucket_object_info(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<InfoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let object = match parse_uri(&args.s3_uri) {
            Ok(object) => object,
            Err(refusal) => return Ok(refusal),
        };
        let s3 = match self.session(&parts) {
            Ok(s3) => s3,
            Err(refusal) => return Ok(refusal),
        };
        let head = s3
            .client
            .head_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .send()
            .await;
        match head {
            Ok(head) => Ok(success(json!({
                "s3_uri": object.uri(),
                "bucket": object.bucket,
                "key": object.key,
                "size": head.content_length(),
                "content_type": head.content_type(),
                "etag": head.e_tag(),
                "last_modified": timestamp(head.last_modified()),
                "metadata": head.metadata(),
                "version_id": head.version_id(),
            }))),
            Err(error) => {
                let mut failure = S3Failure::from_sdk(&error);
                // HEAD answers carry no error body: a 404 is a missing key (or bucket).
                if failure.code == "NotFound" {
                    failure.code = "NoSuchKey".into();
                    failure.message = "the object (or its bucket) does not exist".into();
                }
                Ok(s3_failure("HeadObject", &object.uri(), failure))
            }
        }
    }

    #[tool(
        name = "bucket_object_text",
        description = "Read the start of an S3 object as text (at most max_bytes bytes, default 65536).",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    pub(super) async fn bucket_object_text(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<TextArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (object, max_bytes, encoding) = match (
            parse_uri(&args.s3_uri),
            parse_max_bytes(args.max_bytes),
            Encoding::parse(args.encoding.as_deref()),
        ) {
            (Ok(object), Ok(max), Ok(encoding)) => (object, max, encoding),
            (Err(refusal), _, _) | (_, Err(refusal), _) => return Ok(refusal),
            (_, _, Err(problem)) => return Ok(invalid_argument("encoding", problem)),
        };
        let s3 = match self.session(&parts) {
            Ok(s3) => s3,
            Err(refusal) => return Ok(refusal),
        };
        let head = match read_head(&s3.client, &object, max_bytes).await {
            Ok(head) => head,
            Err(refusal) => return Ok(refusal),
        };
        let truncated = head.truncated();
        let (text, replaced) = encoding.decode(&head.bytes, truncated);
        let mut result = json!({
            "s3_uri": object.uri(),
            "encoding": encoding.name(),
            "bytes_read": head.bytes.len(),
            "size": head.size,
            "truncated": truncated,
            "invalid_bytes_replaced": replaced,
            "content_type": head.content_type,
            "etag": head.etag,
            "last_modified": head.last_modified,
        });
        // Moved in, not copied through `json!` (up to `max_bytes` of text).
        result["text"] = Value::String(text);
        Ok(success(result))
    }

    #[tool(
        name = "bucket_object_fetch",
        description = "Read the start of an S3 object as base64 (at most max_bytes bytes, default 65536).",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn bucket_object_fetch(
        &self,
        Extension(parts): Extension<Parts>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
        Parameters(args): Parameters<FetchArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let reporter = Reporter::new(peer, &meta, self.log_level.clone());
        let (object, max_bytes) = match (parse_uri(&args.s3_uri), parse_max_bytes(args.max_bytes)) {
            (Ok(object), Ok(max)) => (object, max),
            (Err(refusal), _) | (_, Err(refusal)) => return Ok(refusal),
        };
        let s3 = match self.session(&parts) {
            Ok(s3) => s3,
            Err(refusal) => return Ok(refusal),
        };
        reporter
            .progress(0.0, None, format!("reading {}", object.uri()))
            .await;
        let head = match read_head(&s3.client, &object, max_bytes).await {
            Ok(head) => head,
            Err(refusal) => return Ok(refusal),
        };
        let read = head.bytes.len() as f64;
        reporter
            .progress(
                read,
                Some(read),
                format!("read {read} bytes of {}", object.uri()),
            )
            .await;
        let mut result = json!({
            "s3_uri": object.uri(),
            "bytes_read": head.bytes.len(),
            "size": head.size,
            "truncated": head.truncated(),
            "content_type": head.content_type,
            "etag": head.etag,
            "last_modified": head.last_modified,
        });
        // Moved in, not copied through `json!` (up to `max_bytes` of base64).
        result["data"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(&head.bytes));
        Ok(success(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Size the grown object claims; reading it whole would take this much memory.
    const GROWN: u64 = 256 * 1024 * 1024;

    /// An S3 stand-in for one object that is empty at the first request and huge at the second:
    /// the ranged GET gets S3's InvalidRange answer, the plain GET a 256 MiB body sent until the
    /// client hangs up. Counts the body bytes it managed to write.
    async fn growing_object_server() -> (u16, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if head.contains("\r\nrange:") {
                        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidRange</Code><Message>The requested range is not satisfiable</Message><ActualObjectSize>0</ActualObjectSize></Error>";
                        let answer = format!(
                            "HTTP/1.1 416 Requested Range Not Satisfiable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {GROWN}\r\nETag: \"grown\"\r\nConnection: close\r\n\r\n"
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0u64;
                    while sent < GROWN {
                        if stream.write_all(&chunk).await.is_err() {
                            return;
                        }
                        sent += chunk.len() as u64;
                        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        (port, written)
    }

    #[tokio::test]
    async fn an_object_that_grew_after_invalid_range_is_read_only_up_to_the_limit() {
        let (port, written) = growing_object_server().await;
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            ))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let object = parse_object_uri("s3://demo-bucket/grows.txt").unwrap();
        let head = match read_head(&client, &object, 1000).await {
            Ok(head) => head,
            Err(refusal) => panic!("{refusal:?}"),
        };
        assert_eq!(head.bytes.len(), 1000);
        assert!(head.truncated(), "the size S3 announced is reported");
        let sent = written.load(Ordering::SeqCst);
        eprintln!("bytes sent by the grown-object server for a 1000-byte limit: {sent}");
        assert!(
            sent < 32 * 1024 * 1024,
            "the whole grown object was read: {sent} bytes sent for a 1000-byte limit"
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(Encoding::parse(None), Ok(Encoding::Utf8));
        assert_eq!(Encoding::parse(Some("UTF_8")), Ok(Encoding::Utf8));
        assert_eq!(Encoding::parse(Some("ISO-8859-1")), Ok(Encoding::Latin1));
        assert!(Encoding::parse(Some("ebcdic")).is_err());
        assert_eq!(
            Encoding::Latin1.decode(&[0x63, 0xe9], false),
            ("cé".into(), false)
        );
        assert!(Encoding::Ascii.decode(&[0x61, 0xe9], false).1);
    }

    #[test]
    fn a_cut_utf8_sequence_is_dropped_not_replaced() {
        let bytes = "añ".as_bytes(); // 61 c3 b1
        assert_eq!(
            Encoding::Utf8.decode(&bytes[..2], true),
            ("a".into(), false)
        );
        assert!(Encoding::Utf8.decode(&bytes[..2], false).1);
        assert!(Encoding::Utf8.decode(&[0x61, 0xff, 0x62], true).1);
    }

    #[test]
    fn max_bytes_bounds_and_content_range() {
        assert!(parse_max_bytes(None).is_ok());
        assert!(parse_max_bytes(Some(0)).is_err());
        assert!(parse_max_bytes(Some(MAX_MAX_BYTES + 1)).is_err());
        assert_eq!(
            total_from_content_range(Some("bytes 0-99/1234")),
            Some(1234)
        );
        assert_eq!(total_from_content_range(Some("bytes 0-99/*")), None);
        assert_eq!(total_from_content_range(None), None);
    }
}
