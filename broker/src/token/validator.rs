//! Is this token genuine and current? Signature with an allowed algorithm and a key of the right
//! kind, the `typ` header when configured, `exp` strictly (no leeway: no credential or binding
//! past a token's expiry on any path), `nbf` with leeway, `iss` and `aud` when configured.

use super::{ClaimError, Claims, Jwks, TokenError, claims::RawClaims};
use crate::secret::Secret;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use std::sync::Arc;

/// Largest token accepted (bytes). Real JWTs are a few KiB; the incident's were ~4 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a validator checks, built from configuration.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// Algorithms a token may use. A token naming another is refused before any key is touched.
    pub algorithms: Vec<Algorithm>,
    /// Accepted `iss` values; empty: not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty: not checked.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `nbf` (and by the library on `exp`, which [`check_exp`] then
    /// re-checks without it), seconds.
    pub leeway_secs: u64,
    /// Claims copied into session tags.
    pub tag_claims: Vec<String>,
    /// Accepted `typ` header values (`BROKER_JWT_TYPES`, e.g. `at+jwt`); empty: not checked.
    pub types: Vec<String>,
}

/// The one expiry rule every path shares (exchange, bind, rebind, the session fast path): a token
/// is usable only while `now < exp`. The leeway for clock skew applies to `nbf` only — a token
/// past its `exp` never yields a credential or a binding.
pub(crate) fn check_exp(expires_at_s: i64, now_ms: i64) -> Result<(), TokenError> {
    if expires_at_s.saturating_mul(1000) <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// `nbf` on the same clock as `exp`: a token is usable from `nbf - leeway` on (the leeway absorbs
/// skew between the issuer's clock and ours).
pub(crate) fn check_nbf(
    not_before_s: Option<i64>,
    now_ms: i64,
    leeway_secs: u64,
) -> Result<(), TokenError> {
    let leeway_ms = i64::try_from(leeway_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    match not_before_s {
        Some(nbf) if nbf.saturating_mul(1000) > now_ms.saturating_add(leeway_ms) => {
            Err(TokenError::NotYetValid)
        }
        _ => Ok(()),
    }
}

/// RFC 8725 §3.11 explicit typing: the `typ` header, compared case-insensitively with an optional
/// `application/` prefix removed (RFC 7515 §4.1.9), must be one of `allowed` when any is set.
pub(crate) fn check_type(typ: Option<&str>, allowed: &[String]) -> Result<(), TokenError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let normal = |t: &str| {
        let t = t.trim().to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_string)
            .unwrap_or(t)
    };
    match typ {
        Some(t) if allowed.iter().any(|a| normal(a) == normal(t)) => Ok(()),
        _ => Err(TokenError::TypeNotAllowed),
    }
}

/// Validates tokens against an HMAC secret and/or a JWKS.
pub struct TokenValidator {
    config: ValidatorConfig,
    hmac: Option<Arc<DecodingKey>>,
    jwks: Option<Jwks>,
    /// The clock `exp` and `nbf` are checked against (the broker's injected clock; a manual one
    /// in tests).
    clock: crate::clock::Clock,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("config", &self.config)
            .field("hmac", &self.hmac.as_ref().map(|_| "[redacted]"))
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

impl TokenValidator {
    /// A validator with an optional HMAC secret (HS256/384/512) and an optional JWKS (RS, PS, ES,
    /// EdDSA). Keys never cross families: an HS token is only checked against the secret, an
    /// asymmetric token only against the key set, which rules out HS/RS key confusion.
    pub fn new(config: ValidatorConfig, hmac_secret: Option<&Secret>, jwks: Option<Jwks>) -> Self {
        Self {
            hmac: hmac_secret.map(|s| Arc::new(DecodingKey::from_secret(s.expose().as_bytes()))),
            config,
            jwks,
            clock: crate::clock::Clock::system(),
        }
    }

