//! Which IAM role a token gets: claims → role ARN → allowlist.
//!
//! The token names roles (`role_arn`, `roles`); a request may pick one of them; the result must
//! match an operator-configured allowlist of ARN globs. A `*` in a glob matches within one ARN
//! segment only — it never crosses `:` or `/` — so `arn:aws:iam::123456789012:role/app-*` cannot
//! be stretched to another account, partition or role path.

use crate::token::Claims;
use std::fmt;

/// Why no role could be chosen. All of these are the caller's business (PERMISSION_DENIED),
/// except a malformed requested ARN, which is a malformed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("token grants no role: it has neither a \"role_arn\" nor a \"roles\" claim")]
    NoneGranted,
    #[error("claim \"roles\" entry {0} is not a valid IAM role name or role ARN")]
    InvalidGranted(usize),
    #[error(
        "claim \"roles\" names a role by name but the broker has no BROKER_ROLE_ACCOUNT_ID to make it an ARN"
    )]
    NoAccountForName,
    #[error(
        "requested role_arn is not a valid IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>)"
    )]
    InvalidRequested,
    #[error("requested role_arn is not one the token grants")]
    NotGranted,
    #[error("role {0} is not in the broker's allowlist (BROKER_ALLOWED_ROLE_ARNS)")]
    NotAllowed(RoleArn),
}

/// A syntactically valid IAM role ARN: `arn:<partition>:iam::<account>:role/<path/>name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn(String);

impl RoleArn {
    /// Parses a role ARN strictly: ASCII only (no look-alike letters), no whitespace, no `*`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("arn:")?;
        let mut parts = rest.splitn(5, ':');
        let partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        let account = parts.next()?;
        let resource = parts.next()?;
        let partition_ok = !partition.is_empty()
            && partition.len() <= 16
            && partition
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-')
            && partition.starts_with("aws");
        let account_ok = is_account_id(account);
        let path_and_name = resource.strip_prefix("role/")?;
        let segments: Vec<&str> = path_and_name.split('/').collect();
        let segments_ok = segments
            .iter()
            .all(|seg| !seg.is_empty() && seg.len() <= 64 && seg.chars().all(is_iam_name_char));
        (partition_ok
            && service == "iam"
            && region.is_empty()
            && account_ok
            && segments_ok
            && path_and_name.len() <= 512)
            .then(|| Self(s.to_string()))
    }

    /// The ARN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition (`aws`, `aws-cn`, `aws-us-gov`, …), for building other ARNs in the same one.
    pub fn partition(&self) -> &str {
        self.0.split(':').nth(1).unwrap_or("aws")
    }

    /// The role's name (last path segment).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS account id: exactly 12 ASCII digits (the one rule for ARNs and BROKER_ROLE_ACCOUNT_ID).
fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())
}

/// BROKER_ROLE_ACCOUNT_ID as clap parses it: a 12-digit account id, refused at start otherwise.
pub fn parse_account_id(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !is_account_id(value) {
        return Err(format!("{value:?} is not a 12-digit AWS account id"));
    }
    Ok(value.to_string())
}

/// BROKER_ALLOWED_ROLE_ARNS as clap parses it: comma-separated [`ArnGlob`]s, empty entries
/// skipped, so one bad glob stops the start with the variable's name.
pub fn parse_allowlist(list: &str) -> Result<Vec<ArnGlob>, String> {
    list.split(',')
        .filter(|g| !g.trim().is_empty())
        .map(ArnGlob::parse)
        .collect()
}

/// IAM name characters: `[A-Za-z0-9+=,.@_-]`.
fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

/// An allowlist entry: an ARN with `*` wildcards that never cross `:` or `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnGlob(String);

