//! Signing keys from a JWKS document (file, URL, or found through OIDC discovery), with rotation
//! that needs no restart.
//!
//! - A token whose `kid` is unknown triggers a refetch, at most once per `min_refetch`, so a key
//!   the identity provider just published is picked up on first sight while a flood of tokens with
//!   made-up `kid`s cannot turn the broker into a load generator against the provider.
//! - The set is also refetched on a timer — after the document's `Cache-Control: max-age`,
//!   clamped to [`MIN_REFRESH`]..[`MAX_REFRESH`], [`DEFAULT_REFRESH`] without one — so a key the
//!   provider removed (a leaked key, a retired one) stops being trusted without a restart.
//! - Fetching is hardened as Vault's JWT plugin and agentgateway do: `https` only (plain `http`
//!   only to a loopback host or with `BROKER_JWKS_ALLOW_HTTP=true`), no redirects, at most
//!   [`MAX_DOCUMENT_BYTES`] per document and a timeout.
//! - `BROKER_OIDC_ISSUER_URL`: the key set's address comes from the issuer's
//!   `/.well-known/openid-configuration`, whose `issuer` must equal the configured one exactly
//!   (OpenID Connect Discovery 1.0 §4.3), so a document served for another issuer is refused.

use super::TokenError;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Largest JWKS or discovery document read; real ones are a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Shortest timer refresh, whatever `max-age` says (a `max-age=0` must not mean a fetch per token).
pub const MIN_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Longest timer refresh: a removed key is distrusted within a day at the latest.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Timer refresh when the document says nothing (a file, or no `Cache-Control: max-age`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// How soon a failed timer refresh is tried again (the previous keys stay in use meanwhile).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Time allowed for one HTTP fetch, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    /// A JWKS URL; `allow_http` permits plain http to a non-loopback host.
    Url {
        url: url::Url,
        allow_http: bool,
    },
    /// OIDC discovery from this issuer (the exact `iss` string); `allow_http` as above, for the
    /// issuer and the `jwks_uri` it names.
    Oidc {
        issuer: String,
        allow_http: bool,
    },
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
#[non_exhaustive]
pub enum JwksError {
    #[error("could not read JWKS file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("could not fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error(
        "{url}: plain http is only allowed to a loopback host; use https, or set BROKER_JWKS_ALLOW_HTTP=true"
    )]
    InsecureUrl { url: String },
    #[error("OIDC discovery for BROKER_OIDC_ISSUER_URL {issuer}: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("JWKS document is not a valid key set: {0}")]
    Parse(String),
    #[error("JWKS document holds no usable key")]
    Empty,
}

/// A cached JWKS with rate-limited refetch on unknown `kid` and a refresh timer.
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    source: JwksSource,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Serializes fetches; holds when the last one started.
    last_fetch: tokio::sync::Mutex<Instant>,
    min_refetch: Duration,
    /// When the timer refreshes next.
    next_refresh: std::sync::Mutex<Instant>,
}

/// Is `url` allowed as a key source: https, or http to a loopback host, or http when allowed?
pub fn check_url(url: &url::Url, allow_http: bool) -> Result<(), JwksError> {
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback || allow_http => Ok(()),
        _ => Err(JwksError::InsecureUrl {
            url: url.to_string(),
        }),
    }
}

