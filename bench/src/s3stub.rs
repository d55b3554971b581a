//! A keep-alive S3 stand-in for the adapter benchmarks: path-style `ListObjectsV2`, `GetObject`
//! (with `Range`), `HeadObject`, `PutObject` (plain or `aws-chunked` bodies) and `CreateBucket`,
//! from memory, over HTTP/1.1 with keep-alive and `TCP_NODELAY`.
//!
//! moto closes every connection (`Connection: close`), so against moto every S3 call opens a TCP
//! connection and moto's Python dominates the wall time: the benchmark measured moto more than the
//! servers under test. Real S3 keeps connections alive and answers in a few milliseconds; this
//! stub keeps them alive and answers in microseconds, so what is left is the cost of the MCP
//! servers themselves.
//!
//! What it does **not** do (stated in BENCHMARKS.md too): it checks no signature and no
//! permission (any credentials, valid or not, are served), no versioning, no multipart upload, no
//! checksums (it sends none, so clients validate none; an `aws-chunked` body's trailer is read and
//! ignored), no `delimiter`/common prefixes, and ETags are a 64-bit hash of the body, not MD5. It
//! is a benchmark backend, never a test oracle for S3 behaviour (moto is that).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

/// One stored object.
#[derive(Debug, Clone)]
struct Object {
    body: Bytes,
    etag: String,
    modified: SystemTime,
    content_type: String,
}

/// Buckets → keys (sorted, as S3 lists them) → objects.
type Buckets = Arc<RwLock<HashMap<String, BTreeMap<String, Object>>>>;

/// Serves the stub on `listener` until the process ends.
pub async fn run(listener: TcpListener) -> std::io::Result<()> {
    let buckets: Buckets = Arc::default();
    let app = Router::new().fallback(handle).with_state(buckets);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

/// Largest body accepted by `PutObject` (the benchmarks write a few bytes).
const MAX_BODY: usize = 64 * 1024 * 1024;

async fn handle(State(buckets): State<Buckets>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().trim_start_matches('/').to_string();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (percent_decode(b), percent_decode(k)),
        None => (percent_decode(&path), String::new()),
    };
    if bucket.is_empty() {
        return error(StatusCode::NOT_IMPLEMENTED, "NotImplemented", "ListBuckets");
    }
    match (parts.method.clone(), key.is_empty()) {
        (Method::PUT, true) => {
            buckets
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(bucket)
                .or_default();
            StatusCode::OK.into_response()
        }
        (Method::GET, true) => list(&buckets, &bucket, &query),
        (Method::PUT, false) => {
            let body = match axum::body::to_bytes(body, MAX_BODY).await {
                Ok(b) => b,
                Err(_) => return error(StatusCode::BAD_REQUEST, "EntityTooLarge", &key),
            };
            let body = if is_aws_chunked(&parts.headers) {
                match decode_aws_chunked(&body) {
                    Some(b) => b,
                    None => return error(StatusCode::BAD_REQUEST, "IncompleteBody", &key),
                }
            } else {
                body
            };
            let object = Object {
                etag: etag(&body),
                body,
                modified: SystemTime::now(),
                content_type: parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("binary/octet-stream")
                    .to_string(),
            };
            let etag = object.etag.clone();
            buckets
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(bucket)
                .or_default()
                .insert(key, object);
            let mut response = StatusCode::OK.into_response();
            insert(response.headers_mut(), header::ETAG, &etag);
            response
        }
        (Method::GET | Method::HEAD, false) => {
            let object = buckets
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&bucket)
                .and_then(|b| b.get(&key))
                .cloned();
            match object {
                Some(o) => object_response(&parts.method, &parts.headers, o),
                None if parts.method == Method::HEAD => StatusCode::NOT_FOUND.into_response(),
                None => error(StatusCode::NOT_FOUND, "NoSuchKey", &key),
            }
        }
        _ => error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            parts.method.as_str(),
        ),
    }
}