impl ArnGlob {
    /// Accepts globs that look like role ARNs; `*` alone (or any glob not starting with `arn:`)
    /// is refused so that "allow everything" is only ever said with `--allow-any-role`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.starts_with("arn:") {
            return Err(format!(
                "{s:?} is not an ARN glob (it must start with \"arn:\")"
            ));
        }
        if s.split(':').count() != 6 {
            return Err(format!(
                "{s:?} must have six ':'-separated parts like arn:aws:iam::123456789012:role/name"
            ));
        }
        if !s.split(':').nth(5).is_some_and(|r| r.starts_with("role/")) {
            return Err(format!(
                "{s:?} must name roles (its last part starts with \"role/\")"
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || !c.is_ascii()) {
            return Err(format!("{s:?} contains whitespace or non-ASCII characters"));
        }
        Ok(Self(s.to_string()))
    }

    /// Whether `arn` matches, with `*` confined to one segment.
    pub fn matches(&self, arn: &RoleArn) -> bool {
        glob_match(self.0.as_bytes(), arn.as_str().as_bytes())
    }
}

impl fmt::Display for ArnGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Glob match where `*` matches any run of bytes other than `:` and `/`. Iterative with one
/// backtrack point per star, linear in practice, no recursion for hostile inputs to exploit.
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            if text[st] == b':' || text[st] == b'/' {
                return false;
            }
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// The operator's role rules.
#[derive(Debug, Clone)]
pub struct RolePolicy {
    /// `None`: any role (only with `--allow-any-role`).
    allow: Option<Vec<ArnGlob>>,
    /// Account for role names given without an ARN.
    default_account: Option<String>,
}

impl RolePolicy {
    pub fn new(allow: Option<Vec<ArnGlob>>, default_account: Option<String>) -> Self {
        Self {
            allow,
            default_account,
        }
    }

    /// The role for this token: the requested one if the token grants it, else the first granted.
    pub fn resolve(&self, claims: &Claims, requested: Option<&str>) -> Result<RoleArn, RoleError> {
        let granted = self.granted(claims)?;
        let chosen = match requested.map(str::trim).filter(|r| !r.is_empty()) {
            Some(req) => {
                let req = RoleArn::parse(req).ok_or(RoleError::InvalidRequested)?;
                granted
                    .into_iter()
                    .find(|g| *g == req)
                    .ok_or(RoleError::NotGranted)?
            }
            None => granted.into_iter().next().ok_or(RoleError::NoneGranted)?,
        };
        self.check_allowed(&chosen)?;
        Ok(chosen)
    }

