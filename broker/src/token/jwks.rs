//! Signing keys from a JWKS document (file or URL), with rotation that needs no restart.
//!
//! A token whose `kid` is unknown triggers a refetch, at most once per `min_refetch`, so a key
//! the identity provider just published is picked up on first sight while a flood of tokens with
//! made-up `kid`s cannot turn the broker into a load generator against the provider.

use super::TokenError;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(url::Url),
}

/// One usable key: its declared algorithm (if the JWK names one) and the decoding key.
#[derive(Clone)]
struct KeyEntry {
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

/// The parsed key set. Keys without `kid` are kept apart: they are only usable by tokens without
/// a `kid`, and only when exactly one of them fits the token's algorithm.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, KeyEntry>,
    anonymous: Vec<KeyEntry>,
}

/// Why a key set could not be loaded. Surfaces at start (fatal) or on refetch (logged; the
/// previous keys stay in use).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("could not read JWKS file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("could not fetch JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("JWKS document is not a valid key set: {0}")]
    Parse(String),
    #[error("JWKS document holds no usable key")]
    Empty,
}

/// A cached JWKS with rate-limited refetch on unknown `kid`.
pub struct Jwks {
    source: JwksSource,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    last_fetch: tokio::sync::Mutex<Instant>,
    min_refetch: Duration,
}

impl Jwks {
    /// Loads the key set once; a broker that cannot read its keys does not start.
    pub async fn load(source: JwksSource, min_refetch: Duration) -> Result<Self, JwksError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| JwksError::Fetch {
                url: "-".into(),
                reason: e.to_string(),
            })?;
        let keys = fetch(&source, &http).await?;
        Ok(Self {
            source,
            http,
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
            min_refetch,
        })
    }

    /// The key that verifies a token with this header, refetching once if the `kid` is unknown.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, TokenError> {
        match self.lookup(kid, alg) {
            Err(TokenError::UnknownKey) => {}
            other => return other,
        }
        self.refetch().await;
        self.lookup(kid, alg)
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, TokenError> {
        let set = self.keys.read().expect("jwks lock poisoned").clone();
        let entry = match kid {
            Some(kid) => set.by_kid.get(kid).cloned().ok_or(TokenError::UnknownKey)?,
            None => {
                let fits: Vec<&KeyEntry> = set
                    .anonymous
                    .iter()
                    .chain(set.by_kid.values())
                    .filter(|e| fits(e, alg))
                    .collect();
                match fits.as_slice() {
                    [one] => (*one).clone(),
                    [] => return Err(TokenError::UnknownKey),
                    _ => return Err(TokenError::KidRequired),
                }
            }
        };
        if !fits(&entry, alg) {
            return Err(TokenError::KeyAlgorithmMismatch(alg));
        }
        Ok(entry.key)
    }

    /// Refetches unless the last fetch was less than `min_refetch` ago. Failures keep the old
    /// keys: a provider outage must not log every user out.
    async fn refetch(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.elapsed() < self.min_refetch {
            return;
        }
        *last = Instant::now();
        match fetch(&self.source, &self.http).await {
            Ok(keys) => {
                tracing::info!(
                    keys = keys.by_kid.len() + keys.anonymous.len(),
                    "JWKS refetched"
                );
                *self.keys.write().expect("jwks lock poisoned") = Arc::new(keys);
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refetch failed; keeping the previous keys"),
        }
    }
}

/// A key fits an algorithm when its family matches and, if the JWK names an algorithm, it is
/// that one. This is what stops RS/HS key confusion at the key level as well.
fn fits(entry: &KeyEntry, alg: Algorithm) -> bool {
    entry.key.family() == alg.family() && entry.alg.is_none_or(|a| a == alg)
}

async fn fetch(source: &JwksSource, http: &reqwest::Client) -> Result<KeySet, JwksError> {
    let body = match source {
        JwksSource::File(path) => std::fs::read(path).map_err(|e| JwksError::File {
            path: path.display().to_string(),
            source: e,
        })?,
        JwksSource::Url(url) => {
            let fetch_err = |reason: String| JwksError::Fetch {
                url: url.to_string(),
                reason,
            };
            let resp = http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| fetch_err(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(fetch_err(format!("HTTP {}", resp.status())));
            }
            resp.bytes()
                .await
                .map_err(|e| fetch_err(e.to_string()))?
                .to_vec()
        }
    };
    parse(&body)
}

