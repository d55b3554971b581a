//! Keyed hashes that let the broker name secrets without holding or showing them.
//!
//! - a **session handle** names a session id in logs, operator answers and store keys;
//! - a **credential id** names a credential key in the store, so a dump of Redis does not reveal
//!   who has credentials for which role;
//! - a **token fingerprint** tells whether a session's token changed without storing the token.
//!
//! All three are HMAC-SHA-256 under one key with a distinct label each (so a value of one kind can
//! never be passed off as another). Replicas that share a store must share the key; it is derived
//! from the cache key when one is configured.

use aws_lc_rs::hmac;
use std::fmt;

/// HMAC key plus the labels that separate its uses.
#[derive(Clone)]
pub struct KeyedHasher {
    key: hmac::Key,
}

impl fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyedHasher([redacted])")
    }
}

/// Hex-encoded keyed hash of a session id (128 bits). Safe to log.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SessionHandle(String);

impl SessionHandle {
    /// Accepts a handle typed by an operator: exactly 32 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
        .then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex string itself, without a copy (for an answer built from an owned record).
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hex-encoded keyed hash naming a credential in the store (160 bits). Safe to log; logs use
/// [`CredentialId::short`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CredentialId(String);

impl CredentialId {
    /// Its first 12 characters, enough to tell credentials apart in a log line (the whole id when
    /// a stored one is shorter: never a panic).
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for CredentialId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for CredentialId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for CredentialId {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl KeyedHasher {
    /// A hasher from key material (any length; 32 random bytes in practice).
    pub fn new(key_material: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key_material),
        }
    }

    /// The hasher of a running broker. Keyed by `handle_key` (BROKER_HANDLE_KEY) when set, else
    /// derived from the current `cache_key`, so every replica sharing a store computes the same
    /// handles; a shared store without either uses a fixed (insecure, logged) key; the memory
    /// store a key made at start. The keys were decoded when the configuration was read.
    pub fn for_store(
        handle_key: Option<&crate::secret::Key32>,
        cache_key: Option<&crate::secret::Key32>,
        shared_store: bool,
    ) -> Self {
        if let Some(key) = handle_key {
            return Self::new(key.expose());
        }
        if shared_store && cache_key.is_some() {
            tracing::warn!(
                "BROKER_HANDLE_KEY is not set: handles derive from BROKER_CACHE_KEY, so rotating the cache key forgets every session and revocation; set BROKER_HANDLE_KEY"
            );
        }
        match cache_key {
            Some(key) => {
                let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
                Self::new(hmac::sign(&k, b"credbroker/hash-key/v1").as_ref())
            }
            None if shared_store => {
                tracing::warn!(
                    "insecure plaintext cache: session handles use a fixed key; anyone with the store can link handles to session ids they know"
                );
                Self::new(b"credbroker/insecure-plaintext-cache")
            }
            None => Self::random(),
        }
    }

    /// A hasher with a key made at start: handles are stable only within this process.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::fill(&mut k);
        Self::new(&k)
    }

