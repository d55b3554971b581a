//! Fuzz properties shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer)
//! and by the bounded stable run in the default test suite (`tests/tests/hostile_fuzz.rs`).
//!
//! Each property takes arbitrary bytes, turns them into an input of the code under test (raw, or
//! through [`Gen`], a byte-driven generator biased towards hostile fragments: quotes, wildcards,
//! JSON punctuation, path characters, look-alike letters), runs the real code and panics when a
//! rule is broken. The rules are checked against small independent oracles written here from the
//! README, not by calling the code under test a second time.
//!
//! - [`token_claims`]: `TokenValidator::validate` → `RolePolicy::resolve` → `Scope::build`;
//! - [`session_policy`]: `Scope::build` / `bucket_policy` / `valid_bucket_name`;
//! - [`adapter_args`]: the adapter's `s3://` and key parsing (`credbroker_kit::s3`, which the
//!   adapter and the broker share).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use credential_broker::role::{ArnGlob, RoleArn, RolePolicy};
use credential_broker::scope::{
    MAX_POLICY_CHARS, Scope, ScopeError, bucket_policy, valid_bucket_name,
};
use credential_broker::secret::Secret;
use credential_broker::token::{Claims, TokenValidator, ValidatorConfig};
use serde_json::{Value, json};

use credbroker_kit::s3 as adapter_s3;

pub const SECRET: &str = "fuzz-secret-that-is-at-least-32-bytes-long";
pub const ISSUER: &str = "https://auth.fuzz.test/";
pub const AUDIENCE: &str = "credential-broker";
pub const ACCOUNT: &str = "123456789012";
pub const ALLOW_GLOB: &str = "arn:aws:iam::123456789012:role/demo-*";
const LEEWAY: i64 = 60;
/// Known broker bug (tests/src/hostile.rs `KNOWN_BUGS`): a tag claim given twice is accepted.
/// While it is open the generator does not duplicate tag claims, so the bounded run in the
/// default suite stays deterministic; set to `true` once the broker refuses them.
const DUPLICATE_TAG_CLAIMS_REFUSED: bool = true;

/// How often each interesting path was reached, so a run can show it was not vacuous:
/// tokens accepted, roles resolved, scopes built, bucket policies checked, object URIs accepted.
pub static ACCEPTED_TOKENS: AtomicUsize = AtomicUsize::new(0);
pub static RESOLVED_ROLES: AtomicUsize = AtomicUsize::new(0);
pub static BUILT_SCOPES: AtomicUsize = AtomicUsize::new(0);
pub static CHECKED_POLICIES: AtomicUsize = AtomicUsize::new(0);
pub static ACCEPTED_URIS: AtomicUsize = AtomicUsize::new(0);

fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The counters above as `name=value` pairs.
pub fn stats() -> String {
    [
        ("accepted_tokens", &ACCEPTED_TOKENS),
        ("resolved_roles", &RESOLVED_ROLES),
        ("built_scopes", &BUILT_SCOPES),
        ("checked_policies", &CHECKED_POLICIES),
        ("accepted_uris", &ACCEPTED_URIS),
    ]
    .iter()
    .map(|(name, c)| format!("{name}={}", c.load(Ordering::Relaxed)))
    .collect::<Vec<_>>()
    .join(" ")
}

// ---------------------------------------------------------------------------------------------
// A byte-driven generator.

