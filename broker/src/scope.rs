//! What exactly a credential may do and whom it names: session name, source identity, session
//! tags, the bucket session policy — and the credential key that holds every one of them.
//!
//! The key is what makes sharing safe: two requests share an STS credential only when every
//! scoping input is equal, so a token limited to fewer buckets never receives a wider credential
//! and one user never receives another's.

use crate::role::RoleArn;
use crate::token::Claims;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// STS's limit on the inline session policy, in characters.
pub const MAX_POLICY_CHARS: usize = 2048;
/// STS's limit on session tags per session.
pub const MAX_TAGS: usize = 50;

/// Why the token's scope cannot be honoured. Reported as PERMISSION_DENIED: the token is genuine
/// but asks for something the broker will not express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("claim \"buckets\" entry {0} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")]
    InvalidBucket(usize),
    #[error("claim \"buckets\" is empty: the token grants no bucket")]
    NoBuckets,
    #[error(
        "the bucket session policy would be {0} characters, over STS's limit of {MAX_POLICY_CHARS}; grant fewer buckets"
    )]
    PolicyTooLarge(usize),
    #[error(
        "claim \"{0}\" cannot be a session tag: tag keys are 1-128 and values 0-256 characters of letters, digits, spaces and _ . : / = + - @"
    )]
    InvalidTag(String),
    #[error("too many session tags ({0}); STS accepts at most {MAX_TAGS}")]
    TooManyTags(usize),
}

/// Everything that scopes one STS credential. Two equal scopes share one credential.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Scope {
    pub issuer: String,
    pub subject: String,
    pub role: String,
    pub source_identity: String,
    pub tags: BTreeMap<String, String>,
    /// Buckets the session policy limits the credential to (sorted, deduplicated); empty: none.
    pub buckets: Vec<String>,
    /// The inline session policy (compact JSON), when `buckets` is set.
    pub policy: Option<String>,
    pub duration_secs: i32,
    /// Web-identity mode: the fingerprint of the token STS reads (its tags, source identity and
    /// trust-policy conditions come from the token, not from this scope), so the credential
    /// belongs to that token alone. `None` (and absent from the canonical form) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_binding: Option<String>,
}

impl Scope {
    /// The scope for a validated token and its chosen role.
    pub fn build(claims: &Claims, role: &RoleArn, duration_secs: i32) -> Result<Self, ScopeError> {
        let buckets = match &claims.buckets {
            None => Vec::new(),
            Some(list) if list.is_empty() => return Err(ScopeError::NoBuckets),
            Some(list) => {
                for (i, b) in list.iter().enumerate() {
                    if !valid_bucket_name(b) {
                        return Err(ScopeError::InvalidBucket(i));
                    }
                }
                let mut v = list.clone();
                v.sort();
                v.dedup();
                v
            }
        };
        let policy = if buckets.is_empty() {
            None
        } else {
            Some(bucket_policy(role.partition(), &buckets)?)
        };
        let tags = session_tags(&claims.tag_values)?;
        Ok(Self {
            issuer: claims.issuer.clone(),
            subject: claims.subject.clone(),
            role: role.as_str().to_string(),
            source_identity: source_identity(&claims.subject),
            tags,
            buckets,
            policy,
            duration_secs,
            token_binding: None,
        })
    }

    /// Binds the scope to one token (web-identity mode): everything STS reads from the token
    /// becomes part of the credential key through the token's keyed fingerprint.
    pub fn bind_to_token(mut self, fingerprint: String) -> Self {
        self.token_binding = Some(fingerprint);
        self
    }

    /// Canonical bytes of every scoping input, the input of the credential id.
    #[allow(
        clippy::expect_used,
        reason = "a struct of strings, lists and maps with string keys always serialises"
    )]
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("scope serializes")
    }
}

/// S3 bucket naming rules, shared with the adapter (`credbroker_kit::s3`): 3–63 characters of
/// lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit, no `..`,
/// not an IP address. Anything else never reaches a policy.
pub use credbroker_kit::s3::valid_bucket_name;

/// The inline session policy limiting a credential to `buckets`: everything the role allows on
/// those buckets and their objects, nothing elsewhere. Built with serde, never by string
/// concatenation, and refused (not truncated) when over STS's size limit.
pub fn bucket_policy(partition: &str, buckets: &[String]) -> Result<String, ScopeError> {
    let resources: Vec<String> = buckets
        .iter()
        .flat_map(|b| {
            [
                format!("arn:{partition}:s3:::{b}"),
                format!("arn:{partition}:s3:::{b}/*"),
            ]
        })
        .collect();
    let doc = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "BrokerBucketScope",
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": resources,
        }]
    });
    let text = doc.to_string();
    if text.chars().count() > MAX_POLICY_CHARS {
        return Err(ScopeError::PolicyTooLarge(text.chars().count()));
    }
    Ok(text)
}

/// Characters STS accepts in tag keys and values.
fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