    /// The first `bytes` (at most 32) of the tag, as lowercase hex. Encoded into a stack buffer:
    /// two of these run on every warm request, and `hex::encode` builds its string a `char` at a
    /// time.
    fn tag(&self, label: &[u8], data: &[u8], bytes: usize) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(data);
        let tag = ctx.sign();
        let tag = &tag.as_ref()[..bytes.min(32)];
        let mut buf = [0u8; 64];
        let out = &mut buf[..tag.len() * 2];
        match hex::encode_to_slice(tag, out) {
            Ok(()) => String::from_utf8_lossy(out).into_owned(),
            // Unreachable (the buffer is exactly twice the tag); the slow path keeps it total.
            Err(_) => hex::encode(tag),
        }
    }

    /// The handle of a session id.
    pub fn session_handle(&self, session_id: &str) -> SessionHandle {
        SessionHandle(self.tag(b"credbroker/session-handle/v1", session_id.as_bytes(), 16))
    }

    /// The store name of a credential key (its canonical encoding).
    pub fn credential_id(&self, canonical_key: &[u8]) -> CredentialId {
        CredentialId(self.tag(b"credbroker/credential-id/v1", canonical_key, 20))
    }

    /// The store name of a principal's rate-limit bucket (issuer and subject): a dump of the store
    /// shows who is being limited to nobody without the key.
    pub fn subject_key(&self, issuer: &str, subject: &str) -> String {
        // Length-prefixed, so no issuer/subject pair can spell another.
        let mut data = Vec::with_capacity(issuer.len() + subject.len() + 8);
        data.extend_from_slice(&(issuer.len() as u64).to_be_bytes());
        data.extend_from_slice(issuer.as_bytes());
        data.extend_from_slice(subject.as_bytes());
        self.tag(b"credbroker/rate-subject/v1", &data, 16)
    }

    /// A fingerprint of a token; equal fingerprints mean the same token.
    pub fn token_fingerprint(&self, token: &str) -> String {
        self.tag(b"credbroker/token-fingerprint/v1", token.as_bytes(), 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_derive_one_key_and_the_handle_key_wins() {
        use crate::secret::Key32;
        let cache = Key32::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        let handle = Key32::from_base64("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
        let a = KeyedHasher::for_store(None, Some(&cache), true);
        let b = KeyedHasher::for_store(None, Some(&cache), true);
        assert_eq!(a.session_handle("sid-1"), b.session_handle("sid-1"));
        let h = KeyedHasher::for_store(Some(&handle), Some(&cache), true);
        assert_ne!(h.session_handle("sid-1"), a.session_handle("sid-1"));
        let m1 = KeyedHasher::for_store(None, None, false);
        let m2 = KeyedHasher::for_store(None, None, false);
        assert_ne!(m1.session_handle("sid-1"), m2.session_handle("sid-1"));
    }

    #[test]
    fn a_credential_id_is_logged_by_its_prefix_and_a_short_stored_one_does_not_panic() {
        let id = KeyedHasher::new(b"k").credential_id(b"scope");
        assert_eq!(id.len(), 40);
        assert_eq!(id.short(), &id.as_str()[..12]);
        assert_eq!(CredentialId::from("abc").short(), "abc");
        assert_eq!(CredentialId::from("").short(), "");
    }

    #[test]
    fn same_key_same_handle_other_key_other_handle() {
        let a = KeyedHasher::new(b"k1");
        let b = KeyedHasher::new(b"k1");
        let c = KeyedHasher::new(b"k2");
        assert_eq!(a.session_handle("s"), b.session_handle("s"));
        assert_ne!(a.session_handle("s"), c.session_handle("s"));
        assert_eq!(a.session_handle("s").as_str().len(), 32);
    }

    #[test]
    fn tags_are_the_lowercase_hex_of_the_hmac_prefix() {
        let h = KeyedHasher::new(b"k");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let full = hmac::sign(&key, b"credbroker/token-fingerprint/v1\0tok");
        assert_eq!(
            h.token_fingerprint("tok"),
            hex::encode(&full.as_ref()[..20])
        );
        assert_eq!(
            h.tag(b"l", b"d", 40).len(),
            64,
            "a longer ask is capped at the whole tag"
        );
    }

    #[test]
    fn labels_separate_uses() {
        let h = KeyedHasher::new(b"k");
        assert_ne!(
            h.session_handle("x").as_str(),
            &h.token_fingerprint("x")[..32]
        );
    }

    #[test]
    fn handle_parse_is_strict() {
        let h = KeyedHasher::new(b"k").session_handle("s");
        assert_eq!(SessionHandle::parse(h.as_str()), Some(h));
        assert!(SessionHandle::parse("xyz").is_none());
        assert!(SessionHandle::parse(&"A".repeat(32)).is_none());
    }
}
