//! Sessions: which token (and so which subject and scope) an MCP session id is bound to.
//!
//! The rules, as pure functions over the stored record (see [`decide`]):
//! - an unbound session is bound by the first call that carries a valid token;
//! - the same token again is the fast path: nothing to validate, only its `exp` to check;
//! - a new token of the same issuer and subject re-authenticates and rebinds the session;
//! - a token of anyone else is refused and leaves the session as it was;
//! - a revoked session stays revoked until the revocation retention ends.
//!
//! A session id is a bearer secret: it is never stored or logged, only its keyed hash, the
//! [`SessionHandle`].

use std::time::Duration;

pub use crate::store::records::SessionRecord;

/// What a call with a token means for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// No session yet: bind it.
    Unbound,
    /// The bound token itself (and, if a role was asked for, the bound role).
    SameToken,
    /// Another token of the same issuer and subject: re-authenticate and rebind.
    Rebind,
    /// A token of another issuer or subject: refuse, change nothing.
    OtherSubject,
    /// The session was revoked.
    Revoked,
}

/// Decides what a token presented on a session means, before any signature is checked for the
/// `SameToken` case (equal keyed fingerprints mean an identical, already validated token).
pub fn classify_token(
    existing: Option<&SessionRecord>,
    fingerprint: &str,
    requested_role: Option<&str>,
) -> Option<Binding> {
    match existing {
        None => None,
        Some(r) if r.revoked => Some(Binding::Revoked),
        Some(r)
            if r.token_fingerprint == fingerprint
                && requested_role.is_none_or(|role| role == r.scope.role) =>
        {
            Some(Binding::SameToken)
        }
        Some(_) => None,
    }
}

/// After validating a token: bind, rebind, or refuse.
pub fn decide(existing: Option<&SessionRecord>, issuer: &str, subject: &str) -> Binding {
    match existing {
        None => Binding::Unbound,
        Some(r) if r.revoked => Binding::Revoked,
        Some(r) if r.issuer == issuer && r.subject == subject => Binding::Rebind,
        Some(_) => Binding::OtherSubject,
    }
}

/// How long a live session's record is kept: until its token's `exp` plus `grace`, so a client
/// that refreshes its token a little late still finds its session.
pub fn session_ttl(token_expires_at_s: i64, now_ms: i64, grace: Duration) -> Duration {
    let left_ms = (token_expires_at_s * 1000 - now_ms).max(0) as u64;
    Duration::from_millis(left_ms) + grace
}

/// A session id as a caller must send it: 16 to 512 visible ASCII characters. rmcp's ids are
/// UUIDs (36); anything shorter is too guessable to name a credential-bearing session.
pub fn valid_session_id(id: &str) -> bool {
    (16..=512).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    fn record(sub: &str, fp: &str) -> SessionRecord {
        SessionRecord {
            subject: sub.into(),
            issuer: "iss".into(),
            token_fingerprint: fp.into(),
            scope: Scope {
                role: "arn:aws:iam::123456789012:role/r".into(),
                ..Scope::default()
            },
            ..SessionRecord::default()
        }
    }

    #[test]
    fn unbound_session_is_bound() {
        assert_eq!(decide(None, "iss", "alice"), Binding::Unbound);
        assert_eq!(classify_token(None, "fp", None), None);
    }

    #[test]
    fn same_token_is_the_fast_path() {
        let r = record("alice", "fp1");
        assert_eq!(
            classify_token(Some(&r), "fp1", None),
            Some(Binding::SameToken)
        );
        assert_eq!(
            classify_token(Some(&r), "fp1", Some("arn:aws:iam::123456789012:role/r")),
            Some(Binding::SameToken)
        );
        assert_eq!(
            classify_token(Some(&r), "fp1", Some("arn:aws:iam::123456789012:role/q")),
            None
        );
        assert_eq!(classify_token(Some(&r), "fp2", None), None);
    }

    #[test]
    fn same_subject_rebinds_other_subject_is_refused() {
        let r = record("alice", "fp1");
        assert_eq!(decide(Some(&r), "iss", "alice"), Binding::Rebind);
        assert_eq!(decide(Some(&r), "iss", "bob"), Binding::OtherSubject);
        assert_eq!(
            decide(Some(&r), "other-iss", "alice"),
            Binding::OtherSubject
        );
    }

    #[test]
    fn revoked_stays_revoked() {
        let mut r = record("alice", "fp1");
        r.revoked = true;
        assert_eq!(
            classify_token(Some(&r), "fp1", None),
            Some(Binding::Revoked)
        );
        assert_eq!(decide(Some(&r), "iss", "alice"), Binding::Revoked);
    }

    #[test]
    fn session_ttl_is_token_exp_plus_grace() {
        let ttl = session_ttl(1_000, 990_000, Duration::from_secs(60));
        assert_eq!(ttl, Duration::from_secs(70));
        assert_eq!(
            session_ttl(1_000, 2_000_000, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn session_ids_are_checked() {
        assert!(valid_session_id("0123456789abcdef"));
        assert!(!valid_session_id("short"));
        assert!(!valid_session_id("has space in it, sixteen+"));
        assert!(!valid_session_id(&"x".repeat(513)));
    }
}
