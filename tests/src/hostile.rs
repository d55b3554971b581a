//! A corpus of hostile JWTs, each with the answer the broker and the adapter must give it.
//!
//! Every entry is a token an attacker (or a broken identity provider) could send: forged
//! algorithms and keys, broken encodings, claims that are missing, mistyped, oversized or
//! crafted to escape a role allowlist or a bucket session policy. The expected answers follow the
//! README's table: a token that is not genuine, not current or not well formed is
//! `UNAUTHENTICATED` (adapter: 401 with `WWW-Authenticate: Bearer error="invalid_token"`); a
//! genuine token asking for a role or scope the broker will not grant is `PERMISSION_DENIED`
//! (adapter: 403, `error="insufficient_scope"`). A token that is not even an RFC 6750 `token68`
//! string never reaches the broker: the adapter answers 400 (`error="invalid_request"`), and a
//! header too large for the HTTP server is refused by it (431).
//!
//! The corpus is built for a broker configured like [`hostile_broker`]: an HS256 secret AND a JWKS
//! holding an RSA and an EC key, so HS/RS key confusion is really possible to attempt.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use serde_json::{Value, json};
use tonic::Code;

use crate::broker::BrokerBuilder;
use crate::moto::ACCOUNT_ID;
use crate::stack::{AUDIENCE, ISSUER};
use crate::tokens::{Claims, SigningKey, TokenMinter, now, random_string};

/// The claim the hostile broker copies into a session tag (`BROKER_TAG_CLAIMS`).
pub const TAG_CLAIM: &str = "team";

/// One hostile token and the answers it must get.
#[derive(Clone)]
pub struct HostileToken {
    pub name: String,
    pub token: String,
    /// gRPC code of `ExchangeToken` / `GetCredentials` at the broker.
    pub broker: Code,
    /// HTTP status of a `tools/call` carrying it at the adapter.
    pub adapter: u16,
    /// Set while the broker gets this one wrong (see [`KNOWN_BUGS`]): such tokens run in their
    /// own test, so the rest of the corpus keeps guarding everything else.
    pub known_bug: Option<&'static str>,
}

/// Names of corpus entries the broker currently answers wrongly, with the bug. Remove an entry
/// once the broker is fixed; `hostile_tokens::known_bugs_in_the_corpus` then fails until it is.
pub const KNOWN_BUGS: &[(&str, &str)] = &[];

impl std::fmt::Debug for HostileToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostileToken({}, {} bytes, {:?}, {})",
            self.name,
            self.token.len(),
            self.broker,
            self.adapter
        )
    }
}

/// The keys the hostile broker trusts, and what an attacker can see of them.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    /// The broker's HS256 secret (the attacker does not have it).
    pub hs_secret: String,
    /// In the broker's JWKS as `rsa-1`.
    pub rsa: SigningKey,
    /// In the broker's JWKS as `ec-1`.
    pub ec: SigningKey,
}

impl TrustedKeys {
    pub fn generate() -> TrustedKeys {
        TrustedKeys {
            hs_secret: random_string(48),
            rsa: SigningKey::rsa("rsa-1"),
            ec: SigningKey::ec("ec-1"),
        }
    }

    /// `{"keys":[rsa-1, ec-1]}`: what the broker reads from `BROKER_JWKS_FILE`, and what any
    /// attacker can download from the identity provider.
    pub fn jwks(&self) -> Value {
        crate::tokens::jwks(&[&self.rsa, &self.ec])
    }

    /// A minter for the broker's HS256 secret with the standard issuer and audience.
    pub fn hs(&self) -> TokenMinter {
        TokenMinter::hs256(&self.hs_secret)
            .issuer(ISSUER)
            .audience(AUDIENCE)
    }
}

/// The broker configuration the corpus is written for: HS256 with `keys.hs_secret` and RS256 /
/// ES256 from the JWKS file at `jwks_path`, issuer and audience checked, `team` as a tag claim.
/// Apply it on top of [`crate::stack::standard_broker`] (it keeps that one's STS settings).
pub fn hostile_broker(
    builder: BrokerBuilder,
    keys: &TrustedKeys,
    jwks_path: &str,
) -> BrokerBuilder {
    builder
        .env("BROKER_JWT_HS256_SECRET", &keys.hs_secret)
        .env("BROKER_JWKS_FILE", jwks_path)
        .env("BROKER_JWT_ALGORITHMS", "HS256,RS256,ES256")
        .env("BROKER_JWKS_REFETCH_INTERVAL", "1s")
        .env("BROKER_TAG_CLAIMS", TAG_CLAIM)
}