/// The timer refresh after a document with this `Cache-Control` header: its `max-age`, clamped.
pub(crate) fn refresh_after(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|v| {
        v.split(',').find_map(|d| {
            let (name, value) = d.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
    });
    match max_age {
        Some(secs) => Duration::from_secs(secs).clamp(MIN_REFRESH, MAX_REFRESH),
        None => DEFAULT_REFRESH,
    }
}

/// TLS for key-set fetches: rustls with the process's one crypto provider (aws-lc-rs, the only
/// one compiled in, so `builder()` selects it without a global install) and the Mozilla roots,
/// the roots reqwest's `rustls-tls` feature used before.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Jwks {
    /// Loads the key set once (a broker that cannot read its keys does not start) and starts the
    /// refresh timer, which ends when the `Jwks` is dropped.
    pub async fn load(source: JwksSource, min_refetch: Duration) -> Result<Self, JwksError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Fetch {
                url: "-".into(),
                reason: e.to_string(),
            })?;
        let (keys, refresh) = fetch(&source, &http).await?;
        let now = Instant::now();
        let inner = Arc::new(Inner {
            source,
            http,
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: tokio::sync::Mutex::new(now),
            min_refetch,
            next_refresh: std::sync::Mutex::new(now + refresh),
        });
        tokio::spawn(timer(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The key that verifies a token with this header, refetching once if the `kid` is unknown.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, TokenError> {
        match self.inner.lookup(kid, alg) {
            Err(TokenError::UnknownKey) => {}
            other => return other,
        }
        self.inner.refetch().await;
        self.inner.lookup(kid, alg)
    }

    /// Refetches if the timer refresh is due at `now` (what the timer task calls; tests call it
    /// with a later instant instead of waiting). Returns whether a fetch was made.
    pub async fn refresh_if_due(&self, now: Instant) -> bool {
        self.inner.refresh_if_due(now).await
    }
}

/// The refresh timer: sleeps until the next refresh is due, refreshes, and stops once the key set
/// is gone.
async fn timer(inner: Weak<Inner>) {
    loop {
        let due = match inner.upgrade() {
            Some(i) => i.next_due(),
            None => return,
        };
        tokio::time::sleep_until(due).await;
        match inner.upgrade() {
            Some(i) => {
                i.refresh_if_due(Instant::now()).await;
            }
            None => return,
        }
    }
}

impl Inner {
    /// When the timer refreshes next.
    fn next_due(&self) -> Instant {
        *self
            .next_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, TokenError> {
        let set = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
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
        self.fetch_and_swap(*last, "unknown kid").await;
    }

    async fn refresh_if_due(&self, now: Instant) -> bool {
        let mut last = self.last_fetch.lock().await;
        if now < self.next_due() {
            return false;
        }
        *last = Instant::now();
        self.fetch_and_swap(now, "timer").await;
        true
    }

    /// One fetch; on success the keys are replaced (a removed key is gone) and the timer is set
    /// from the document's max-age; on failure the old keys stay and the timer retries soon.
    async fn fetch_and_swap(&self, now: Instant, why: &'static str) {
        let next = match fetch(&self.source, &self.http).await {
            Ok((keys, refresh)) => {
                tracing::info!(
                    keys = keys.by_kid.len() + keys.anonymous.len(),
                    reason = why,
                    next_refresh_s = refresh.as_secs(),
                    "JWKS refetched"
                );
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                refresh
            }
            Err(e) => {
                tracing::warn!(error = %e, reason = why, "JWKS refetch failed; keeping the previous keys");
                RETRY_AFTER_FAILURE
            }
        };
        let mut due = self
            .next_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *due = now + next;
    }
}

/// A key fits an algorithm when its family matches and, if the JWK names an algorithm, it is
/// that one. This is what stops RS/HS key confusion at the key level as well.
fn fits(entry: &KeyEntry, alg: Algorithm) -> bool {
    entry.key.family() == alg.family() && entry.alg.is_none_or(|a| a == alg)
}

/// Reads the key set and how long it may be kept before the timer refetches it.
async fn fetch(
    source: &JwksSource,
    http: &reqwest::Client,
) -> Result<(KeySet, Duration), JwksError> {
    match source {
        JwksSource::File(path) => {
            let body = std::fs::read(path).map_err(|e| JwksError::File {
                path: path.display().to_string(),
                source: e,
            })?;
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(JwksError::Parse(format!(
                    "the file is {} bytes, over the {MAX_DOCUMENT_BYTES} accepted",
                    body.len()
                )));
            }
            Ok((parse(&body)?, DEFAULT_REFRESH))
        }
        JwksSource::Url { url, allow_http } => {
            check_url(url, *allow_http)?;
            let (body, cache_control) = get(http, url).await?;
            Ok((parse(&body)?, refresh_after(cache_control.as_deref())))
        }
        JwksSource::Oidc { issuer, allow_http } => {
            let jwks_uri = discover(http, issuer, *allow_http).await?;
            let (body, cache_control) = get(http, &jwks_uri).await?;
            Ok((parse(&body)?, refresh_after(cache_control.as_deref())))
        }
    }
}

/// The `jwks_uri` of `issuer`'s discovery document, after checking that the document names
/// exactly this issuer.
async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    allow_http: bool,
) -> Result<url::Url, JwksError> {
    let failed = |reason: String| JwksError::Discovery {
        issuer: issuer.to_string(),
        reason,
    };
    let address = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let url = url::Url::parse(&address).map_err(|e| failed(format!("not a URL: {e}")))?;
    check_url(&url, allow_http)?;
    let (body, _) = get(http, &url).await?;
    #[derive(serde::Deserialize)]
    struct Document {
        issuer: Option<String>,
        jwks_uri: Option<String>,
    }
    let doc: Document = serde_json::from_slice(&body)
        .map_err(|e| failed(format!("the discovery document is not JSON: {e}")))?;
    match doc.issuer.as_deref() {
        Some(named) if named == issuer => {}
        Some(_) => {
            return Err(failed(
                "the discovery document names another issuer (\"issuer\" must equal the setting exactly)"
                    .into(),
            ));
        }
        None => return Err(failed("the discovery document has no \"issuer\"".into())),
    }
    let jwks_uri = doc
        .jwks_uri
        .ok_or_else(|| failed("the discovery document has no \"jwks_uri\"".into()))?;
    let jwks_uri = url::Url::parse(&jwks_uri)
        .map_err(|e| failed(format!("\"jwks_uri\" is not a URL: {e}")))?;
    check_url(&jwks_uri, allow_http)?;
    Ok(jwks_uri)
}

