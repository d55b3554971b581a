//! The protocol revisions this server speaks, and the `MCP-Protocol-Version` header check.
//!
//! rmcp checks the header too, but only after the authentication gate has run; checking here
//! first makes an unsupported version a 400 whatever the request's token situation, and narrows
//! the accepted set to the revisions this adapter is tested with. The refusal has rmcp's shape
//! (code −32022 with `requested` and `supported`), so clients that negotiate keep working.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

use crate::jsonrpc::{code, error_response};

/// Revisions served: the three with `Mcp-Session-Id` sessions and 2026-07-28 without.
pub(crate) const SUPPORTED: &[ProtocolVersion] = &[
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2026_07_28,
];

/// A request may omit the header (the spec then assumes 2025-03-26); when present, every value
/// must be a supported revision.
pub(crate) fn check(headers: &HeaderMap, id: &Value) -> Result<(), Box<Response>> {
    for value in headers.get_all("mcp-protocol-version") {
        let requested = value.to_str().unwrap_or("<not ASCII>").trim();
        if !SUPPORTED
            .iter()
            .any(|version| version.as_str() == requested)
        {
            let supported: Vec<&str> = SUPPORTED.iter().map(ProtocolVersion::as_str).collect();
            return Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                id.clone(),
                code::UNSUPPORTED_PROTOCOL_VERSION,
                format!(
                    "Unsupported MCP-Protocol-Version {requested:?}; supported: {}",
                    supported.join(", ")
                ),
                Some(json!({ "requested": requested, "supported": supported })),
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(version: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(version) = version {
            headers.insert(
                "mcp-protocol-version",
                HeaderValue::from_str(version).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn known_revisions_and_no_header_pass() {
        for version in ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"] {
            assert!(
                check(&headers(Some(version)), &Value::Null).is_ok(),
                "{version}"
            );
        }
        assert!(check(&headers(None), &Value::Null).is_ok());
    }

    #[test]
    fn unknown_revisions_are_400_with_the_supported_list() {
        for version in ["2024-11-05", "2099-01-01", "latest", ""] {
            let response = check(&headers(Some(version)), &json!(5)).unwrap_err();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{version}");
        }
    }
}