fn session_tags(values: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ScopeError> {
    if values.len() > MAX_TAGS {
        return Err(ScopeError::TooManyTags(values.len()));
    }
    for (k, v) in values {
        let key_ok = (1..=128).contains(&k.chars().count())
            && k.chars().all(is_tag_char)
            && !k.starts_with("aws:");
        let value_ok = v.chars().count() <= 256 && v.chars().all(is_tag_char);
        if !key_ok || !value_ok {
            return Err(ScopeError::InvalidTag(k.chars().take(64).collect()));
        }
    }
    Ok(values.clone())
}

/// Replaces characters outside STS's `[\w+=,.@-]` with `-`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Hex digits of the hash that marks an encoded source identity (64 bits of SHA-256).
const HASH_HEX: usize = 16;

fn short_hash(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    hex::encode(&d.as_ref()[..HASH_HEX / 2])
}

/// Does `s` end the way an encoded source identity ends: `-` and [`HASH_HEX`] lowercase hex?
fn looks_encoded(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > HASH_HEX
        && b[b.len() - HASH_HEX - 1] == b'-'
        && b[b.len() - HASH_HEX..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// `SourceIdentity` for a subject, injective so that two subjects never share an identity in
/// CloudTrail or in a policy's `sts:SourceIdentity` condition:
/// - the subject itself when STS accepts it as is (2–64 of `[\w+=,.@-]`) AND it does not end
///   like an encoded form;
/// - otherwise a sanitized, shortened head, `-`, and 16 hex digits of SHA-256 of the subject.
///
/// A literal answer never ends like an encoded one, and an encoded one always does, so a literal
/// subject cannot reach an encoded form (today's `auth0-abc-c5d09a77` against `auth0|abc`); two
/// encoded forms differ unless SHA-256 collides on its first 64 bits.
pub fn source_identity(subject: &str) -> String {
    let clean = sanitize(subject);
    if clean == subject && (2..=64).contains(&subject.len()) && !looks_encoded(subject) {
        return clean;
    }
    let hash = short_hash(subject);
    let head: String = clean.chars().take(64 - HASH_HEX - 1).collect();
    format!("{head}-{hash}")
}

/// `RoleSessionName` for a subject: sanitized subject, shortened to leave room for a short unique
/// suffix (each STS call gets its own, so CloudTrail can tell issuances apart), 2–64 characters.
pub fn role_session_name(subject: &str) -> String {
    let mut suffix = [0u8; 4];
    rand::fill(&mut suffix);
    let head: String = sanitize(subject).chars().take(64 - 9).collect();
    format!("{head}-{}", hex::encode(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_SUBJECT: usize = crate::token::MAX_SUBJECT_LEN;

    fn claims(sub: &str, buckets: Option<Vec<&str>>) -> Claims {
        Claims {
            subject: sub.into(),
            issuer: "iss".into(),
            expires_at: 0,
            roles: vec![],
            buckets: buckets.map(|b| b.into_iter().map(String::from).collect()),
            tag_values: BTreeMap::new(),
        }
    }

    fn role() -> RoleArn {
        RoleArn::parse("arn:aws:iam::123456789012:role/r").unwrap()
    }

    #[test]
    fn session_name_is_sanitized_and_bounded() {
        let n = role_session_name("auth0|abc");
        assert!(n.starts_with("auth0-abc-"), "{n}");
        assert!(n.len() <= 64 && n.len() >= 2);
        let long = role_session_name(&"x".repeat(128));
        assert_eq!(long.len(), 64);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        );
        assert_ne!(role_session_name("a"), role_session_name("a"));
        assert!(role_session_name("a").len() >= 2);
    }

    #[test]
    fn source_identity_keeps_clean_subjects_and_disambiguates_others() {
        assert_eq!(source_identity("alice@example.com"), "alice@example.com");
        let a = source_identity("auth0|abc");
        let b = source_identity("auth0-abc");
        assert_ne!(a, b);
        assert!(a.starts_with("auth0-abc-"));
        assert!(source_identity(&"y".repeat(128)).len() <= 64);
        assert_eq!(source_identity("a").len(), 1 + 1 + HASH_HEX);
    }

    #[test]
    fn a_literal_subject_never_takes_an_encoded_identity() {
        let encoded = source_identity("auth0|abc");
        // Today's collision: the literal subject that spells the encoded form.
        assert_ne!(source_identity(&encoded), encoded);
        assert_ne!(
            source_identity("auth0|abc"),
            source_identity("auth0-abc-c5d09a77")
        );
        // The old 8-hex form is a plain subject again.
        assert_eq!(source_identity("auth0-abc-c5d09a77"), "auth0-abc-c5d09a77");
        for id in [
            &encoded,
            &source_identity("x"),
            &source_identity(&"z".repeat(90)),
        ] {
            assert!((2..=64).contains(&id.len()), "{id}");
            assert!(looks_encoded(id), "{id}");
        }
    }

    #[test]
    fn source_identity_is_injective_over_hostile_subjects() {
        // Property test: subjects from an alphabet rich in separators and hex digits, plus every
        // encoded output fed back in as a literal subject; no two distinct subjects may share an
        // identity.
        let alphabet: Vec<char> = "ab09f-|:.@_+=,".chars().collect();
        let mut subjects = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let len = rand::random_range(1..=24);
            let s: String = (0..len)
                .map(|_| alphabet[rand::random_range(0..alphabet.len())])
                .collect();
            subjects.insert(s);
        }
        let fed_back: Vec<String> = subjects.iter().map(|s| source_identity(s)).collect();
        subjects.extend(fed_back.into_iter().filter(|s| s.len() <= MAX_SUBJECT));
        for len in [63, 64, 65, 100, 128] {
            subjects.insert("a".repeat(len));
            subjects.insert(format!("{}|", "a".repeat(len - 1)));
        }
        let mut seen = std::collections::HashMap::new();
        for s in &subjects {
            let id = source_identity(s);
            assert!((2..=64).contains(&id.len()), "{s:?} -> {id:?}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)),
                "{id}"
            );
            if let Some(other) = seen.insert(id.clone(), s.clone()) {
                panic!("{other:?} and {s:?} both map to {id:?}");
            }
        }
    }

    #[test]
    fn bucket_names_are_validated() {
        for ok in ["demo-bucket", "a.b.c", "abc", "0abc9"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "*",
            "demo*",
            "ab",
            "Demo",
            "a..b",
            "-ab",
            "ab-",
            "192.168.1.1",
            "a\"b",
            "x\",\"Resource\":\"*",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn policy_names_only_the_buckets() {
        let s = Scope::build(
            &claims("alice", Some(vec!["bk2", "bk1", "bk1"])),
            &role(),
            3600,
        )
        .unwrap();
        assert_eq!(s.buckets, vec!["bk1", "bk2"]);
        let p: serde_json::Value = serde_json::from_str(s.policy.as_ref().unwrap()).unwrap();
        assert_eq!(
            p["Statement"][0]["Resource"],
            serde_json::json!([
                "arn:aws:s3:::bk1",
                "arn:aws:s3:::bk1/*",
                "arn:aws:s3:::bk2",
                "arn:aws:s3:::bk2/*"
            ])
        );
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn breakout_attempts_never_reach_the_policy() {
        let e = Scope::build(
            &claims("a", Some(vec!["ok-bucket", "x\"],\"Resource\":[\"*"])),
            &role(),
            900,
        );
        assert_eq!(e, Err(ScopeError::InvalidBucket(1)));
        assert_eq!(
            Scope::build(&claims("a", Some(vec![])), &role(), 900),
            Err(ScopeError::NoBuckets)
        );
    }

    #[test]
    fn oversized_policy_is_an_error_not_a_truncation() {
        let names: Vec<String> = (0..40)
            .map(|i| format!("bucket-with-a-rather-long-name-{i:03}"))
            .collect();
        let e = bucket_policy("aws", &names).unwrap_err();
        assert!(matches!(e, ScopeError::PolicyTooLarge(n) if n > MAX_POLICY_CHARS));
    }

    #[test]
    fn credential_key_differs_for_every_scoping_input() {
        let base = Scope::build(&claims("alice", None), &role(), 3600).unwrap();
        let mut variants = vec![
            Scope::build(&claims("bob", None), &role(), 3600).unwrap(),
            Scope::build(&claims("alice", Some(vec!["bk1"])), &role(), 3600).unwrap(),
            Scope::build(
                &claims("alice", None),
                &RoleArn::parse("arn:aws:iam::123456789012:role/q").unwrap(),
                3600,
            )
            .unwrap(),
        ];
        let mut other_iss = claims("alice", None);
        other_iss.issuer = "other".into();
        variants.push(Scope::build(&other_iss, &role(), 3600).unwrap());
        let mut tagged = claims("alice", None);
        tagged.tag_values.insert("team".into(), "sales".into());
        variants.push(Scope::build(&tagged, &role(), 3600).unwrap());
        for v in variants {
            assert_ne!(base.canonical(), v.canonical());
        }
        assert_eq!(
            base.canonical(),
            Scope::build(&claims("alice", None), &role(), 3600)
                .unwrap()
                .canonical()
        );
    }

    #[test]
    fn a_token_bound_scope_has_its_own_credential_key() {
        let base = Scope::build(&claims("alice", None), &role(), 3600).unwrap();
        let one = base.clone().bind_to_token("fp-one".into());
        let two = base.clone().bind_to_token("fp-two".into());
        assert_ne!(one.canonical(), two.canonical());
        assert_ne!(one.canonical(), base.canonical());
        // Unbound scopes keep the canonical form (and so the credential ids) they had.
        assert!(
            !String::from_utf8(base.canonical())
                .unwrap()
                .contains("token_binding")
        );
    }

    #[test]
    fn invalid_tags_are_refused() {
        let mut c = claims("a", None);
        c.tag_values.insert("team".into(), "x\ny".into());
        assert!(matches!(
            Scope::build(&c, &role(), 900),
            Err(ScopeError::InvalidTag(_))
        ));
    }
}