    /// Checks `exp` and `nbf` against `clock` (the one the engine and sessions read) instead of
    /// the system's. jsonwebtoken still checks `exp` within the leeway on the system clock, as a
    /// second, looser rule.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Validates `token` and returns its claims (in a `token.validate` span when traces are
    /// exported; the span says whether the token was accepted, never the token or its claims).
    pub async fn validate(&self, token: &Secret) -> Result<Claims, TokenError> {
        use tracing::Instrument;
        let span =
            crate::telemetry::span!("token.validate", token.accepted = tracing::field::Empty);
        let result = self.validate_untraced(token).instrument(span.clone()).await;
        span.record("token.accepted", result.is_ok());
        result
    }

    async fn validate_untraced(&self, token: &Secret) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        let header = decode_header(token.expose()).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => TokenError::Malformed(
                "header is not JSON naming a supported \"alg\" (\"none\" is never accepted)",
            ),
            _ => TokenError::Malformed("expected three base64url parts separated by dots"),
        })?;
        let alg = header.alg;
        if !self.config.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed(alg));
        }
        check_type(header.typ.as_deref(), &self.config.types)?;
        let key = self.key_for(header.kid.as_deref(), alg).await?;
        let data = decode::<RawClaims>(token.expose(), &key, &self.validation(alg))
            .map_err(|e| map_error(e.kind()))?;
        let not_before = data.claims.not_before();
        let claims = data.claims.into_claims(&self.config.tag_claims)?;
        let now_ms = self.clock.now_ms();
        check_exp(claims.expires_at, now_ms)?;
        check_nbf(not_before?, now_ms, self.config.leeway_secs)?;
        Ok(claims)
    }

    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, TokenError> {
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return self.hmac.clone().ok_or(TokenError::NoKeyForAlgorithm(alg));
        }
        match &self.jwks {
            Some(jwks) => jwks.key_for(kid, alg).await,
            None => Err(TokenError::NoKeyForAlgorithm(alg)),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.config.leeway_secs;
        v.validate_exp = true;
        // `nbf` is checked by `check_nbf`, on the injected clock.
        v.validate_nbf = false;
        // `exp` is required by `claims` (which also bounds it); asking the library to require it
        // too would report an unparsable `exp` (1e300) as a missing one.
        let mut required = vec![];
        if self.config.issuers.is_empty() {
            v.iss = None;
        } else {
            v.set_issuer(&self.config.issuers);
            required.push("iss");
        }
        if self.config.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.config.audiences);
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        v
    }
}