/// One GET: success status only (a redirect is an error, not followed), at most
/// [`MAX_DOCUMENT_BYTES`] read. Returns the body and its `Cache-Control`.
async fn get(
    http: &reqwest::Client,
    url: &url::Url,
) -> Result<(Vec<u8>, Option<String>), JwksError> {
    let fetch_err = |reason: String| JwksError::Fetch {
        url: url.to_string(),
        reason,
    };
    let mut resp = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| fetch_err(e.without_url().to_string()))?;
    if resp.status().is_redirection() {
        return Err(fetch_err(format!(
            "HTTP {}: redirects are not followed; configure the final address",
            resp.status()
        )));
    }
    if !resp.status().is_success() {
        return Err(fetch_err(format!("HTTP {}", resp.status())));
    }
    let too_large = || fetch_err(format!("the document is over {MAX_DOCUMENT_BYTES} bytes"));
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let cache_control = resp
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| fetch_err(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, cache_control))
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

    use std::collections::HashMap as Map;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Status, extra header lines and body of one path's answer.
    type Answer = (u16, String, Vec<u8>);

    /// A loopback HTTP server answering each path with a fixed status, extra headers and body;
    /// the answers can be changed while it runs.
    #[derive(Clone, Default)]
    struct Server {
        routes: Arc<Mutex<Map<String, Answer>>>,
        port: u16,
    }

    impl Server {
        async fn start() -> Server {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = Server {
                port: listener.local_addr().unwrap().port(),
                ..Server::default()
            };
            let routes = server.routes.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let routes = routes.clone();
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&request);
                        let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                        let (status, headers, body) = routes
                            .lock()
                            .unwrap()
                            .get(&path)
                            .cloned()
                            .unwrap_or((404, String::new(), Vec::new()));
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&body).await;
                        let _ = stream.shutdown().await;
                    });
                }
            });
            server
        }

        fn base(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        fn route(&self, path: &str, status: u16, headers: &str, body: impl Into<Vec<u8>>) {
            self.routes
                .lock()
                .unwrap()
                .insert(path.to_string(), (status, headers.to_string(), body.into()));
        }

        fn url(&self, path: &str) -> JwksSource {
            JwksSource::Url {
                url: url::Url::parse(&format!("{}{path}", self.base())).unwrap(),
                allow_http: false,
            }
        }
    }

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
                types: vec![],
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

    #[test]
    fn only_https_or_loopback_http_is_a_key_source() {
        let ok = |u: &str, allow| check_url(&url::Url::parse(u).unwrap(), allow).is_ok();
        assert!(ok("https://idp.example.com/jwks", false));
        assert!(ok("http://127.0.0.1:8080/jwks", false));
        assert!(ok("http://localhost/jwks", false));
        assert!(ok("http://[::1]/jwks", false));
        assert!(!ok("http://idp.example.com/jwks", false));
        assert!(ok("http://idp.example.com/jwks", true));
        assert!(!ok("ftp://idp.example.com/jwks", true));
        let e = check_url(&url::Url::parse("http://idp/jwks").unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("BROKER_JWKS_ALLOW_HTTP"), "{e}");
    }

    #[test]
    fn max_age_sets_the_timer_within_its_bounds() {
        assert_eq!(refresh_after(None), DEFAULT_REFRESH);
        assert_eq!(refresh_after(Some("no-store")), DEFAULT_REFRESH);
        assert_eq!(
            refresh_after(Some("public, max-age=7200")),
            Duration::from_secs(7200)
        );
        assert_eq!(refresh_after(Some("max-age=0")), MIN_REFRESH);
        assert_eq!(refresh_after(Some("Max-Age=\"999999999\"")), MAX_REFRESH);
    }

    #[tokio::test]
    async fn a_key_the_provider_removed_stops_being_trusted_on_the_timer() {
        let server = Server::start().await;
        let (jwk1, _) = es256_key("k1");
        let (jwk2, _) = es256_key("k2");
        server.route(
            "/jwks",
            200,
            "Cache-Control: public, max-age=600\r\n",
            serde_json::json!({"keys":[jwk1, jwk2.clone()]}).to_string(),
        );
        // An unknown-kid refetch would not help here: k1 is known, so only the timer removes it.
        let jwks = Jwks::load(server.url("/jwks"), Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(jwks.key_for(Some("k1"), Algorithm::ES256).await.is_ok());
        server.route(
            "/jwks",
            200,
            "",
            serde_json::json!({"keys":[jwk2]}).to_string(),
        );
        let start = Instant::now();
        assert!(
            !jwks.refresh_if_due(start + Duration::from_secs(590)).await,
            "max-age=600: not due before 10 minutes"
        );
        assert!(jwks.key_for(Some("k1"), Algorithm::ES256).await.is_ok());
        assert!(jwks.refresh_if_due(start + Duration::from_secs(601)).await);
        assert!(matches!(
            jwks.key_for(Some("k1"), Algorithm::ES256).await,
            Err(TokenError::UnknownKey)
        ));
        assert!(jwks.key_for(Some("k2"), Algorithm::ES256).await.is_ok());
        // No max-age this time: the next refresh is an hour later.
        assert!(
            !jwks
                .refresh_if_due(start + Duration::from_secs(601) + DEFAULT_REFRESH / 2)
                .await
        );
    }

    #[tokio::test]
    async fn the_timer_task_refreshes_without_being_asked() {
        tokio::time::pause();
        let path = std::env::temp_dir().join(format!("jwks-timer-{}.json", std::process::id()));
        let (jwk1, _) = es256_key("k1");
        let (jwk2, _) = es256_key("k2");
        std::fs::write(&path, serde_json::json!({"keys":[jwk1]}).to_string()).unwrap();
        let jwks = Jwks::load(JwksSource::File(path.clone()), Duration::from_secs(3600))
            .await
            .unwrap();
        std::fs::write(&path, serde_json::json!({"keys":[jwk2]}).to_string()).unwrap();
        tokio::time::advance(DEFAULT_REFRESH + Duration::from_secs(1)).await;
        // The timer task runs its (file) fetch on this thread: yield until it has run.
        for _ in 0..1000 {
            if jwks.inner.lookup(Some("k2"), Algorithm::ES256).is_ok() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            jwks.inner.lookup(Some("k1"), Algorithm::ES256),
            Err(TokenError::UnknownKey)
        ));
        assert!(jwks.inner.lookup(Some("k2"), Algorithm::ES256).is_ok());
        std::fs::remove_file(path).ok();
    }

    #[tokio::test]
    async fn redirects_and_oversized_documents_are_refused() {
        let server = Server::start().await;
        server.route("/jwks", 200, "", RSA_JWK);
        server.route(
            "/moved",
            302,
            &format!("Location: {}/jwks\r\n", server.base()),
            "",
        );
        let e = Jwks::load(server.url("/moved"), Duration::ZERO)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("redirects are not followed"), "{e}");
        let mut big = br#"{"keys":[],"pad":""#.to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_DOCUMENT_BYTES));
        big.extend(br#""}"#);
        server.route("/big", 200, "", big);
        let e = Jwks::load(server.url("/big"), Duration::ZERO)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("over 262144 bytes"), "{e}");
        assert!(
            Jwks::load(server.url("/jwks"), Duration::ZERO)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn oidc_discovery_finds_the_keys_and_checks_the_issuer() {
        let server = Server::start().await;
        let issuer = format!("{}/tenant", server.base());
        server.route("/tenant/keys", 200, "", RSA_JWK);
        let discovery = |iss: &str| {
            serde_json::json!({"issuer": iss, "jwks_uri": format!("{}/tenant/keys", server.base())})
                .to_string()
        };
        server.route(
            "/tenant/.well-known/openid-configuration",
            200,
            "",
            discovery(&issuer),
        );
        let source = JwksSource::Oidc {
            issuer: issuer.clone(),
            allow_http: false,
        };
        let jwks = Jwks::load(source.clone(), Duration::ZERO).await.unwrap();
        assert!(jwks.key_for(Some("k1"), Algorithm::RS256).await.is_ok());
        // A document for another issuer (or a trailing-slash variant) is refused.
        server.route(
            "/tenant/.well-known/openid-configuration",
            200,
            "",
            discovery(&format!("{issuer}/")),
        );
        let e = Jwks::load(source.clone(), Duration::ZERO)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("names another issuer"), "{e}");
        // A jwks_uri over plain http to another host is refused.
        server.route(
            "/tenant/.well-known/openid-configuration",
            200,
            "",
            serde_json::json!({"issuer": issuer, "jwks_uri": "http://idp.example.com/keys"})
                .to_string(),
        );
        let e = Jwks::load(source, Duration::ZERO).await.err().unwrap();
        assert!(matches!(e, JwksError::InsecureUrl { .. }), "{e}");
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
