//! Browser `Origin` checks for `/mcp` (MCP transport spec: servers MUST validate `Origin` to stop
//! DNS-rebinding and cross-site requests).
//!
//! Requests without `Origin` are non-browser clients and pass. A request with an `Origin` passes
//! only when that exact origin is configured; with no allowlist every browser origin is refused.
//! Origins are compared in the form browsers send them (lower-case scheme and host, default port
//! omitted), so `https://App.example.com:443` in the configuration matches what Chrome sends.

/// `scheme://host[:port]` normalized, or `null`; `None` when `value` is not an origin.
pub(crate) fn normalize(value: &str) -> Option<String> {
    if value.eq_ignore_ascii_case("null") {
        return Some("null".into());
    }
    let uri: http::Uri = value.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    // An origin is only scheme, host and port: no path, query or user info.
    if authority.as_str().contains('@')
        || uri.query().is_some()
        || !(uri.path().is_empty() || uri.path() == "/")
        || value.ends_with('/')
    {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let default_port = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    Some(match authority.port_u16() {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// The allowed origins, normalized once at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    allowed: Vec<String>,
}

/// Why a request's `Origin` was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OriginRejection {
    /// The header is not an origin at all.
    Malformed,
    /// A well-formed origin that is not on the list.
    NotAllowed(String),
}

impl OriginPolicy {
    /// `allowed` entries must already be normalized (the config parser does that).
    pub(crate) fn new(allowed: Vec<String>) -> Self {
        Self { allowed }
    }

    /// Checks the request's `Origin` header values (there should be at most one).
    pub(crate) fn check(&self, headers: &http::HeaderMap) -> Result<(), OriginRejection> {
        for value in headers.get_all(http::header::ORIGIN) {
            let origin = value
                .to_str()
                .ok()
                .and_then(normalize)
                .ok_or(OriginRejection::Malformed)?;
            if !self.allows(&origin) {
                return Err(OriginRejection::NotAllowed(origin));
            }
        }
        Ok(())
    }

    /// Whether one normalized origin is allowed; used for CORS answers too.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        self.allowed.iter().any(|allowed| allowed == origin)
    }

    /// Whether the raw header value of a CORS request is allowed.
    pub(crate) fn allows_header(&self, value: &http::HeaderValue) -> bool {
        value
            .to_str()
            .ok()
            .and_then(normalize)
            .is_some_and(|origin| self.allows(&origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, header::ORIGIN};

    fn headers(origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn normalizes_like_browsers() {
        assert_eq!(
            normalize("HTTPS://App.Example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalize("http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(
            normalize("http://[::1]:8080").as_deref(),
            Some("http://[::1]:8080")
        );
        assert_eq!(normalize("null").as_deref(), Some("null"));
        assert_eq!(normalize("https://a.example/path"), None);
        assert_eq!(normalize("https://a.example/"), None);
        assert_eq!(normalize("https://u@a.example"), None);
        assert_eq!(normalize("a.example"), None);
    }

    #[test]
    fn no_origin_passes_even_with_an_empty_list() {
        assert_eq!(OriginPolicy::default().check(&headers(None)), Ok(()));
    }

    #[test]
    fn any_origin_is_refused_without_a_list() {
        assert_eq!(
            OriginPolicy::default().check(&headers(Some("https://evil.example"))),
            Err(OriginRejection::NotAllowed("https://evil.example".into()))
        );
    }

    #[test]
    fn listed_origins_pass_and_others_do_not() {
        let policy = OriginPolicy::new(vec!["https://app.example.com".into()]);
        assert_eq!(
            policy.check(&headers(Some("https://app.example.com"))),
            Ok(())
        );
        assert_eq!(
            policy.check(&headers(Some("https://app.example.com:443"))),
            Ok(())
        );
        assert!(
            policy
                .check(&headers(Some("https://app.example.com:8443")))
                .is_err()
        );
        assert!(
            policy
                .check(&headers(Some("http://app.example.com")))
                .is_err()
        );
        assert!(policy.check(&headers(Some("null"))).is_err());
        assert_eq!(
            policy.check(&headers(Some("not an origin"))),
            Err(OriginRejection::Malformed)
        );
    }

    #[test]
    fn a_second_origin_header_cannot_hide_behind_the_first() {
        let policy = OriginPolicy::new(vec!["https://app.example.com".into()]);
        let mut map = headers(Some("https://app.example.com"));
        map.append(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(policy.check(&map).is_err());
    }
}