/// Maps the library's error to ours. The library's own messages are not passed on: some of them
/// quote parts of the token.
fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::IssuerMismatch,
        ErrorKind::InvalidAudience => TokenError::AudienceMismatch,
        ErrorKind::MissingRequiredClaim(c) => {
            TokenError::Claim(ClaimError::Missing(match c.as_str() {
                "exp" => "exp",
                "iss" => "iss",
                "aud" => "aud",
                "nbf" => "nbf",
                _ => "sub",
            }))
        }
        ErrorKind::InvalidClaimFormat(c) if c == "exp" || c == "nbf" => {
            TokenError::Claim(ClaimError::WrongType {
                claim: c.clone(),
                expected: "a whole number of seconds since 1970 that fits in milliseconds",
            })
        }
        ErrorKind::InvalidClaimFormat(c) => TokenError::Claim(ClaimError::WrongType {
            claim: c.chars().take(32).collect(),
            expected: "of the type the JWT specification gives it",
        }),
        ErrorKind::InvalidAlgorithm => TokenError::Malformed("algorithm does not match the key"),
        ErrorKind::Base64(_) => TokenError::Malformed("a part is not valid base64url"),
        ErrorKind::Json(e) if e.to_string().contains("duplicate field") => {
            TokenError::Malformed("payload names a claim more than once")
        }
        ErrorKind::Json(e) if e.to_string().contains("recursion limit") => {
            TokenError::Malformed("payload nests JSON too deeply")
        }
        ErrorKind::Json(_) => TokenError::Malformed("payload is not a JSON object of claims"),
        ErrorKind::Utf8(_) => TokenError::Malformed("payload is not UTF-8"),
        _ => TokenError::Malformed("token could not be verified"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    const SECRET: &str = "test-secret-at-least-32-bytes-long!!";

    fn validator(issuers: &[&str], audiences: &[&str]) -> TokenValidator {
        TokenValidator::new(
            ValidatorConfig {
                algorithms: vec![Algorithm::HS256],
                issuers: issuers.iter().map(|s| s.to_string()).collect(),
                audiences: audiences.iter().map(|s| s.to_string()).collect(),
                leeway_secs: 60,
                tag_claims: vec![],
                types: vec![],
            },
            Some(&Secret::new(SECRET)),
            None,
        )
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn sign(claims: Value) -> Secret {
        Secret::new(
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        )
    }

    fn raw(header: Value, payload: &str) -> Secret {
        let h = B64.encode(serde_json::to_vec(&header).unwrap());
        let p = B64.encode(payload);
        let msg = format!("{h}.{p}");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
        let sig = B64.encode(aws_lc_rs::hmac::sign(&key, msg.as_bytes()).as_ref());
        Secret::new(format!("{msg}.{sig}"))
    }

    async fn check(v: &TokenValidator, t: Secret) -> Result<Claims, TokenError> {
        v.validate(&t).await
    }

    /// `exp` is judged by the injected clock: a token valid now is refused once the broker's
    /// clock passes its `exp`, with no waiting (before, only the system clock counted).
    #[tokio::test]
    async fn exp_is_checked_against_the_injected_clock() {
        let (clock, manual) = crate::clock::Clock::manual();
        let v = validator(&[], &[]).with_clock(clock);
        let token = sign(
            json!({"sub": "alice", "exp": now() + 600, "role_arn": "arn:aws:iam::123456789012:role/demo-rw"}),
        );
        assert!(check(&v, token.clone()).await.is_ok());
        manual.advance(std::time::Duration::from_secs(601));
        assert!(matches!(check(&v, token).await, Err(TokenError::Expired)));
    }

    /// `nbf` is judged by the injected clock too (it was the system clock's, through
    /// jsonwebtoken): a token not yet valid for the wall clock is accepted once the broker's
    /// clock has passed its `nbf`, and one valid for the wall clock is refused while the
    /// broker's clock stands before it. Fails on the old code in both directions.
    #[tokio::test]
    async fn nbf_is_checked_against_the_injected_clock() {
        let token = |nbf: i64| {
            sign(
                json!({"sub": "alice", "exp": now() + 3600, "nbf": nbf, "role_arn": "arn:aws:iam::123456789012:role/demo-rw"}),
            )
        };
        // Ahead: the wall clock would refuse nbf = now + 600 (beyond the 60 s leeway).
        let (clock, manual) = crate::clock::Clock::manual();
        manual.advance(std::time::Duration::from_secs(1200));
        let ahead = validator(&[], &[]).with_clock(clock);
        assert!(check(&ahead, token(now() + 600)).await.is_ok());
        // Behind: the wall clock would accept nbf = now - 100.
        let behind = validator(&[], &[]).with_clock(crate::clock::Clock::from_source(
            crate::clock::ManualClock::new(crate::clock::now_ms() - 600_000),
        ));
        assert_eq!(
            check(&behind, token(now() - 100)).await,
            Err(TokenError::NotYetValid)
        );
        // Within the leeway of the injected clock: accepted.
        let manual_at_nbf = crate::clock::ManualClock::new(crate::clock::now_ms() - 600_000);
        let at = validator(&[], &[]).with_clock(crate::clock::Clock::from_source(manual_at_nbf));
        assert!(check(&at, token(now() - 600 + 30)).await.is_ok());
    }

    #[tokio::test]
    async fn accepts_a_good_token() {
        let c = check(
            &validator(&[], &[]),
            sign(json!({"sub":"alice","exp":now()+300})),
        )
        .await
        .unwrap();
        assert_eq!(c.subject, "alice");
    }

    #[tokio::test]
    async fn refuses_empty_and_huge_tokens() {
        let v = validator(&[], &[]);
        assert_eq!(check(&v, Secret::new("")).await, Err(TokenError::Missing));
        let huge = Secret::new("a".repeat(1024 * 1024));
        assert_eq!(
            check(&v, huge).await,
            Err(TokenError::TooLarge(1024 * 1024))
        );
    }

    #[tokio::test]
    async fn refuses_alg_none() {
        let t = Secret::new(format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 300))
        ));
        assert!(matches!(
            check(&validator(&[], &[]), t).await,
            Err(TokenError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn refuses_algorithm_not_configured() {
        let t = raw(
            json!({"alg":"HS512"}),
            &format!(r#"{{"sub":"a","exp":{}}}"#, now() + 60),
        );
        assert_eq!(
            check(&validator(&[], &[]), t).await,
            Err(TokenError::AlgorithmNotAllowed(Algorithm::HS512))
        );
    }

    #[tokio::test]
    async fn refuses_rs256_without_key_set() {
        let mut v = validator(&[], &[]);
        v.config.algorithms.push(Algorithm::RS256);
        let t = raw(
            json!({"alg":"RS256"}),
            &format!(r#"{{"sub":"a","exp":{}}}"#, now() + 60),
        );
        assert_eq!(
            check(&v, t).await,
            Err(TokenError::NoKeyForAlgorithm(Algorithm::RS256))
        );
    }

    #[tokio::test]
    async fn refuses_bad_signature() {
        let mut t = sign(json!({"sub":"alice","exp":now()+300}))
            .expose()
            .to_string();
        // Change the signature's first character: all six of its bits are
        // signature data, so the token is always really altered (the last
        // character carries padding bits, and an earlier version of this test
        // compared it against the wrong neighbour and sometimes left the
        // token intact).
        let at = t.rfind('.').expect("a JWT has a signature part") + 1;
        let first = t.as_bytes()[at];
        let altered = if first == b'A' { "B" } else { "A" };
        t.replace_range(at..at + 1, altered);
        assert_eq!(
            check(&validator(&[], &[]), Secret::new(t)).await,
            Err(TokenError::BadSignature)
        );
        let other = Secret::new(
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub":"a","exp":now()+60}),
                &EncodingKey::from_secret(b"another-secret"),
            )
            .unwrap(),
        );
        assert_eq!(
            check(&validator(&[], &[]), other).await,
            Err(TokenError::BadSignature)
        );
    }

    #[tokio::test]
    async fn refuses_expired_and_future_tokens() {
        let v = validator(&[], &[]);
        assert_eq!(
            check(&v, sign(json!({"sub":"a","exp":now()-120}))).await,
            Err(TokenError::Expired)
        );
        assert_eq!(
            check(&v, sign(json!({"sub":"a","exp":now()+600,"nbf":now()+300}))).await,
            Err(TokenError::NotYetValid)
        );
    }

    #[tokio::test]
    async fn leeway_applies_to_nbf_but_never_to_exp() {
        let v = validator(&[], &[]);
        assert!(
            check(&v, sign(json!({"sub":"a","exp":now()+300,"nbf":now()+10})))
                .await
                .is_ok(),
            "nbf 10 s ahead is within the 60 s leeway"
        );
        assert_eq!(
            check(&v, sign(json!({"sub":"a","exp":now()-10}))).await,
            Err(TokenError::Expired),
            "exp 10 s ago: expired, whatever the leeway"
        );
        assert_eq!(
            check(&v, sign(json!({"sub":"a","exp":now()}))).await,
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn exp_rule_is_strict_at_the_millisecond() {
        assert!(check_exp(1_000, 999_999).is_ok());
        assert_eq!(check_exp(1_000, 1_000_000), Err(TokenError::Expired));
        assert_eq!(check_exp(i64::MAX, 0), Ok(()));
    }

    #[test]
    fn typ_is_checked_only_when_configured() {
        let at = vec!["at+jwt".to_string()];
        assert!(check_type(None, &[]).is_ok());
        assert!(check_type(Some("JWT"), &[]).is_ok());
        assert!(check_type(Some("at+jwt"), &at).is_ok());
        assert!(check_type(Some("AT+JWT"), &at).is_ok());
        assert!(check_type(Some("application/at+jwt"), &at).is_ok());
        assert_eq!(
            check_type(Some("JWT"), &at),
            Err(TokenError::TypeNotAllowed)
        );
        assert_eq!(check_type(None, &at), Err(TokenError::TypeNotAllowed));
    }

    #[tokio::test]
    async fn an_id_token_is_refused_where_access_tokens_are_typed() {
        let mut v = validator(&[], &[]);
        v.config.types = vec!["at+jwt".into()];
        let claims = json!({"sub":"alice","exp":now()+300});
        // jsonwebtoken's default header says "typ":"JWT" (an ID token or a generic JWT).
        assert_eq!(
            check(&v, sign(claims.clone())).await,
            Err(TokenError::TypeNotAllowed)
        );
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        let typed = encode(&h, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        assert!(check(&v, Secret::new(typed)).await.is_ok());
    }

    #[tokio::test]
    async fn huge_exp_is_invalid_not_wrapped() {
        let v = validator(&[], &[]);
        for exp in [json!(i64::MAX), json!(u64::MAX), json!(1e300)] {
            let e = check(&v, sign(json!({"sub":"a","exp":exp})))
                .await
                .unwrap_err();
            assert!(
                matches!(&e, TokenError::Claim(ClaimError::OutOfRange("exp")))
                    || e.to_string()
                        == "claim \"exp\" must be a whole number of seconds since 1970 that fits in milliseconds",
                "{exp}: {e:?}"
            );
        }
    }

    #[tokio::test]
    async fn missing_exp_is_named() {
        let e = check(&validator(&[], &[]), sign(json!({"sub":"a"})))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "claim \"exp\" is required");
    }

    #[tokio::test]
    async fn checks_issuer_and_audience() {
        let v = validator(&["https://idp"], &["mcp"]);
        let ok = json!({"sub":"a","exp":now()+60,"iss":"https://idp","aud":"mcp"});
        assert!(check(&v, sign(ok)).await.is_ok());
        assert_eq!(
            check(
                &v,
                sign(json!({"sub":"a","exp":now()+60,"iss":"https://evil","aud":"mcp"}))
            )
            .await,
            Err(TokenError::IssuerMismatch)
        );
        assert_eq!(
            check(
                &v,
                sign(json!({"sub":"a","exp":now()+60,"iss":"https://idp","aud":"other"}))
            )
            .await,
            Err(TokenError::AudienceMismatch)
        );
        assert_eq!(
            check(&v, sign(json!({"sub":"a","exp":now()+60,"aud":"mcp"})))
                .await
                .unwrap_err()
                .to_string(),
            "claim \"iss\" is required"
        );
    }

    #[tokio::test]
    async fn duplicate_claims_and_json_bombs_are_malformed() {
        let v = validator(&[], &[]);
        let dup = raw(
            json!({"alg":"HS256"}),
            &format!(r#"{{"sub":"alice","sub":"root","exp":{}}}"#, now() + 60),
        );
        assert!(matches!(
            check(&v, dup).await,
            Err(TokenError::Malformed(_))
        ));
        let bomb = format!(
            r#"{{"sub":"a","exp":{},"x":{}1{}}}"#,
            now() + 60,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert!(matches!(
            check(&v, raw(json!({"alg":"HS256"}), &bomb)).await,
            Err(TokenError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn bad_base64_is_malformed() {
        let v = validator(&[], &[]);
        assert!(matches!(
            check(&v, Secret::new("!!!.???.***")).await,
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            check(&v, Secret::new("onlyonepart")).await,
            Err(TokenError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn errors_never_echo_the_token() {
        let v = validator(&["https://idp"], &[]);
        for t in [
            sign(json!({"sub":"a","exp":now()-500})),
            sign(json!({"sub":"a","exp":now()+60,"iss":"x"})),
            Secret::new("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"),
        ] {
            let msg = check(&v, t.clone()).await.unwrap_err().to_string();
            for part in t.expose().split('.') {
                if part.len() > 3 {
                    assert!(!msg.contains(part), "{msg}");
                }
            }
        }
    }
}