/// Parses a JWKS document; keys of unsupported types are skipped, not fatal.
fn parse(body: &[u8]) -> Result<KeySet, JwksError> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| JwksError::Parse(e.to_string()))?;
    let mut out = KeySet::default();
    for jwk in &set.keys {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let entry = KeyEntry {
            alg,
            key: Arc::new(key),
        };
        match &jwk.common.key_id {
            Some(kid) => {
                out.by_kid.insert(kid.clone(), entry);
            }
            None => out.anonymous.push(entry),
        }
    }
    if out.by_kid.is_empty() && out.anonymous.is_empty() {
        return Err(JwksError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig",
      "n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw","e":"AQAB"}]}"#;

    #[test]
    fn parses_rsa_key_with_kid() {
        let set = parse(RSA_JWK.as_bytes()).unwrap();
        assert!(set.by_kid.contains_key("k1"));
    }

    #[test]
    fn empty_set_is_an_error() {
        assert!(matches!(parse(br#"{"keys":[]}"#), Err(JwksError::Empty)));
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(parse(b"not json"), Err(JwksError::Parse(_))));
    }

    #[tokio::test]
    async fn rsa_key_does_not_fit_hs256() {
        let dir = std::env::temp_dir().join(format!("jwks-test-{}", std::process::id()));
        std::fs::write(&dir, RSA_JWK).unwrap();
        let jwks = Jwks::load(JwksSource::File(dir.clone()), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(jwks.key_for(Some("k1"), Algorithm::RS256).await.is_ok());
        assert!(matches!(
            jwks.key_for(Some("k1"), Algorithm::HS256).await,
            Err(TokenError::KeyAlgorithmMismatch(_))
        ));
        assert!(matches!(
            jwks.key_for(Some("nope"), Algorithm::RS256).await,
            Err(TokenError::UnknownKey)
        ));
        std::fs::remove_file(dir).ok();
    }

    /// An ES256 key pair: the JWK (public) and the encoding key (private).
    fn es256_key(kid: &str) -> (serde_json::Value, jsonwebtoken::EncodingKey) {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = serde_json::json!({"kty":"EC","crv":"P-256","kid":kid,"alg":"ES256","use":"sig",
            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65])});
        (jwk, jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()))
    }

    #[tokio::test]
    async fn unknown_kid_triggers_a_refetch_so_rotation_needs_no_restart() {
        use crate::secret::Secret;
        use crate::token::{TokenValidator, ValidatorConfig};
        let path = std::env::temp_dir().join(format!("jwks-rotate-{}.json", std::process::id()));
        let (jwk1, key1) = es256_key("k1");
        let (jwk2, key2) = es256_key("k2");
        std::fs::write(&path, serde_json::json!({"keys":[jwk1]}).to_string()).unwrap();
        let jwks = Jwks::load(JwksSource::File(path.clone()), Duration::ZERO)
            .await
            .unwrap();
        let v = TokenValidator::new(
            ValidatorConfig {
                algorithms: vec![Algorithm::ES256],
                issuers: vec![],
                audiences: vec![],
                leeway_secs: 0,
                tag_claims: vec![],
            },
            None,
            Some(jwks),
        );
        let sign = |kid: &str, key: &jsonwebtoken::EncodingKey| {
            let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
            h.kid = Some(kid.into());
            let exp = jsonwebtoken::get_current_timestamp() + 60;
            Secret::new(
                jsonwebtoken::encode(&h, &serde_json::json!({"sub":"alice","exp":exp}), key)
                    .unwrap(),
            )
        };
        assert!(v.validate(&sign("k1", &key1)).await.is_ok());
        assert_eq!(
            v.validate(&sign("k2", &key2)).await,
            Err(TokenError::UnknownKey)
        );
        // The provider publishes k2: the next token with k2 triggers a refetch and passes.
        std::fs::write(&path, serde_json::json!({"keys":[jwk2]}).to_string()).unwrap();
        assert!(v.validate(&sign("k2", &key2)).await.is_ok());
        // A token signed by k2's key but claiming kid k1 (now gone) is refused.
        assert_eq!(
            v.validate(&sign("k1", &key2)).await,
            Err(TokenError::UnknownKey)
        );
        std::fs::remove_file(path).ok();
    }

    #[tokio::test]
    async fn refetch_is_rate_limited() {
        let path = std::env::temp_dir().join(format!("jwks-rate-{}.json", std::process::id()));
        let (jwk1, _) = es256_key("k1");
        let (jwk2, _) = es256_key("k2");
        std::fs::write(&path, serde_json::json!({"keys":[jwk1]}).to_string()).unwrap();
        let jwks = Jwks::load(JwksSource::File(path.clone()), Duration::from_secs(3600))
            .await
            .unwrap();
        std::fs::write(&path, serde_json::json!({"keys":[jwk2]}).to_string()).unwrap();
        assert!(matches!(
            jwks.key_for(Some("k2"), Algorithm::ES256).await,
            Err(TokenError::UnknownKey)
        ));
        std::fs::remove_file(path).ok();
    }
}