    /// Every role the token grants, as ARNs; one malformed entry spoils the token's roles.
    fn granted(&self, claims: &Claims) -> Result<Vec<RoleArn>, RoleError> {
        if claims.roles.is_empty() {
            return Err(RoleError::NoneGranted);
        }
        claims
            .roles
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if r.starts_with("arn:") {
                    return RoleArn::parse(r).ok_or(RoleError::InvalidGranted(i));
                }
                if r.is_empty() || r.len() > 64 || !r.chars().all(is_iam_name_char) {
                    return Err(RoleError::InvalidGranted(i));
                }
                let account = self
                    .default_account
                    .as_ref()
                    .ok_or(RoleError::NoAccountForName)?;
                RoleArn::parse(&format!("arn:aws:iam::{account}:role/{r}"))
                    .ok_or(RoleError::InvalidGranted(i))
            })
            .collect()
    }

    fn check_allowed(&self, arn: &RoleArn) -> Result<(), RoleError> {
        match &self.allow {
            None => Ok(()),
            Some(globs) if globs.iter().any(|g| g.matches(arn)) => Ok(()),
            Some(_) => Err(RoleError::NotAllowed(arn.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const RW: &str = "arn:aws:iam::123456789012:role/demo-read-write";

    fn claims(roles: &[&str]) -> Claims {
        Claims {
            subject: "alice".into(),
            issuer: String::new(),
            expires_at: 0,
            roles: roles.iter().map(|s| s.to_string()).collect(),
            buckets: None,
            tag_values: BTreeMap::new(),
        }
    }

    fn policy() -> RolePolicy {
        RolePolicy::new(
            Some(vec![
                ArnGlob::parse("arn:aws:iam::123456789012:role/demo-*").unwrap(),
            ]),
            Some("123456789012".into()),
        )
    }

    #[test]
    fn glob_star_stays_in_one_segment() {
        let g = ArnGlob::parse("arn:aws:iam::123456789012:role/demo-*").unwrap();
        assert!(g.matches(&RoleArn::parse(RW).unwrap()));
        assert!(
            !g.matches(&RoleArn::parse("arn:aws:iam::123456789012:role/demo-x/admin").unwrap())
        );
        let any_account = ArnGlob::parse("arn:aws:iam::*:role/app").unwrap();
        assert!(
            any_account.matches(&RoleArn::parse("arn:aws:iam::999999999999:role/app").unwrap())
        );
        assert!(
            !any_account.matches(&RoleArn::parse("arn:aws:iam::999999999999:role/x/app").unwrap())
        );
    }

    #[test]
    fn glob_must_be_an_arn() {
        assert!(ArnGlob::parse("*").is_err());
        assert!(ArnGlob::parse("arn:aws:iam::1:role").is_err());
        assert!(ArnGlob::parse("arn:aws:iam::123456789012:role/a b").is_err());
    }

    #[test]
    fn first_granted_role_is_default() {
        assert_eq!(policy().resolve(&claims(&[RW]), None).unwrap().as_str(), RW);
    }

    #[test]
    fn role_names_become_arns_in_the_configured_account() {
        let r = policy()
            .resolve(&claims(&["demo-read-only"]), None)
            .unwrap();
        assert_eq!(r.as_str(), "arn:aws:iam::123456789012:role/demo-read-only");
        let no_account = RolePolicy::new(None, None);
        assert_eq!(
            no_account.resolve(&claims(&["demo-read-only"]), None),
            Err(RoleError::NoAccountForName)
        );
    }

    #[test]
    fn requested_role_must_be_granted() {
        let ro = "arn:aws:iam::123456789012:role/demo-read-only";
        assert_eq!(
            policy()
                .resolve(&claims(&[RW, ro]), Some(ro))
                .unwrap()
                .as_str(),
            ro
        );
        assert_eq!(
            policy().resolve(&claims(&[RW]), Some(ro)),
            Err(RoleError::NotGranted)
        );
        assert_eq!(
            policy().resolve(&claims(&[RW]), Some("*")),
            Err(RoleError::InvalidRequested)
        );
    }

    #[test]
    fn allowlist_refuses_other_accounts_partitions_and_roles() {
        for arn in [
            "arn:aws:iam::999999999999:role/demo-read-write",
            "arn:aws-cn:iam::123456789012:role/demo-read-write",
            "arn:aws:iam::123456789012:role/admin",
        ] {
            assert!(
                matches!(
                    policy().resolve(&claims(&[arn]), None),
                    Err(RoleError::NotAllowed(_))
                ),
                "{arn}"
            );
        }
    }

    #[test]
    fn arn_tricks_are_invalid() {
        for arn in [
            "*",
            "arn:aws:iam::123456789012:role/*",
            "arn:aws:iam::123456789012:role/demo-read-write ",
            " arn:aws:iam::123456789012:role/demo-read-write",
            "arn:aws:iam::123456789012:role/demo-read-writ\u{0435}",
            "arn:aws:iam::12345678901:role/demo",
            "arn:aws:sts::123456789012:role/demo",
            "arn:aws:iam:us-east-1:123456789012:role/demo",
            "arn:aws:iam::123456789012:user/demo",
            "arn:aws:iam::123456789012:role//demo",
            "arn:aws:iam::123456789012:role/demo:x",
        ] {
            assert!(
                matches!(
                    policy().resolve(&claims(&[arn]), None),
                    Err(RoleError::InvalidGranted(0))
                ),
                "{arn:?}"
            );
        }
    }

    #[test]
    fn no_roles_is_refused() {
        assert_eq!(
            policy().resolve(&claims(&[]), None),
            Err(RoleError::NoneGranted)
        );
    }

    #[test]
    fn any_role_mode_still_needs_valid_arns() {
        let any = RolePolicy::new(None, None);
        assert!(
            any.resolve(&claims(&["arn:aws:iam::999999999999:role/x"]), None)
                .is_ok()
        );
        assert!(
            any.resolve(&claims(&["arn:aws:iam::999999999999:role/*"]), None)
                .is_err()
        );
    }
}