/// Hostile and ordinary fragments strings are built from.
const FRAGMENTS: &[&str] = &[
    "demo-bucket",
    "other-bucket",
    "a",
    "z",
    "0",
    "9",
    "-",
    ".",
    "..",
    "/",
    "*",
    "?",
    "\"",
    "\\",
    "'",
    "]",
    "[",
    "}",
    "{",
    ",",
    ":",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\u{0}",
    "\u{7f}",
    "%2e",
    "%2f",
    "arn:",
    "aws",
    "aws-cn",
    "aws-us-gov",
    "iam",
    "s3",
    "role/",
    "user/",
    "demo-read-write",
    "ops-admin",
    "123456789012",
    "999999999999",
    "arn:aws:iam::123456789012:role/",
    "arn:aws:s3:::",
    "s3://",
    "s3:/",
    "S3://",
    "xn--",
    "-s3alias",
    "192.168.1.1",
    "10.0.0.1",
    "01.2.3.4",
    "é",
    "\u{0456}",
    "\u{ff1a}",
    "\u{2215}",
    "\u{200b}",
    "\u{feff}",
    "𝒂",
    "Ⅰ",
    "\"],\"Resource\":[\"*",
    "\"}]},{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}",
    "${aws:username}",
    "alice",
    "alice@example.com",
    "auth0|123",
    "../../etc/passwd",
    "|",
    "@",
    "+",
    "=",
    "_",
];