// ---------------------------------------------------------------------------------------------
// Building blocks for tokens no library would make.

/// `base64url(header).base64url(payload).base64url(HMAC-SHA256(secret, signing input))`, with
/// header and payload taken as raw text (so they can hold duplicate keys or deep nesting).
pub fn hs256_raw(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", B64.encode(tag.as_ref()))
}

/// A token with the given header and payload text and a literal signature part.
pub fn unsigned_raw(header: &str, payload: &str, signature: &str) -> String {
    format!("{}.{}.{signature}", B64.encode(header), B64.encode(payload))
}

/// The standard valid claims as JSON text, plus `extra` raw members (`"k":v,...`) spliced in.
fn payload_with(role: &str, extra: &str) -> String {
    let base = format!(
        r#""iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{},"iat":{},"jti":"{}","role_arn":"{role}""#,
        now() + 3600,
        now(),
        random_string(12)
    );
    if extra.is_empty() {
        format!("{{{base}}}")
    } else {
        format!("{{{base},{extra}}}")
    }
}

/// DER length octets.
fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::new();
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    der(0x02, &content)
}

fn pem(label: &str, der_bytes: &[u8]) -> String {
    let b64 = STANDARD.encode(der_bytes);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The RSA public key of `key` as PEM: `SubjectPublicKeyInfo` (`BEGIN PUBLIC KEY`) when `spki`,
/// else PKCS#1 (`BEGIN RSA PUBLIC KEY`). This is what an attacker uses as the HMAC secret in the
/// RS256→HS256 key-confusion attack.
pub fn rsa_public_pem(key: &SigningKey, spki: bool) -> String {
    let jwk = key.jwk();
    let n = B64
        .decode(jwk["n"].as_str().expect("RSA JWK has n"))
        .expect("n is base64url");
    let e = B64
        .decode(jwk["e"].as_str().expect("RSA JWK has e"))
        .expect("e is base64url");
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    if !spki {
        return pem("RSA PUBLIC KEY", &pkcs1);
    }
    let rsa_oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    let algorithm = der(0x30, &[&rsa_oid[..], &[0x05, 0x00]].concat());
    let mut bits = vec![0u8];
    bits.extend(&pkcs1);
    let spki_der = der(0x30, &[algorithm, der(0x03, &bits)].concat());
    pem("PUBLIC KEY", &spki_der)
}

// ---------------------------------------------------------------------------------------------
// The corpus.

const UNAUTH: (Code, u16) = (Code::Unauthenticated, 401);
const DENIED: (Code, u16) = (Code::PermissionDenied, 403);
/// Not a token68 string: refused by the adapter's header parser; the broker still says 401.
const BAD_HEADER: (Code, u16) = (Code::Unauthenticated, 400);

/// Every hostile token, for a broker built with [`hostile_broker`] whose allowlist is
/// `arn:aws:iam::123456789012:role/demo-*`; `rw_role` is the allowlisted read-write role ARN.
pub fn corpus(keys: &TrustedKeys, rw_role: &str) -> Vec<HostileToken> {
    let hs = keys.hs();
    let good = || Claims::new("alice").role_arn(rw_role);
    let rsa_minter = TokenMinter::with_key(&keys.rsa)
        .issuer(ISSUER)
        .audience(AUDIENCE);
    let secret = keys.hs_secret.as_bytes();
    let mut out: Vec<HostileToken> = Vec::new();
    let mut add = |name: &str, token: String, expected: (Code, u16)| {
        out.push(HostileToken {
            name: name.to_string(),
            token,
            broker: expected.0,
            adapter: expected.1,
            known_bug: KNOWN_BUGS
                .iter()
                .find(|(bug, _)| *bug == name)
                .map(|(_, why)| *why),
        });
    };
    let claims_json = |c: &Claims| -> String {
        let mut v = serde_json::Map::new();
        for k in ["sub", "iat", "exp", "jti", "role_arn"] {
            if let Some(x) = c.get(k) {
                v.insert(k.into(), x.clone());
            }
        }
        v.insert("iss".into(), json!(ISSUER));
        v.insert("aud".into(), json!(AUDIENCE));
        Value::Object(v).to_string()
    };
    let good_payload = claims_json(&good());

    // --- algorithms and keys -----------------------------------------------------------------
    add(
        "alg none",
        unsigned_raw(r#"{"alg":"none","typ":"JWT"}"#, &good_payload, ""),
        UNAUTH,
    );
    add(
        "alg None (case variant) with the HS signature",
        hs256_raw(r#"{"alg":"None","typ":"JWT"}"#, &good_payload, secret),
        UNAUTH,
    );
    add(
        "alg none with a garbage signature",
        unsigned_raw(r#"{"alg":"none"}"#, &good_payload, "c2lnbmF0dXJl"),
        UNAUTH,
    );
    for (what, key_text) in [
        ("SPKI PEM", rsa_public_pem(&keys.rsa, true)),
        ("PKCS#1 PEM", rsa_public_pem(&keys.rsa, false)),
        (
            "SPKI PEM without final newline",
            rsa_public_pem(&keys.rsa, true).trim_end().to_string(),
        ),
        ("public JWK JSON", keys.rsa.jwk().to_string()),
    ] {
        add(
            &format!("HS256 signed with the RSA public key ({what}) as secret, kid rsa-1"),
            hs256_raw(
                r#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#,
                &good_payload,
                key_text.as_bytes(),
            ),
            UNAUTH,
        );
    }
    add(
        "HS256 signed with the RSA public key PEM, no kid",
        hs256_raw(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &good_payload,
            rsa_public_pem(&keys.rsa, true).as_bytes(),
        ),
        UNAUTH,
    );
    add(
        "HS384 (not an allowed algorithm) with the right secret",
        hs.clone()
            .algorithm(jsonwebtoken::Algorithm::HS384)
            .mint(&good()),
        UNAUTH,
    );
    add(
        "RS256 by an impostor key under the trusted kid",
        TokenMinter::with_key(&SigningKey::rsa("rsa-1"))
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .mint(&good()),
        UNAUTH,
    );
    add(
        "RS256 with an unknown kid",
        TokenMinter::with_key(&SigningKey::rsa("rsa-unknown"))
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .mint(&good()),
        UNAUTH,
    );
    add(
        "kid with path traversal",
        rsa_minter
            .clone()
            .kid(Some("../../../../etc/passwd"))
            .mint(&good()),
        UNAUTH,
    );
    add(
        "ES256 signature under the RSA key's kid",
        TokenMinter::with_key(&keys.ec)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .kid(Some("rsa-1"))
            .mint(&good()),
        UNAUTH,
    );
    {
        // The attacker's own key, offered in the header (jwk / jku / x5u): must be ignored.
        let attacker = SigningKey::rsa("attacker");
        let signed = TokenMinter::with_key(&attacker)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .mint(&good());
        let (_, rest) = signed.split_once('.').expect("three parts");
        let header = json!({"alg":"RS256","typ":"JWT","kid":"rsa-1","jwk": attacker.jwk(),
            "jku":"http://127.0.0.1:9/jwks.json","x5u":"http://127.0.0.1:9/cert.pem"});
        add(
            "RS256 by the attacker's key embedded in the header (jwk, jku, x5u)",
            format!("{}.{rest}", B64.encode(header.to_string())),
            UNAUTH,
        );
    }
    {
        let valid = hs.mint(&good());
        let (input, sig) = valid.rsplit_once('.').unwrap();
        add("signature stripped", format!("{input}."), UNAUTH);
        let mut flipped: Vec<u8> = B64.decode(sig).unwrap();
        flipped[0] ^= 1;
        add(
            "one signature bit flipped",
            format!("{input}.{}", B64.encode(flipped)),
            UNAUTH,
        );
        let (header, _) = input.split_once('.').unwrap();
        let mallory = claims_json(&Claims::new("mallory").role_arn(rw_role));
        add(
            "payload swapped for another subject, signature kept",
            format!("{header}.{}.{sig}", B64.encode(mallory)),
            UNAUTH,
        );
    }

    // --- time, issuer, audience --------------------------------------------------------------
    add(
        "expired an hour ago",
        hs.mint(&good().expires_in(-3600)),
        UNAUTH,
    );
    add("no exp", hs.mint(&good().without("exp")), UNAUTH);
    add(
        "exp as a string",
        hs.mint(&good().claim("exp", json!((now() + 3600).to_string()))),
        UNAUTH,
    );
    add(
        "nbf ten minutes in the future",
        hs.mint(&good().not_before_in(600)),
        UNAUTH,
    );
    add(
        "wrong iss",
        hs.mint(&good().iss("https://evil.example/")),
        UNAUTH,
    );
    add(
        "iss with a trailing space",
        hs.mint(&good().iss(&format!("{ISSUER} "))),
        UNAUTH,
    );
    add("no iss", hs.mint(&good().claim("iss", Value::Null)), UNAUTH);
    add("wrong aud", hs.mint(&good().aud("someone-else")), UNAUTH);
    add(
        "aud list without ours",
        hs.mint(&good().claim("aud", json!(["a", "b", "credential-broker2"]))),
        UNAUTH,
    );

    // --- sub -------------------------------------------------------------------------------------
    add("missing sub", hs.mint(&good().without("sub")), UNAUTH);
    add(
        "empty sub",
        hs.mint(&good().claim("sub", json!(""))),
        UNAUTH,
    );
    add(
        "non-string sub (number)",
        hs.mint(&good().claim("sub", json!(42))),
        UNAUTH,
    );
    add(
        "non-string sub (object)",
        hs.mint(&good().claim("sub", json!({"id": "alice"}))),
        UNAUTH,
    );
    add(
        "sub with path characters",
        hs.mint(&good().claim("sub", json!("../../etc/passwd"))),
        UNAUTH,
    );
    add(
        "sub with a newline (log injection)",
        hs.mint(&good().claim("sub", json!("alice\nlevel=ERROR msg=\"forged\" sub=admin"))),
        UNAUTH,
    );
    add(
        "sub with a NUL byte",
        hs.mint(&good().claim("sub", json!("alice\u{0}admin"))),
        UNAUTH,
    );
    add(
        "500-character sub",
        hs.mint(&good().claim("sub", json!("a".repeat(500)))),
        UNAUTH,
    );

    // --- encoding and size -------------------------------------------------------------------------
    add(
        "1 MB token",
        format!(
            "{}.{}.{}",
            B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            "A".repeat(1024 * 1024),
            "c2ln"
        ),
        // 1 MB of header is more than the adapter's HTTP server reads; the broker refuses it
        // before decoding (MAX_TOKEN_BYTES).
        (Code::Unauthenticated, 431),
    );
    add(
        "17 KiB validly signed token (over MAX_TOKEN_BYTES)",
        hs.mint(&good().claim("pad", json!("x".repeat(17 * 1024)))),
        UNAUTH,
    );
    add(
        "bad base64 in the payload (standard alphabet +/)",
        {
            let valid = hs.mint(&good());
            let (h, rest) = valid.split_once('.').unwrap();
            let (_, s) = rest.split_once('.').unwrap();
            format!("{h}.ab+/cd+/ef.{s}")
        },
        UNAUTH,
    );
    add("garbage characters", "!!!.???.***".to_string(), BAD_HEADER);
    add(
        "token with an embedded space",
        {
            let t = hs.mint(&good());
            format!("{} {}", &t[..20], &t[20..])
        },
        BAD_HEADER,
    );
    add(
        "two parts",
        {
            let t = hs.mint(&good());
            t.rsplit_once('.').unwrap().0.to_string()
        },
        UNAUTH,
    );
    add("four parts", format!("{}.e30", hs.mint(&good())), UNAUTH);
    add(
        "header is not JSON",
        format!(
            "{}.{}.c2ln",
            B64.encode("not json"),
            B64.encode(&good_payload)
        ),
        UNAUTH,
    );
    add(
        "payload is a JSON array",
        hs256_raw(r#"{"alg":"HS256"}"#, r#"[{"sub":"alice"}]"#, secret),
        UNAUTH,
    );
    add(
        "payload is not UTF-8",
        {
            let input = format!(
                "{}.{}",
                B64.encode(r#"{"alg":"HS256"}"#),
                B64.encode([0xff, 0xfe, 0x7b, 0x7d])
            );
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
            let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
            format!("{input}.{}", B64.encode(tag.as_ref()))
        },
        UNAUTH,
    );

    // --- duplicate claims and JSON bombs (validly signed) ------------------------------------------
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    add(
        "duplicate sub (alice, then admin)",
        hs256_raw(
            header,
            &payload_with(rw_role, r#""sub":"alice","sub":"admin""#),
            secret,
        ),
        UNAUTH,
    );
    add(
        "duplicate role_arn (allowed, then ops-admin)",
        hs256_raw(
            header,
            &payload_with(
                rw_role,
                &format!(r#""sub":"alice","role_arn":"arn:aws:iam::{ACCOUNT_ID}:role/ops-admin""#),
            ),
            secret,
        ),
        UNAUTH,
    );
    add(
        "duplicate exp (expired, then valid)",
        hs256_raw(
            header,
            &format!(
                r#"{{"sub":"alice","iss":"{ISSUER}","aud":"{AUDIENCE}","role_arn":"{rw_role}","exp":{},"exp":{}}}"#,
                now() - 7200,
                now() + 3600
            ),
            secret,
        ),
        UNAUTH,
    );
    add(
        "duplicate iss (evil, then ours)",
        hs256_raw(
            header,
            &format!(
                r#"{{"sub":"alice","iss":"https://evil.example/","iss":"{ISSUER}","aud":"{AUDIENCE}","role_arn":"{rw_role}","exp":{}}}"#,
                now() + 3600
            ),
            secret,
        ),
        UNAUTH,
    );
    add(
        "duplicate tag claim (team: sales, then admin)",
        hs256_raw(
            header,
            &payload_with(
                rw_role,
                &format!(r#""sub":"alice","{TAG_CLAIM}":"sales","{TAG_CLAIM}":"admin""#),
            ),
            secret,
        ),
        UNAUTH,
    );
    add(
        "duplicate aud (someone else, then ours)",
        hs256_raw(
            header,
            &format!(
                r#"{{"sub":"alice","iss":"{ISSUER}","aud":"someone-else","aud":"{AUDIENCE}","role_arn":"{rw_role}","exp":{}}}"#,
                now() + 3600
            ),
            secret,
        ),
        UNAUTH,
    );
    add(
        "duplicate nbf (future, then past)",
        hs256_raw(
            header,
            &payload_with(
                rw_role,
                &format!(
                    r#""sub":"alice","nbf":{},"nbf":{}"#,
                    now() + 7200,
                    now() - 60
                ),
            ),
            secret,
        ),
        UNAUTH,
    );
    add(
        "duplicate kid and alg in the header",
        hs256_raw(
            r#"{"alg":"RS256","alg":"HS256","kid":"rsa-1","kid":"x"}"#,
            &good_payload,
            secret,
        ),
        UNAUTH,
    );
    add(
        "nested-JSON bomb in an extra claim (3000 levels)",
        hs256_raw(
            header,
            &payload_with(
                rw_role,
                &format!(
                    r#""sub":"alice","x":{}1{}"#,
                    "[".repeat(3000),
                    "]".repeat(3000)
                ),
            ),
            secret,
        ),
        UNAUTH,
    );
    add(
        "nested-JSON bomb of objects in the header",
        hs256_raw(
            &format!(
                r#"{{"alg":"HS256","x":{}1{}}}"#,
                r#"{"a":"#.repeat(2000),
                "}".repeat(2000)
            ),
            &good_payload,
            secret,
        ),
        UNAUTH,
    );
    add(
        "buckets is an object",
        hs.mint(&good().claim("buckets", json!({"demo-bucket": true}))),
        UNAUTH,
    );
    add(
        "65 buckets (more than 64 entries)",
        hs.mint(&good().claim(
            "buckets",
            json!((0..65).map(|i| format!("bucket-{i:03}")).collect::<Vec<_>>()),
        )),
        UNAUTH,
    );
    add(
        "tag claim is an object",
        hs.mint(&good().claim(TAG_CLAIM, json!({"k": "v"}))),
        UNAUTH,
    );

    // --- roles (genuine tokens asking for what the allowlist does not give) -----------------------
    let role = |r: &str| hs.mint(&Claims::new("alice").role_arn(r));
    add(
        "no role claim at all",
        hs.mint(&Claims::new("alice")),
        DENIED,
    );
    add(
        "role outside the allowlist (ops-admin)",
        role(&format!("arn:aws:iam::{ACCOUNT_ID}:role/ops-admin")),
        DENIED,
    );
    add(
        "role names outside the allowlist (roles: [ops-admin])",
        hs.mint(&Claims::new("alice").roles(&["ops-admin"])),
        DENIED,
    );
    add("role ARN *", role("*"), DENIED);
    add(
        "role ARN with * as the role name",
        role(&format!("arn:aws:iam::{ACCOUNT_ID}:role/*")),
        DENIED,
    );
    add(
        "role ARN with demo-* (a glob, not a role)",
        role(&format!("arn:aws:iam::{ACCOUNT_ID}:role/demo-*")),
        DENIED,
    );
    add(
        "allowlisted role name in another account",
        role("arn:aws:iam::999999999999:role/demo-read-write"),
        DENIED,
    );
    add(
        "account wildcard",
        role("arn:aws:iam::*:role/demo-read-write"),
        DENIED,
    );
    add(
        "allowlisted role name in another partition (aws-cn)",
        role(&format!(
            "arn:aws-cn:iam::{ACCOUNT_ID}:role/demo-read-write"
        )),
        DENIED,
    );
    add(
        "role ARN with trailing spaces",
        role(&format!("{rw_role}  ")),
        DENIED,
    );
    add(
        "role ARN with a leading space",
        role(&format!(" {rw_role}")),
        DENIED,
    );
    add(
        "role ARN with a Cyrillic look-alike letter",
        role(&rw_role.replace("write", "wr\u{0456}te")),
        DENIED,
    );
    add(
        "role ARN with a fullwidth colon",
        role(&rw_role.replacen(":role/", "\u{ff1a}role/", 1)),
        DENIED,
    );
    add(
        "role ARN upper-cased partition",
        role(&rw_role.replacen("arn:aws:", "arn:AWS:", 1)),
        DENIED,
    );
    add(
        "role path climbing out of demo-* (demo-x/../ops-admin)",
        role(&format!(
            "arn:aws:iam::{ACCOUNT_ID}:role/demo-x/../ops-admin"
        )),
        DENIED,
    );
    add(
        "role ARN with a NUL byte",
        role(&format!("{rw_role}\u{0}")),
        DENIED,
    );
    add(
        "user ARN instead of a role",
        role(&format!("arn:aws:iam::{ACCOUNT_ID}:user/demo-read-write")),
        DENIED,
    );

    // --- buckets (session-policy breakout) ------------------------------------------------------------
    let buckets = |b: Value| hs.mint(&good().claim("buckets", b));
    add("buckets [*]", buckets(json!(["*"])), DENIED);
    add("buckets [demo-*]", buckets(json!(["demo-*"])), DENIED);
    add(
        "buckets [demo-bucket/*]",
        buckets(json!(["demo-bucket/*"])),
        DENIED,
    );
    add(
        "buckets with a quote",
        buckets(json!(["demo-bucket\""])),
        DENIED,
    );
    add(
        "buckets with a JSON breakout",
        buckets(json!(["demo-bucket\"],\"Resource\":[\"*"])),
        DENIED,
    );
    add(
        "buckets with a statement injection",
        buckets(json!([
            "x\"}]},{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}"
        ])),
        DENIED,
    );
    add(
        "buckets as an S3 ARN",
        buckets(json!(["arn:aws:s3:::other-bucket"])),
        DENIED,
    );
    add("buckets empty list", buckets(json!([])), DENIED);
    add(
        "buckets with an upper-case look-alike",
        buckets(json!(["Demo-bucket"])),
        DENIED,
    );
    add(
        "buckets policy over 2048 characters",
        buckets(json!(
            (0..40)
                .map(|i| format!("bucket-with-a-rather-long-name-{i:03}"))
                .collect::<Vec<_>>()
        )),
        DENIED,
    );
    add(
        "tag value with a quote and newline",
        hs.mint(&good().claim(TAG_CLAIM, json!("sales\"\n,\"Key\":\"admin"))),
        DENIED,
    );
    out
}