/// `ListObjectsV2` (`list-type=2`): `prefix`, `max-keys`, `continuation-token`, `start-after`.
fn list(buckets: &Buckets, bucket: &str, query: &HashMap<String, String>) -> Response {
    let map = buckets.read().unwrap_or_else(|e| e.into_inner());
    let Some(objects) = map.get(bucket) else {
        return error(StatusCode::NOT_FOUND, "NoSuchBucket", bucket);
    };
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    let max_keys: usize = query
        .get("max-keys")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    // The continuation token is the last key served (opaque to clients, as S3's is).
    let after = query
        .get("continuation-token")
        .or_else(|| query.get("start-after"))
        .cloned()
        .unwrap_or_default();
    let mut contents = String::new();
    let mut count = 0;
    let mut last = None;
    let mut truncated = false;
    let start = std::ops::Bound::Excluded(after.clone());
    let range = if after.is_empty() {
        objects.range::<String, _>(..)
    } else {
        objects.range((start, std::ops::Bound::Unbounded))
    };
    for (key, object) in range.filter(|(k, _)| k.starts_with(prefix)) {
        if count == max_keys {
            truncated = true;
            break;
        }
        contents.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            xml_escape(key),
            iso8601(object.modified),
            xml_escape(&object.etag),
            object.body.len()
        ));
        count += 1;
        last = Some(key.clone());
    }
    let next = match (truncated, last) {
        (true, Some(k)) => format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            xml_escape(&k)
        ),
        _ => String::new(),
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{count}</KeyCount><MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>{next}{contents}</ListBucketResult>",
        xml_escape(bucket),
        xml_escape(prefix),
    );
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

/// `GetObject` / `HeadObject`, honouring a single `Range: bytes=a-b` (or `a-`, `-n`).
fn object_response(method: &Method, headers: &HeaderMap, o: Object) -> Response {
    let len = o.body.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| parse_range(r, len));
    let (status, body) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, o.body.slice(a..=b)),
        None if headers.contains_key(header::RANGE) && len > 0 => {
            return error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "the range",
            );
        }
        None => (StatusCode::OK, o.body.clone()),
    };
    let mut response = if *method == Method::HEAD {
        let mut r = Response::new(Body::empty());
        insert(
            r.headers_mut(),
            header::CONTENT_LENGTH,
            &body.len().to_string(),
        );
        r
    } else {
        Response::new(Body::from(body.clone()))
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    insert(h, header::ETAG, &o.etag);
    insert(
        h,
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(o.modified),
    );
    insert(h, header::CONTENT_TYPE, &o.content_type);
    insert(h, header::ACCEPT_RANGES, "bytes");
    if let Some((a, b)) = range {
        insert(h, header::CONTENT_RANGE, &format!("bytes {a}-{b}/{len}"));
    }
    response
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a body of `len` bytes: the inclusive range, or
/// `None` when unsatisfiable or not understood.
fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if len == 0 {
        return None;
    }
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

fn is_aws_chunked(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("aws-chunked"))
        || headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("STREAMING-"))
}

/// An `aws-chunked` body: `<hex size>[;chunk-signature=…]\r\n<data>\r\n` … `0\r\n<trailers>\r\n`.
fn decode_aws_chunked(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(Bytes::from(out));
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn error(status: StatusCode, code: &str, resource: &str) -> Response {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{code}</Message><Resource>{}</Resource><RequestId>stub</RequestId></Error>",
        xml_escape(resource)
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// A quoted 64-bit hash of the body (S3's is MD5; clients treat ETags as opaque).
fn etag(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

fn iso8601(t: SystemTime) -> String {
    // httpdate gives RFC 7231; S3 lists ISO 8601 with milliseconds.
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-3", 10), Some((0, 3)));
        assert_eq!(parse_range("bytes=5-", 10), Some((5, 9)));
        assert_eq!(parse_range("bytes=-4", 10), Some((6, 9)));
        assert_eq!(parse_range("bytes=8-100", 10), Some((8, 9)));
        assert_eq!(parse_range("bytes=10-12", 10), None);
    }

    #[test]
    fn chunked_bodies_decode() {
        let body =
            b"5;chunk-signature=x\r\nhello\r\n3\r\n!!!\r\n0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n";
        assert_eq!(decode_aws_chunked(body).unwrap(), Bytes::from("hello!!!"));
        assert!(decode_aws_chunked(b"5\r\nhel").is_none());
    }

    #[test]
    fn dates_and_escapes() {
        assert_eq!(
            iso8601(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40.000Z"
        );
        assert_eq!(percent_decode("a%2Fb%20c%4"), "a/b c%4");
        assert_eq!(xml_escape("a<&>"), "a&lt;&amp;&gt;");
    }
}
