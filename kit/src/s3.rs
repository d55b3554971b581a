//! S3 names as users write them: bucket names, object keys, `s3://bucket/key` and
//! `s3://bucket/prefix`. One set of rules for the broker (the `buckets` claim that scopes a
//! credential's session policy) and the adapter (tool arguments, listed buckets), so a name one
//! accepts the other cannot refuse, or the reverse.

/// A bucket and a key, from `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUri {
    pub bucket: String,
    pub key: String,
}

impl ObjectUri {
    /// `s3://bucket/key` again.
    pub fn uri(&self) -> String {
        object_uri(&self.bucket, &self.key)
    }
}

/// `s3://bucket/key`.
pub fn object_uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Parses `s3://bucket/key`; the key must not be empty.
pub fn parse_object_uri(value: &str) -> Result<ObjectUri, String> {
    let rest = value
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{value:?} is not an s3:// URI (expected s3://bucket/key)"))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| format!("{value:?} has no object key (expected s3://bucket/key)"))?;
    validate_bucket(bucket)?;
    validate_key(key)?;
    Ok(ObjectUri {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}

/// A bucket given as `name`, `s3://name`, `s3://name/` or `s3://name/prefix`; returns the name and
/// the prefix, if the URI had one.
pub fn parse_bucket(value: &str) -> Result<(String, Option<String>), String> {
    let value = value.trim();
    let (bucket, prefix) = match value.strip_prefix("s3://") {
        Some(rest) => match rest.split_once('/') {
            Some((bucket, prefix)) if !prefix.is_empty() => (bucket, Some(prefix.to_string())),
            Some((bucket, _)) => (bucket, None),
            None => (rest, None),
        },
        None => (value, None),
    };
    validate_bucket(bucket)?;
    Ok((bucket.to_string(), prefix))
}

/// S3 bucket naming rules (general purpose buckets): 3–63 characters of lower-case letters,
/// digits, `.` and `-`, starting and ending with a letter or digit, no `..`, not shaped like an
/// IPv4 address (`192.168.1.1`). Anything else (wildcards, quotes, JSON fragments) never reaches
/// a policy or a request. The broker (token `buckets` claims) and the adapter (tool arguments,
/// `ADAPTER_LISTED_BUCKETS`) apply these same rules.
pub fn validate_bucket(bucket: &str) -> Result<(), String> {
    if valid_bucket_name(bucket) {
        Ok(())
    } else {
        Err(format!(
            "{bucket:?} is not a valid bucket name (3-63 lower-case letters, digits, '.' or '-'; not an IP address)"
        ))
    }
}

/// [`validate_bucket`] as a yes/no.
pub fn valid_bucket_name(bucket: &str) -> bool {
    let bytes = bucket.as_bytes();
    let len_ok = (3..=63).contains(&bytes.len());
    let chars_ok = bytes
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-');
    let ends_ok = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let not_ip = bucket.parse::<std::net::Ipv4Addr>().is_err();
    len_ok
        && chars_ok
        && ends_ok(bytes.first())
        && ends_ok(bytes.last())
        && !bucket.contains("..")
        && not_ip
}

/// Object keys: 1–1024 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("object key is empty".into());
    }
    if key.len() > 1024 {
        return Err("object key is longer than 1024 bytes".into());
    }
    if key.chars().any(char::is_control) {
        return Err("object key contains control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_uris() {
        assert_eq!(
            parse_object_uri("s3://demo-bucket/a/b.txt"),
            Ok(ObjectUri {
                bucket: "demo-bucket".into(),
                key: "a/b.txt".into()
            })
        );
        assert!(parse_object_uri("demo-bucket/a").is_err());
        assert!(parse_object_uri("s3://demo-bucket").is_err());
        assert!(parse_object_uri("s3://demo-bucket/").is_err());
        assert!(parse_object_uri("s3://Demo_Bucket/a").is_err());
        assert!(parse_object_uri("https://demo-bucket.s3.amazonaws.com/a").is_err());
        assert!(parse_object_uri("s3://demo-bucket/a\nb").is_err());
        assert_eq!(
            ObjectUri {
                bucket: "b12".into(),
                key: "k".into()
            }
            .uri(),
            "s3://b12/k"
        );
    }

    #[test]
    fn buckets_by_name_or_uri() {
        assert_eq!(
            parse_bucket("demo-bucket"),
            Ok(("demo-bucket".into(), None))
        );
        assert_eq!(
            parse_bucket("s3://demo-bucket"),
            Ok(("demo-bucket".into(), None))
        );
        assert_eq!(
            parse_bucket("s3://demo-bucket/"),
            Ok(("demo-bucket".into(), None))
        );
        assert_eq!(
            parse_bucket("s3://demo-bucket/logs/"),
            Ok(("demo-bucket".into(), Some("logs/".into())))
        );
        for bad in [
            "",
            "ab",
            "-bucket",
            "bucket-",
            "UPPER",
            "a..b",
            "192.168.1.1",
            &"x".repeat(64),
        ] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(1025)).is_err());
    }

    #[test]
    fn ip_shaped_names_are_refused_and_dotted_names_are_not() {
        for bad in ["192.168.1.1", "10.0.0.1", "s3://192.168.1.1/x"] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
        assert!(parse_object_uri("s3://192.168.1.1/key").is_err());
        for ok in ["a.b.c", "1.2.3", "1.2.3.4.5", "256.1.1.1x"] {
            assert!(validate_bucket(ok).is_ok(), "{ok}");
        }
    }
}
