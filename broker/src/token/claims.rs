//! Typed claims: what the broker reads from a token after its signature and time checks passed.
//!
//! Each check is a small pure function whose error names the claim and the reason, in the manner
//! of `claim "sub" must be a string`, so an operator reading a refusal knows what to fix.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Longest `sub` accepted. Identity providers use UUIDs, emails or `provider|id`; 128 leaves room
/// and keeps a hostile 500-character subject out of logs, tags and session names.
pub const MAX_SUBJECT_LEN: usize = 128;

/// Claims exactly as they arrive, before any interpretation. Known claims are kept as raw JSON so
/// that a wrong type is reported as such instead of as an opaque decoding error; a claim given
/// twice is refused by serde (`duplicate field`).
#[derive(Debug, Deserialize)]
pub(crate) struct RawClaims {
    sub: Option<Value>,
    iss: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    role_arn: Option<Value>,
    roles: Option<Value>,
    buckets: Option<Value>,
    #[serde(flatten)]
    other: UniqueMap,
}

/// The remaining claims, refusing a name given twice (a plain map would keep the last value, so
/// `{"team":"a","team":"admin"}` could smuggle a second tag value past a reviewer's eye).
#[derive(Debug, Default)]
struct UniqueMap(BTreeMap<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{}`",
                            k.chars().take(32).collect::<String>()
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Latest `exp` or `nbf` accepted, seconds since the epoch: the largest value whose milliseconds
/// still fit an `i64` (sessions and their store TTLs are computed in milliseconds). A larger value
/// is refused as invalid rather than wrapped or saturated into something else.
pub const MAX_TIME_CLAIM_SECS: i64 = i64::MAX / 1000;

/// Claims the broker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: who the credentials are for.
    pub subject: String,
    /// `iss`: empty when the token has none (only allowed when no issuer is configured).
    pub issuer: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// Roles the token grants: `role_arn` first, then `roles`, as written (names or ARNs).
    pub roles: Vec<String>,
    /// `buckets`, when present: the credentials are limited to these.
    pub buckets: Option<Vec<String>>,
    /// Values of the claims configured as session tags (`BROKER_TAG_CLAIMS`), by claim name.
    pub tag_values: BTreeMap<String, String>,
}

/// Why a claim was refused. Never contains the token; claim values are not echoed either,
/// since a hostile token could put anything there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("claim \"{0}\" is required")]
    Missing(&'static str),
    #[error("claim \"{claim}\" must be {expected}")]
    WrongType {
        claim: String,
        expected: &'static str,
    },
    #[error("claim \"sub\" is empty")]
    EmptySubject,
    #[error("claim \"sub\" is longer than {MAX_SUBJECT_LEN} characters")]
    SubjectTooLong,
    #[error("claim \"sub\" contains a character outside letters, digits and + = , . @ _ | : -")]
    SubjectCharacters,
    #[error("claim \"{0}\" has too many entries (at most 64)")]
    TooMany(&'static str),
    #[error("claim \"{claim}\" cannot be a session tag: {reason}")]
    NotTaggable { claim: String, reason: &'static str },
    #[error(
        "claim \"{0}\" is out of range: a time in seconds since 1970 that fits in milliseconds"
    )]
    OutOfRange(&'static str),
}

impl RawClaims {
    /// `nbf`, seconds since the epoch, when the token has one: the validator judges it against
    /// the broker's injected clock (as it does `exp`), not the library against the system's.
    pub(crate) fn not_before(&self) -> Result<Option<i64>, ClaimError> {
        self.nbf
            .clone()
            .filter(|v| !v.is_null())
            .map(|nbf| time_claim("nbf", nbf))
            .transpose()
    }

    /// Interprets the raw claims; `tag_claims` names the claims that become session tags.
    pub(crate) fn into_claims(self, tag_claims: &[String]) -> Result<Claims, ClaimError> {
        let subject = subject(self.sub)?;
        let issuer = optional_string("iss", self.iss)?.unwrap_or_default();
        let expires_at = expiry(self.exp)?;
        if let Some(nbf) = self.nbf.filter(|v| !v.is_null()) {
            time_claim("nbf", nbf)?;
        }
        let mut roles = Vec::new();
        if let Some(arn) = optional_string("role_arn", self.role_arn)? {
            roles.push(arn);
        }
        if let Some(list) = string_list("roles", self.roles)? {
            roles.extend(list);
        }
        let buckets = string_list("buckets", self.buckets)?;
        let tag_values = tag_values(&self.other.0, tag_claims)?;
        Ok(Claims {
            subject,
            issuer,
            expires_at,
            roles,
            buckets,
            tag_values,
        })
    }
}

/// `sub` must be a non-empty string of at most [`MAX_SUBJECT_LEN`] characters from a safe set:
/// it becomes part of log lines, the STS session name and the source identity.
fn subject(value: Option<Value>) -> Result<String, ClaimError> {
    let sub = optional_string("sub", value)?.ok_or(ClaimError::Missing("sub"))?;
    check_subject(&sub)?;
    Ok(sub)
}

/// The pure rule behind [`subject`], shared with the token minting tool.
pub fn check_subject(sub: &str) -> Result<(), ClaimError> {
    if sub.is_empty() {
        return Err(ClaimError::EmptySubject);
    }
    if sub.chars().count() > MAX_SUBJECT_LEN {
        return Err(ClaimError::SubjectTooLong);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_|:-".contains(c);
    if !sub.chars().all(allowed) {
        return Err(ClaimError::SubjectCharacters);
    }
    Ok(())
}

/// `exp` is required and must be a time the broker can compute with.
fn expiry(value: Option<Value>) -> Result<i64, ClaimError> {
    time_claim("exp", value.ok_or(ClaimError::Missing("exp"))?)
}

/// A NumericDate claim (`exp`, `nbf`): a number of seconds between 0 and
/// [`MAX_TIME_CLAIM_SECS`]. Fractions are cut; anything outside the range — `1e300`, `2^63` — is
/// refused, never saturated or wrapped into another time.
pub(crate) fn time_claim(claim: &'static str, value: Value) -> Result<i64, ClaimError> {
    let Value::Number(n) = value else {
        return Err(ClaimError::WrongType {
            claim: claim.into(),
            expected: "a number of seconds",
        });
    };
    let secs = match n.as_i64() {
        Some(i) => i,
        None => match n.as_f64() {
            Some(f) if f.is_finite() && (0.0..=MAX_TIME_CLAIM_SECS as f64).contains(&f) => f as i64,
            _ => return Err(ClaimError::OutOfRange(claim)),
        },
    };
    if !(0..=MAX_TIME_CLAIM_SECS).contains(&secs) {
        return Err(ClaimError::OutOfRange(claim));
    }
    Ok(secs)
}

fn optional_string(
    claim: &'static str,
    value: Option<Value>,
) -> Result<Option<String>, ClaimError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ClaimError::WrongType {
            claim: claim.into(),
            expected: "a string",
        }),
    }
}

/// A list claim: an array of strings, or a single string (some providers flatten one-element
/// arrays). At most 64 entries, so a hostile token cannot make the broker build huge policies.
fn string_list(
    claim: &'static str,
    value: Option<Value>,
) -> Result<Option<Vec<String>>, ClaimError> {
    let wrong = || ClaimError::WrongType {
        claim: claim.into(),
        expected: "an array of strings",
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s])),
        Some(Value::Array(items)) => {
            if items.len() > 64 {
                return Err(ClaimError::TooMany(claim));
            }
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
        Some(_) => Err(wrong()),
    }
}

/// Values of the configured tag claims. Strings, numbers and booleans are taken as text; a
/// missing claim is simply not tagged; anything else is refused. Tag value rules (length,
/// characters) are STS's and are checked where the tags are built (`scope`).
fn tag_values(
    other: &BTreeMap<String, Value>,
    tag_claims: &[String],
) -> Result<BTreeMap<String, String>, ClaimError> {
    let mut out = BTreeMap::new();
    for name in tag_claims {
        let text = match other.get(name.as_str()) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => {
                return Err(ClaimError::WrongType {
                    claim: name.clone(),
                    expected: "a string, number or boolean (it becomes a session tag)",
                });
            }
        };
        out.insert(name.clone(), text);
    }
    Ok(out)
}

/// Claims the broker reads into [`Claims`] itself; they never reach the tag map, so naming one in
/// `BROKER_TAG_CLAIMS` would be silently ignored.
const READ_BY_THE_BROKER: [&str; 7] = ["sub", "iss", "exp", "nbf", "role_arn", "roles", "buckets"];

/// Can `name` (an entry of `BROKER_TAG_CLAIMS`) become a session tag? Checked at start, so a claim
/// the broker cannot tag stops the broker instead of being ignored, or failing every request.
pub fn check_tag_claim(name: &str) -> Result<(), ClaimError> {
    let refuse = |reason| {
        Err(ClaimError::NotTaggable {
            claim: name.chars().take(64).collect(),
            reason,
        })
    };
    if READ_BY_THE_BROKER.contains(&name) {
        return refuse(
            "the broker reads it itself (the subject is the SourceIdentity; iss, exp, nbf, role_arn, roles and buckets scope the credential)",
        );
    }
    let tag_char = |c: char| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c);
    if !(1..=128).contains(&name.chars().count()) || !name.chars().all(tag_char) {
        return refuse("STS tag keys are 1-128 letters, digits, spaces and _ . : / = + - @");
    }
    if name.to_ascii_lowercase().starts_with("aws:") {
        return refuse("the aws: prefix is reserved by AWS");
    }
    Ok(())
}

impl fmt::Display for Claims {
    /// A log-safe summary: subject and issuer only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub={} iss={}", self.subject, self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Claims, ClaimError> {
        let raw: RawClaims = serde_json::from_value(v).expect("raw claims parse");
        raw.into_claims(&["team".to_string()])
    }

    #[test]
    fn reads_subject_roles_buckets_and_tags() {
        let c = parse(json!({"sub":"alice@example.com","iss":"https://idp","exp":2000000000,
            "role_arn":"arn:aws:iam::123456789012:role/a","roles":["b"],"buckets":["x"],"team":"sales"}))
        .unwrap();
        assert_eq!(c.subject, "alice@example.com");
        assert_eq!(c.issuer, "https://idp");
        assert_eq!(c.roles, vec!["arn:aws:iam::123456789012:role/a", "b"]);
        assert_eq!(c.buckets, Some(vec!["x".to_string()]));
        assert_eq!(c.tag_values.get("team").map(String::as_str), Some("sales"));
    }

    #[test]
    fn missing_sub_is_named() {
        let e = parse(json!({"exp":2000000000})).unwrap_err();
        assert_eq!(e.to_string(), "claim \"sub\" is required");
    }

    #[test]
    fn non_string_sub_is_named() {
        let e = parse(json!({"sub":42,"exp":2000000000})).unwrap_err();
        assert_eq!(e.to_string(), "claim \"sub\" must be a string");
    }

    #[test]
    fn sub_with_path_characters_is_refused() {
        for sub in [
            "../../etc/passwd",
            "alice bob",
            "a/b",
            "ä",
            "a\u{0}b",
            "x\"y",
        ] {
            assert_eq!(
                parse(json!({"sub":sub,"exp":2000000000})).unwrap_err(),
                ClaimError::SubjectCharacters,
                "{sub:?}"
            );
        }
    }

    #[test]
    fn long_sub_is_refused() {
        let sub = "a".repeat(500);
        assert_eq!(
            parse(json!({"sub":sub,"exp":2000000000})).unwrap_err(),
            ClaimError::SubjectTooLong
        );
    }

    #[test]
    fn common_idp_subjects_pass() {
        for sub in [
            "auth0|5f7c8ec7c33c6c004bbafe82",
            "110169484474386276334",
            "a.b@c.io",
            "x:y",
        ] {
            assert!(check_subject(sub).is_ok(), "{sub}");
        }
    }

    #[test]
    fn roles_must_be_strings() {
        let e = parse(json!({"sub":"a","exp":1,"roles":[1]})).unwrap_err();
        assert_eq!(e.to_string(), "claim \"roles\" must be an array of strings");
    }

    #[test]
    fn duplicate_claims_are_refused() {
        let r: Result<RawClaims, _> =
            serde_json::from_str(r#"{"sub":"alice","sub":"admin","exp":1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn duplicate_unknown_claims_are_refused_too() {
        let r: Result<RawClaims, _> =
            serde_json::from_str(r#"{"sub":"alice","exp":1,"team":"a","team":"admin"}"#);
        assert!(r.unwrap_err().to_string().contains("duplicate field"));
    }

    #[test]
    fn too_many_buckets_are_refused() {
        let many: Vec<String> = (0..65).map(|i| format!("b{i}")).collect();
        let e = parse(json!({"sub":"a","exp":1,"buckets":many})).unwrap_err();
        assert_eq!(e, ClaimError::TooMany("buckets"));
    }

    #[test]
    fn exp_or_nbf_that_overflows_milliseconds_is_refused_not_wrapped() {
        for big in [
            json!(MAX_TIME_CLAIM_SECS + 1),
            json!(u64::MAX),
            json!(1e300),
            json!(9.3e15),
        ] {
            assert_eq!(
                parse(json!({"sub":"a","exp":big})).unwrap_err(),
                ClaimError::OutOfRange("exp"),
                "exp {big}"
            );
            assert_eq!(
                parse(json!({"sub":"a","exp":2000000000,"nbf":big})).unwrap_err(),
                ClaimError::OutOfRange("nbf"),
                "nbf {big}"
            );
        }
        let e = parse(json!({"sub":"a","exp":-1})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "claim \"exp\" is out of range: a time in seconds since 1970 that fits in milliseconds"
        );
        let c = parse(json!({"sub":"a","exp":MAX_TIME_CLAIM_SECS})).unwrap();
        assert!(c.expires_at.checked_mul(1000).is_some());
        assert_eq!(
            parse(json!({"sub":"a","exp":2000000000,"nbf":"soon"})).unwrap_err(),
            ClaimError::WrongType {
                claim: "nbf".into(),
                expected: "a number of seconds"
            }
        );
    }

    #[test]
    fn tag_claims_the_broker_cannot_tag_are_named() {
        for name in ["sub", "iss", "exp", "nbf", "role_arn", "roles", "buckets"] {
            let e = check_tag_claim(name).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("claim \"{name}\" cannot be a session tag: ")),
                "{e}"
            );
        }
        for name in ["", "a/b\"c", "aws:team", "AWS:x", &"t".repeat(129)] {
            assert!(check_tag_claim(name).is_err(), "{name:?}");
        }
        for name in ["team", "department", "cost-center", "org:unit"] {
            assert!(check_tag_claim(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn object_tag_claim_is_refused() {
        let e = parse(json!({"sub":"a","exp":1,"team":{"x":1}})).unwrap_err();
        assert!(e.to_string().starts_with("claim \"team\" must be"));
    }
}
