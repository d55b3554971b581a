//! JWTs for tests: HS256 with a shared secret, RS256 / ES256 with generated keys and a JWKS.
//!
//! Tests need many tokens that differ in exactly one way (another subject, an expired `exp`, a
//! role outside the allowlist, a bad signature), so [`Claims`] is a small builder over a JSON
//! object and [`TokenMinter`] signs it. Every token gets a random `jti`, so two tokens minted in
//! the same second for the same claims are still different tokens (the broker's "new token for
//! the same subject" path).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A random printable string of `len` characters (session ids, secrets).
pub fn random_string(len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A JWT claim set under construction. `Claims::new(sub)` has `sub`, `iat`, `exp` (now + 1 h)
/// and a random `jti`; the minter adds its default `iss`/`aud` unless set here.
#[derive(Debug, Clone)]
pub struct Claims(Map<String, Value>);

impl Claims {
    pub fn new(sub: &str) -> Claims {
        let now = now();
        let mut map = Map::new();
        map.insert("sub".into(), json!(sub));
        map.insert("iat".into(), json!(now));
        map.insert("exp".into(), json!(now + 3600));
        map.insert("jti".into(), json!(random_string(16)));
        Claims(map)
    }

    /// Sets any claim.
    pub fn claim(mut self, name: &str, value: Value) -> Claims {
        self.0.insert(name.into(), value);
        self
    }

    /// Removes a claim (for example `sub` or `exp`, to test that they are required).
    pub fn without(mut self, name: &str) -> Claims {
        self.0.remove(name);
        self
    }

    pub fn role_arn(self, arn: &str) -> Claims {
        self.claim("role_arn", json!(arn))
    }

    pub fn roles(self, roles: &[&str]) -> Claims {
        self.claim("roles", json!(roles))
    }

    pub fn buckets(self, buckets: &[&str]) -> Claims {
        self.claim("buckets", json!(buckets))
    }

    pub fn iss(self, iss: &str) -> Claims {
        self.claim("iss", json!(iss))
    }

    pub fn aud(self, aud: &str) -> Claims {
        self.claim("aud", json!(aud))
    }

    /// `exp` = now + `seconds` (negative: already expired).
    pub fn expires_in(self, seconds: i64) -> Claims {
        self.claim("exp", json!(now() + seconds))
    }

    /// `nbf` = now + `seconds`.
    pub fn not_before_in(self, seconds: i64) -> Claims {
        self.claim("nbf", json!(now() + seconds))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The `exp` claim, if it is a number.
    pub fn exp(&self) -> Option<i64> {
        self.0.get("exp").and_then(Value::as_i64)
    }
}

/// An asymmetric signing key with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh RSA-2048 key for RS256.
    pub fn rsa(kid: &str) -> SigningKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate RSA key");
        let pkcs8 = pair.as_der().expect("RSA key as PKCS#8");
        // jsonwebtoken's aws-lc backend wants PKCS#1 (RSAPrivateKey) for RSA.
        let pkcs1 = pkcs8_inner_key(pkcs8.as_ref());
        SigningKey::new(Algorithm::RS256, kid, EncodingKey::from_rsa_der(&pkcs1))
    }

    /// A fresh P-256 key for ES256.
    pub fn ec(kid: &str) -> SigningKey {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate EC key");
        let pkcs8 = pair.to_pkcs8v1().expect("EC key as PKCS#8");
        SigningKey::new(
            Algorithm::ES256,
            kid,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
    }

    fn new(alg: Algorithm, kid: &str, encoding: EncodingKey) -> SigningKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let jwk = serde_json::to_value(&jwk).expect("JWK as JSON");
        SigningKey {
            alg,
            kid: kid.to_string(),
            encoding,
            jwk,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public key as a JWK (with `kid`, `alg`, `use`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }
}

/// `{"keys": [...]}` of the given keys' public JWKs.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>() })
}

/// The private key inside a PKCS#8 `PrivateKeyInfo` (SEQUENCE { version, algorithm, OCTET
/// STRING privateKey }): for RSA, the PKCS#1 `RSAPrivateKey`.
fn pkcs8_inner_key(der: &[u8]) -> Vec<u8> {
    /// Reads one DER TLV at `pos`: (tag, content start, content end).
    fn tlv(der: &[u8], pos: usize) -> (u8, usize, usize) {
        let tag = der[pos];
        let first = der[pos + 1] as usize;
        let (len, start) = if first < 0x80 {
            (first, pos + 2)
        } else {
            let n = first & 0x7f;
            let len = der[pos + 2..pos + 2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, pos + 2 + n)
        };
        (tag, start, start + len)
    }
    let (tag, seq_start, _) = tlv(der, 0);
    assert_eq!(tag, 0x30, "PKCS#8 is a SEQUENCE");
    let (_, _, version_end) = tlv(der, seq_start);
    let (_, _, algorithm_end) = tlv(der, version_end);
    let (tag, key_start, key_end) = tlv(der, algorithm_end);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey is an OCTET STRING");
    der[key_start..key_end].to_vec()
}

/// Signs claim sets with one key and default `iss` / `aud`.
#[derive(Clone)]
pub struct TokenMinter {
    alg: Algorithm,
    kid: Option<String>,
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    /// HS256 with a shared secret (the incident's deployment).
    pub fn hs256(secret: &str) -> TokenMinter {
        TokenMinter {
            alg: Algorithm::HS256,
            kid: None,
            key: EncodingKey::from_secret(secret.as_bytes()),
            issuer: None,
            audience: None,
        }
    }

    /// Signs with `key`, putting its `kid` in the header.
    pub fn with_key(key: &SigningKey) -> TokenMinter {
        TokenMinter {
            alg: key.alg,
            kid: Some(key.kid.clone()),
            key: key.encoding.clone(),
            issuer: None,
            audience: None,
        }
    }

    /// Default `iss` for claim sets that have none.
    pub fn issuer(mut self, iss: &str) -> TokenMinter {
        self.issuer = Some(iss.to_string());
        self
    }

    /// Default `aud` for claim sets that have none.
    pub fn audience(mut self, aud: &str) -> TokenMinter {
        self.audience = Some(aud.to_string());
        self
    }

    /// Overrides the algorithm (for example HS384 with an HS256 secret, to test the allowlist of
    /// algorithms).
    pub fn algorithm(mut self, alg: Algorithm) -> TokenMinter {
        self.alg = alg;
        self
    }

    /// Overrides the header's `kid`.
    pub fn kid(mut self, kid: Option<&str>) -> TokenMinter {
        self.kid = kid.map(str::to_string);
        self
    }

    /// A signed token.
    pub fn mint(&self, claims: &Claims) -> String {
        let mut map = claims.0.clone();
        if let Some(iss) = &self.issuer {
            map.entry("iss").or_insert_with(|| json!(iss));
        }
        if let Some(aud) = &self.audience {
            map.entry("aud").or_insert_with(|| json!(aud));
        }
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &Value::Object(map), &self.key).expect("sign JWT")
    }

    /// A token for `sub` granting `role_arn`, valid for an hour.
    pub fn for_role(&self, sub: &str, role_arn: &str) -> String {
        self.mint(&Claims::new(sub).role_arn(role_arn))
    }
}

/// An unsigned token (`alg: none`) with these claims: must always be refused.
pub fn unsigned_token(claims: &Claims) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims.0.clone()).to_string());
    format!("{header}.{payload}.")
}

/// A token with a hand-made header (for example `{"alg":"HS256","kid":"rsa-1"}`) signed with
/// HMAC-SHA256 over `secret`: the classic RS/HS key-confusion attack uses the RSA public key
/// bytes as the secret.
pub fn hs256_with_header(header: &Value, claims: &Claims, secret: &[u8]) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims.0.clone()).to_string());
    let signing_input = format!("{header}.{payload}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}