/// Reads choices from fuzz bytes; yields zeros when they run out (so every input is finite).
pub struct Gen<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Gen<'a> {
    pub fn new(data: &'a [u8]) -> Gen<'a> {
        Gen { data, pos: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        let v = (self.byte() as usize) << 8 | self.byte() as usize;
        v % n.max(1)
    }

    pub fn chance(&mut self, in_256: u8) -> bool {
        self.byte() < in_256
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A string of up to `parts` pieces: fragments, random lowercase runs, raw chars.
    pub fn string(&mut self, parts: usize) -> String {
        let n = self.below(parts + 1);
        let mut s = String::new();
        for _ in 0..n {
            match self.byte() % 4 {
                0 | 1 => s.push_str(self.pick(FRAGMENTS)),
                2 => {
                    let len = 1 + self.below(20);
                    for _ in 0..len {
                        let c = self.pick(b"abcdefghijklmnopqrstuvwxyz0123456789.-");
                        s.push(c as char);
                    }
                }
                _ => {
                    let c = char::from_u32(self.below(0x3000) as u32).unwrap_or('x');
                    s.push(c);
                }
            }
        }
        s
    }

    /// Mostly well-formed bucket names (so the size limit and dedup paths are reached), sometimes
    /// hostile strings.
    pub fn bucket(&mut self) -> String {
        if self.chance(200) {
            let len = 1 + self.below(70);
            let mut s = String::new();
            for i in 0..len {
                let alphabet: &[u8] = if i == 0 || i + 1 == len {
                    b"abcdefghijklmnopqrstuvwxyz0123456789"
                } else {
                    b"abcdefghijklmnopqrstuvwxyz0123456789.-"
                };
                s.push(self.pick(alphabet) as char);
            }
            s
        } else {
            self.string(4)
        }
    }

    /// A role ARN-ish string: usually the allowed shape with one twist.
    pub fn role(&mut self) -> String {
        match self.byte() % 8 {
            0 => format!("arn:aws:iam::{ACCOUNT}:role/demo-{}", self.string(2)),
            1 | 6 => format!("arn:aws:iam::{ACCOUNT}:role/demo-read-write"),
            7 => self
                .pick(&["demo-read-only", "demo-read-write", "ops-admin", "demo-"])
                .to_string(),
            2 => format!(
                "arn:{}:iam::{}:role/{}",
                self.string(1),
                self.string(1),
                self.string(3)
            ),
            3 => self.string(2),
            4 => format!("demo-{}", self.string(1)),
            _ => format!(
                "arn:aws:iam::{ACCOUNT}:role/{}/{}",
                self.string(1),
                self.string(1)
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Oracles, written from the README's rules.

/// `sub`: 1–128 characters of letters, digits and `+ = , . @ _ | : -` (ASCII letters/digits).
pub fn oracle_subject(s: &str) -> bool {
    let n = s.chars().count();
    (1..=128).contains(&n)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_|:-".contains(c))
}

/// S3 bucket names as the broker documents them: 3–63 of `a-z 0-9 . -`, starting and ending with
/// a letter or digit, no `..`, not formatted as an IPv4 address.
pub fn oracle_bucket(b: &str, ip_rule: bool) -> bool {
    let len = b.len();
    if !(3..=63).contains(&len) {
        return false;
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !b.chars().all(allowed) || !edge(b.chars().next()) || !edge(b.chars().last()) {
        return false;
    }
    if b.contains("..") {
        return false;
    }
    if ip_rule {
        // A dotted-quad IPv4 address: four decimal octets 0-255 without leading zeros.
        let octet = |p: &str| {
            (1..=3).contains(&p.len())
                && p.chars().all(|c| c.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'))
                && p.parse::<u16>().is_ok_and(|v| v <= 255)
        };
        let parts: Vec<&str> = b.split('.').collect();
        if parts.len() == 4 && parts.iter().all(|p| octet(p)) {
            return false;
        }
    }
    true
}

/// IAM name characters.
fn iam_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

/// A role the allowlist `arn:aws:iam::123456789012:role/demo-*` may let through: exactly that
/// prefix followed by IAM name characters only (no further `/` or `:`).
pub fn oracle_allowed_role(arn: &str) -> bool {
    arn.strip_prefix("arn:aws:iam::123456789012:role/demo-")
        .is_some_and(|rest| rest.chars().all(iam_char) && arn.len() <= 600)
}

/// Checks a bucket session policy: JSON, one Allow statement on `s3:*`, resources exactly the
/// buckets and their objects in `partition`, at most 2048 characters.
pub fn check_policy(policy: &str, partition: &str, buckets: &[String]) {
    bump(&CHECKED_POLICIES);
    assert!(
        policy.chars().count() <= MAX_POLICY_CHARS,
        "policy over {MAX_POLICY_CHARS} characters: {}",
        policy.chars().count()
    );
    let doc: Value = serde_json::from_str(policy).expect("the policy is JSON");
    let statements = doc["Statement"].as_array().expect("Statement is a list");
    assert_eq!(statements.len(), 1, "exactly one statement: {policy}");
    let st = &statements[0];
    assert_eq!(st["Effect"], "Allow");
    assert_eq!(st["Action"], "s3:*");
    let resources: Vec<&str> = st["Resource"]
        .as_array()
        .expect("Resource is a list")
        .iter()
        .map(|r| r.as_str().expect("resource is a string"))
        .collect();
    let expected: Vec<String> = buckets
        .iter()
        .flat_map(|b| {
            [
                format!("arn:{partition}:s3:::{b}"),
                format!("arn:{partition}:s3:::{b}/*"),
            ]
        })
        .collect();
    assert_eq!(resources, expected, "resources are exactly the buckets");
    assert_eq!(
        doc.as_object().map(|o| o.len()),
        Some(2),
        "only Version and Statement: {policy}"
    );
}

// ---------------------------------------------------------------------------------------------
// token parsing and claim mapping

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn validator() -> &'static TokenValidator {
    static V: OnceLock<TokenValidator> = OnceLock::new();
    V.get_or_init(|| {
        TokenValidator::new(
            ValidatorConfig {
                algorithms: vec![
                    jsonwebtoken::Algorithm::HS256,
                    jsonwebtoken::Algorithm::RS256,
                ],
                issuers: vec![ISSUER.into()],
                audiences: vec![AUDIENCE.into()],
                leeway_secs: LEEWAY as u64,
                tag_claims: vec!["team".into()],
                types: vec![],
            },
            Some(&Secret::new(SECRET)),
            None,
        )
    })
}

fn role_policy() -> &'static RolePolicy {
    static P: OnceLock<RolePolicy> = OnceLock::new();
    P.get_or_init(|| {
        RolePolicy::new(
            Some(vec![ArnGlob::parse(ALLOW_GLOB).expect("glob")]),
            Some(ACCOUNT.into()),
        )
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn hs256(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", B64.encode(tag.as_ref()))
}

/// What the generator decided about a token, to judge the validator's answer.
struct Intent {
    genuine: bool,
    alg_hs256: bool,
    duplicate: bool,
    exp: Option<Value>,
    nbf: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
}

fn gen_value(g: &mut Gen<'_>, typical: Value) -> Option<Value> {
    match g.byte() % 16 {
        0 => None,
        1 => Some(Value::Null),
        2 => Some(json!(g.string(3))),
        3 => Some(json!(g.below(1 << 16) as i64 - 30000)),
        4 => Some(json!([g.string(2), g.string(2)])),
        5 => Some(json!({"x": g.string(1)})),
        _ => Some(typical),
    }
}

/// Token parsing and claim mapping. With the first byte even, the rest of the input is a raw
/// token; otherwise a claim set is generated and signed (mostly with the right secret). Rules:
/// - nothing panics; an error never quotes the token or its signature;
/// - a token is accepted only when it is HS256, signed with the secret, has no duplicate claim,
///   `exp` is a number not past (with leeway), `nbf` not in the future, `iss` and `aud` are ours,
///   and `sub` follows the subject rule;
/// - a resolved role is in the allowlist and granted by the token; a built scope names the
///   token's subject, a source identity STS accepts and a valid bucket policy.
pub fn token_claims(data: &[u8]) {
    let mut g = Gen::new(data);
    let raw_mode = g.byte().is_multiple_of(2);
    let (token, intent) = if raw_mode {
        let rest = &data[1.min(data.len())..];
        (String::from_utf8_lossy(rest).into_owned(), None)
    } else {
        let now = now();
        let mut members: Vec<(String, Value)> = Vec::new();
        let typical_sub = json!(g.pick(&["alice", "bob@example.com", "auth0|1"]));
        if let Some(v) = gen_value(&mut g, typical_sub) {
            members.push(("sub".into(), v));
        }
        let typical_exp = json!(now + 600 - g.below(1200) as i64);
        let exp = gen_value(&mut g, typical_exp);
        let nbf = if g.chance(40) {
            let typical_nbf = json!(now + 300 - g.below(600) as i64);
            gen_value(&mut g, typical_nbf)
        } else {
            None
        };
        let iss = gen_value(&mut g, json!(ISSUER));
        let aud = gen_value(&mut g, json!(AUDIENCE));
        for (k, v) in [("exp", &exp), ("nbf", &nbf), ("iss", &iss), ("aud", &aud)] {
            if let Some(v) = v {
                members.push((k.into(), v.clone()));
            }
        }
        if g.chance(200) {
            members.push(("role_arn".into(), json!(g.role())));
        }
        if g.chance(60) {
            let n = g.below(4);
            let roles: Vec<String> = (0..n).map(|_| g.role()).collect();
            members.push(("roles".into(), json!(roles)));
        }
        if g.chance(100) {
            let n = g.below(6);
            let buckets: Vec<String> = (0..n).map(|_| g.bucket()).collect();
            members.push(("buckets".into(), json!(buckets)));
        }
        if g.chance(60) {
            let typical_team = json!(g.string(2));
            if let Some(v) = gen_value(&mut g, typical_team) {
                members.push(("team".into(), v));
            }
        }
        let mut duplicate = g.chance(30) && !members.is_empty();
        if duplicate {
            let i = g.below(members.len());
            let (k, _) = members[i].clone();
            if k == "team" && !DUPLICATE_TAG_CLAIMS_REFUSED {
                duplicate = false;
            } else {
                members.push((k, json!(g.string(2))));
            }
        }
        let payload = format!(
            "{{{}}}",
            members
                .iter()
                .map(|(k, v)| format!("{}:{}", json!(k), v))
                .collect::<Vec<_>>()
                .join(",")
        );
        let alg = g.pick(&[
            "HS256", "HS256", "HS256", "HS256", "HS256", "HS256", "HS384", "none", "RS256", "None",
            "hs256", "ES256",
        ]);
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        let genuine = g.chance(220);
        let secret: &[u8] = if genuine {
            SECRET.as_bytes()
        } else {
            b"not-the-secret"
        };
        (
            hs256(&header, &payload, secret),
            Some(Intent {
                genuine,
                alg_hs256: alg == "HS256",
                duplicate,
                exp,
                nbf,
                iss,
                aud,
            }),
        )
    };

    let secret = Secret::new(token.clone());
    let result = runtime().block_on(validator().validate(&secret));
    match result {
        Err(e) => {
            let msg = e.to_string();
            if token.len() >= 8 {
                assert!(!msg.contains(&token), "error echoes the token: {msg}");
            }
            if let Some((_, sig)) = token.rsplit_once('.')
                && sig.len() >= 16
            {
                assert!(!msg.contains(sig), "error echoes the signature: {msg}");
            }
        }
        Ok(claims) => check_accepted(&claims, intent.as_ref(), &token),
    }
}

fn check_accepted(claims: &Claims, intent: Option<&Intent>, token: &str) {
    let Some(intent) = intent else {
        panic!("a raw (unsigned by us) token was accepted: {token:?}");
    };
    bump(&ACCEPTED_TOKENS);
    assert!(
        intent.genuine,
        "a token signed with another secret was accepted"
    );
    assert!(
        intent.alg_hs256,
        "a token whose alg is not HS256 was accepted"
    );
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default();
    assert!(
        !intent.duplicate,
        "a token with a duplicate claim was accepted; payload {payload}"
    );
    let now = now();
    let exp = intent
        .exp
        .as_ref()
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("accepted without a numeric exp: {:?}", intent.exp));
    // No leeway on exp (issue 14: no credential past exp on any path); 10 s cover the time
    // between the validator's clock reading and this one on a loaded machine.
    assert!(
        exp + 10 >= now,
        "accepted an expired token (exp {exp}, now {now})"
    );
    if let Some(nbf) = intent.nbf.as_ref().and_then(Value::as_i64) {
        assert!(nbf - LEEWAY <= now, "accepted a token before its nbf");
    }
    assert_eq!(
        intent.iss.as_ref(),
        Some(&json!(ISSUER)),
        "accepted with iss {:?}",
        intent.iss
    );
    let aud_ok = match &intent.aud {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    assert!(aud_ok, "accepted with aud {:?}", intent.aud);
    assert!(
        oracle_subject(&claims.subject),
        "accepted subject breaks the rule: {:?}",
        claims.subject
    );
    assert_eq!(claims.issuer, ISSUER);

    // Claim mapping: role, then scope.
    if let Ok(role) = role_policy().resolve(claims, None) {
        bump(&RESOLVED_ROLES);
        assert!(
            oracle_allowed_role(role.as_str()),
            "resolved a role outside the allowlist: {role}"
        );
        let granted = claims.roles.iter().any(|r| {
            r == role.as_str() || format!("arn:aws:iam::{ACCOUNT}:role/{r}") == role.as_str()
        });
        assert!(
            granted,
            "resolved role {role} is not one the token grants: {:?}",
            claims.roles
        );
        check_scope(claims, &role);
    }
}

fn check_scope(claims: &Claims, role: &RoleArn) {
    match Scope::build(claims, role, 3600) {
        Ok(scope) => {
            bump(&BUILT_SCOPES);
            assert_eq!(scope.subject, claims.subject);
            assert_eq!(scope.role, role.as_str());
            let si = &scope.source_identity;
            assert!(
                si.len() <= 64
                    && !si.is_empty()
                    && si
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)),
                "source identity STS would refuse: {si:?}"
            );
            match (&claims.buckets, &scope.policy) {
                (None, None) => {}
                (Some(list), Some(policy)) => {
                    for b in list {
                        assert!(oracle_bucket(b, true), "accepted bucket {b:?}");
                    }
                    let mut sorted = list.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(scope.buckets, sorted);
                    check_policy(policy, role.partition(), &sorted);
                }
                other => panic!("buckets and policy disagree: {other:?}"),
            }
            for (k, v) in &scope.tags {
                let ok = |s: &str| {
                    s.chars()
                        .all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c))
                };
                assert!(
                    ok(k) && ok(v) && v.chars().count() <= 256,
                    "tag STS would refuse: {k:?}={v:?}"
                );
            }
        }
        Err(ScopeError::InvalidBucket(i)) => {
            let list = claims
                .buckets
                .as_ref()
                .expect("InvalidBucket without buckets");
            assert!(
                !oracle_bucket(&list[i], true),
                "refused valid bucket {:?}",
                list[i]
            );
        }
        Err(ScopeError::NoBuckets) => {
            assert_eq!(claims.buckets.as_ref().map(Vec::len), Some(0));
        }
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// session policy generation

/// Session-policy generation. Rules:
/// - `valid_bucket_name` agrees with the documented rule (differential against the oracle);
/// - `Scope::build` accepts a bucket list only when every entry is valid, and then its policy is
///   JSON naming exactly `arn:<partition>:s3:::<bucket>` and `…/*` for the sorted, deduplicated
///   list, at most 2048 characters — or it is refused with `PolicyTooLarge`, never truncated;
/// - `bucket_policy` over any strings (even hostile ones) is JSON with exactly those resources:
///   nothing breaks out of the Resource strings.
pub fn session_policy(data: &[u8]) {
    let mut g = Gen::new(data);
    let n = if g.chance(30) {
        g.below(70)
    } else {
        g.below(8)
    };
    let buckets: Vec<String> = (0..n).map(|_| g.bucket()).collect();
    for b in &buckets {
        assert_eq!(
            valid_bucket_name(b),
            oracle_bucket(b, true),
            "valid_bucket_name({b:?}) disagrees with the documented rule"
        );
    }

    let partition = g.pick(&["aws", "aws-cn", "aws-us-gov", "aws-iso-b"]);
    let role = RoleArn::parse(&format!(
        "arn:{partition}:iam::{ACCOUNT}:role/demo-read-write"
    ))
    .expect("role parses");
    let claims = Claims {
        subject: "alice".into(),
        issuer: ISSUER.into(),
        expires_at: now() + 600,
        roles: vec![role.as_str().into()],
        buckets: if g.chance(230) {
            Some(buckets.clone())
        } else {
            None
        },
        tag_values: BTreeMap::new(),
    };
    match Scope::build(&claims, &role, 3600) {
        Ok(scope) => match &claims.buckets {
            None => assert!(scope.policy.is_none() && scope.buckets.is_empty()),
            Some(list) => {
                assert!(!list.is_empty(), "an empty bucket list was accepted");
                for b in list {
                    assert!(oracle_bucket(b, true), "accepted invalid bucket {b:?}");
                }
                let mut sorted = list.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(scope.buckets, sorted);
                check_policy(scope.policy.as_deref().expect("policy"), partition, &sorted);
            }
        },
        Err(ScopeError::InvalidBucket(i)) => {
            assert!(
                !oracle_bucket(&buckets[i], true),
                "refused valid {:?}",
                buckets[i]
            );
            assert!(
                buckets[..i].iter().all(|b| oracle_bucket(b, true)),
                "InvalidBucket({i}) is not the first invalid entry"
            );
        }
        Err(ScopeError::NoBuckets) => assert!(buckets.is_empty()),
        Err(ScopeError::PolicyTooLarge(len)) => {
            assert!(len > MAX_POLICY_CHARS, "refused a {len}-character policy");
            assert!(buckets.iter().all(|b| oracle_bucket(b, true)));
        }
        Err(other) => panic!("unexpected scope error {other:?}"),
    }

    // The policy builder itself, fed hostile strings directly.
    let raw: Vec<String> = (0..g.below(4)).map(|_| g.string(6)).collect();
    let partition = g.string(1);
    match bucket_policy(&partition, &raw) {
        Ok(policy) => check_policy(&policy, &partition, &raw),
        Err(ScopeError::PolicyTooLarge(len)) => assert!(len > MAX_POLICY_CHARS),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// adapter argument parsing

/// The adapter's `s3://` and key parsing. Rules (oracles: the adapter's documented shapes):
/// - `parse_object_uri(s)` succeeds exactly when `s` is `s3://<bucket>/<key>` with a valid
///   bucket (no IP rule in the adapter) and a key of 1–1024 bytes without control characters; the
///   parts round-trip to `s` — so `s3://demo-bucket/../other-bucket/x` names `demo-bucket`;
/// - `parse_bucket(s)` accepts `name`, `s3://name`, `s3://name/`, `s3://name/prefix` (trimmed)
///   and nothing else;
/// - nothing panics.
pub fn adapter_args(data: &[u8]) {
    let mut g = Gen::new(data);
    let s = if g.chance(40) {
        String::from_utf8_lossy(&data[1.min(data.len())..]).into_owned()
    } else {
        let mut s = String::new();
        if g.chance(200) {
            s.push_str(g.pick(&["s3://", "s3://", "S3://", "s3:/", "https://", " s3://"]));
        }
        if g.chance(180) {
            s.push_str(g.pick(&["demo-bucket", "other-bucket", "demo-bucket.", "Demo", "ab"]));
        } else {
            s.push_str(&g.bucket());
        }
        if g.chance(200) {
            s.push('/');
        }
        if g.chance(20) {
            s.push_str(&"k".repeat(1000 + g.below(40)));
        }
        s.push_str(&g.string(5));
        s
    };

    // parse_object_uri
    let expected = s.strip_prefix("s3://").and_then(|rest| {
        let (bucket, key) = rest.split_once('/')?;
        let key_ok = !key.is_empty() && key.len() <= 1024 && !key.chars().any(char::is_control);
        (oracle_bucket(bucket, true) && key_ok).then(|| (bucket.to_string(), key.to_string()))
    });
    match adapter_s3::parse_object_uri(&s) {
        Ok(uri) => {
            bump(&ACCEPTED_URIS);
            assert_eq!(
                Some((uri.bucket.clone(), uri.key.clone())),
                expected,
                "parse_object_uri({s:?}) accepted what the rule refuses"
            );
            assert_eq!(uri.uri(), s, "round trip");
        }
        Err(_) => assert_eq!(
            expected, None,
            "parse_object_uri({s:?}) refused a valid URI"
        ),
    }

    // parse_bucket
    let t = s.trim();
    let expected = match t.strip_prefix("s3://") {
        Some(rest) => match rest.split_once('/') {
            Some((b, p)) => Some((b, Some(p).filter(|p| !p.is_empty()).map(str::to_string))),
            None => Some((rest, None)),
        },
        None => Some((t, None)),
    }
    .filter(|(b, _)| oracle_bucket(b, true))
    .map(|(b, p)| (b.to_string(), p));
    assert_eq!(
        adapter_s3::parse_bucket(&s).ok(),
        expected,
        "parse_bucket({s:?})"
    );

    // validate_key on its own
    let key = g.string(4);
    let key_ok = !key.is_empty() && key.len() <= 1024 && !key.chars().any(char::is_control);
    assert_eq!(
        adapter_s3::validate_key(&key).is_ok(),
        key_ok,
        "validate_key({key:?})"
    );
}

/// Seed inputs worth trying first (the cargo-fuzz corpus starts from these too).
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"\x00eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.".to_vec(),
        b"s3://demo-bucket/../other-bucket/x".to_vec(),
        b"\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01".to_vec(),
        vec![0xff; 64],
        (0u8..=255).collect(),
    ]
}
