//! Sealing: what the Redis store writes is useless to anyone who reads Redis without the key, and
//! what it reads back is exactly what a broker with the key wrote, under exactly that Redis key.
//!
//! Sealed value layout (all lengths fixed, so no parsing ambiguity):
//!
//! ```text
//! 0x01 | key id (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext of the JSON record + tag (16)
//! ```
//!
//! - The **key id** is the first 4 bytes of SHA-256 of the key. It tells which key sealed a value,
//!   so a rotation can proceed: the new key (`BROKER_CACHE_KEY`) seals, the old one
//!   (`BROKER_CACHE_KEY_PREVIOUS`) still opens what it sealed until those records expire.
//! - The **nonce** is 96 random bits per value. Records are few and short-lived, far below the
//!   2^32 values per key where random GCM nonces would start to risk a collision.
//! - The **associated data** is the Redis key name, so a value copied under another key (say a
//!   victim's session record under an attacker's session handle) fails authentication.
//!
//! With `--insecure-plaintext-cache` there is no key: values are `0x50 | JSON`. Each mode refuses
//! the other's values instead of guessing: a sealing broker never accepts an unauthenticated value
//! (anyone with write access to Redis could forge one), and a plaintext broker cannot open a
//! sealed one. Either refusal is [`StoreError::Unreadable`], never "absent".

use super::StoreError;
use crate::secret::Key32;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use zeroize::Zeroizing;

/// First byte of a value sealed with AES-256-GCM, layout v1.
const SEALED_V1: u8 = 0x01;
/// First byte of a plaintext JSON value (`--insecure-plaintext-cache`). ASCII `P`.
const PLAINTEXT_V1: u8 = 0x50;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// The hint every "cannot open" message carries, since a rotation done out of order is the
/// usual cause.
const KEY_HINT: &str = "check BROKER_CACHE_KEY, and during a key rotation set BROKER_CACHE_KEY_PREVIOUS to the old key";

/// One AES-256 key and its id.
struct SealKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

impl SealKey {
    fn new(bytes: &[u8]) -> Result<Self, String> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| "a cache key must be 32 bytes".to_string())?;
        Ok(Self {
            id,
            key: LessSafeKey::new(unbound),
        })
    }
}

enum Mode {
    Sealed {
        current: SealKey,
        previous: Vec<SealKey>,
    },
    Plaintext,
}

/// Turns records into stored bytes and back; see the module docs.
pub(crate) struct Sealer {
    mode: Mode,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::Sealed { current, previous } => f
                .debug_struct("Sealer")
                .field("mode", &"aes-256-gcm")
                .field("current_key_id", &hex::encode(current.id))
                .field(
                    "previous_key_ids",
                    &previous
                        .iter()
                        .map(|k| hex::encode(k.id))
                        .collect::<Vec<_>>(),
                )
                .finish(),
            Mode::Plaintext => f
                .debug_struct("Sealer")
                .field("mode", &"plaintext")
                .finish(),
        }
    }
}

impl Sealer {
    /// A sealer from 32-byte keys, the current one first (as in `Config::cache_keys`).
    pub(crate) fn from_keys(keys: &[Key32]) -> Result<Self, String> {
        let mut decoded = Vec::with_capacity(keys.len());
        for key in keys {
            decoded.push(SealKey::new(key.expose())?);
        }
        let mut keys = decoded.into_iter();
        let current = keys
            .next()
            .ok_or_else(|| "no cache key given".to_string())?;
        Ok(Self {
            mode: Mode::Sealed {
                current,
                previous: keys.collect(),
            },
        })
    }

    /// A sealer that stores JSON as is (`--insecure-plaintext-cache`).
    pub(crate) fn plaintext() -> Self {
        Self {
            mode: Mode::Plaintext,
        }
    }

    /// True when values are encrypted.
    pub(crate) fn is_sealed(&self) -> bool {
        matches!(self.mode, Mode::Sealed { .. })
    }

    /// The bytes to store for `value` under the Redis key `aad`.
    pub(crate) fn seal<T: Serialize>(&self, aad: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        // The JSON holds secrets (a credential's secret key and session token): wiped on drop.
        let json = Zeroizing::new(
            serde_json::to_vec(value)
                .map_err(|e| StoreError::Unavailable(format!("cannot encode a record: {e}")))?,
        );
        let current = match &self.mode {
            Mode::Plaintext => {
                let mut out = Vec::with_capacity(1 + json.len());
                out.push(PLAINTEXT_V1);
                out.extend_from_slice(&json);
                return Ok(out);
            }
            Mode::Sealed { current, .. } => current,
        };
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Unavailable("no randomness for a nonce".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + json.len() + TAG_LEN);
        out.push(SEALED_V1);
        out.extend_from_slice(&current.id);
        out.extend_from_slice(&nonce);
        let mut body = Vec::with_capacity(json.len() + TAG_LEN);
        body.extend_from_slice(&json);
        current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut body,
            )
            .map_err(|_| StoreError::Unavailable("sealing a record failed".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The record stored as `bytes` under the Redis key `aad`.
    pub(crate) fn open<T: DeserializeOwned>(
        &self,
        aad: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        let json: Zeroizing<Vec<u8>> = match (&self.mode, bytes.first()) {
            (Mode::Plaintext, Some(&PLAINTEXT_V1)) => Zeroizing::new(bytes[1..].to_vec()),
            (Mode::Plaintext, Some(&SEALED_V1)) => {
                return Err(unreadable(
                    "the value is sealed but this broker has no cache key (--insecure-plaintext-cache); set BROKER_CACHE_KEY (and BROKER_CACHE_KEY_PREVIOUS during a rotation)",
                ));
            }
            (Mode::Sealed { .. }, Some(&PLAINTEXT_V1)) => {
                return Err(unreadable(
                    "the value is stored in plaintext (written with --insecure-plaintext-cache) and is refused by a broker with BROKER_CACHE_KEY",
                ));
            }
            (Mode::Sealed { current, previous }, Some(&SEALED_V1)) => {
                if bytes.len() < HEADER_LEN + TAG_LEN {
                    return Err(unreadable("the sealed value is truncated"));
                }
                let id = &bytes[1..1 + KEY_ID_LEN];
                let key = std::iter::once(current)
                    .chain(previous.iter())
                    .find(|k| k.id == id)
                    .ok_or_else(|| {
                        unreadable(&format!(
                            "the value is sealed with an unknown key (key id {}); {KEY_HINT}",
                            hex::encode(id)
                        ))
                    })?;
                let nonce = Nonce::try_assume_unique_for_key(&bytes[1 + KEY_ID_LEN..HEADER_LEN])
                    .map_err(|_| unreadable("the sealed value has a bad nonce"))?;
                let mut body = Zeroizing::new(bytes[HEADER_LEN..].to_vec());
                let plain_len = key
                    .key
                    .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body)
                    .map_err(|_| {
                        unreadable(&format!(
                            "the sealed value fails authentication under key id {} (tampered, or copied from another key); {KEY_HINT}",
                            hex::encode(id)
                        ))
                    })?
                    .len();
                body.truncate(plain_len);
                body
            }
            (_, Some(v)) => {
                return Err(unreadable(&format!(
                    "unknown value format (version byte {v:#04x})"
                )));
            }
            (_, None) => return Err(unreadable("the value is empty")),
        };
        // serde_json's messages quote no input text, only positions and expectations.
        serde_json::from_slice(&json)
            .map_err(|e| unreadable(&format!("the record does not decode: {e}")))
    }
}

fn unreadable(msg: &str) -> StoreError {
    StoreError::Unreadable(msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    use crate::secret::Secret;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        secret: Secret,
    }

    fn rec() -> Rec {
        Rec {
            name: "alice".into(),
            secret: Secret::new("wJalrXUtnFEMI-very-secret"),
        }
    }

    fn key(byte: u8) -> Key32 {
        Key32::from([byte; 32])
    }

    fn sealer(keys: &[u8]) -> Sealer {
        Sealer::from_keys(&keys.iter().map(|b| key(*b)).collect::<Vec<_>>()).unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn round_trip_hides_the_plaintext() {
        let s = sealer(&[1]);
        let bytes = s.seal("cb:v1:cred:{x}", &rec()).unwrap();
        assert_eq!(bytes[0], SEALED_V1);
        assert!(!contains(&bytes, b"very-secret"));
        assert!(!contains(&bytes, b"alice"));
        assert_eq!(s.open::<Rec>("cb:v1:cred:{x}", &bytes).unwrap(), rec());
        // A fresh nonce each time: equal records give different bytes.
        assert_ne!(bytes, s.seal("cb:v1:cred:{x}", &rec()).unwrap());
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_seals_with_the_new_key() {
        let old = sealer(&[1]);
        let old_bytes = old.seal("k", &rec()).unwrap();
        let rotated = sealer(&[2, 1]);
        assert_eq!(rotated.open::<Rec>("k", &old_bytes).unwrap(), rec());
        let new_bytes = rotated.seal("k", &rec()).unwrap();
        assert_ne!(
            new_bytes[1..5],
            old_bytes[1..5],
            "new values carry the new key id"
        );
        // The old broker (not yet rolled) cannot read the new key's values, and says why.
        let err = old.open::<Rec>("k", &new_bytes).unwrap_err();
        assert!(
            matches!(&err, StoreError::Unreadable(m) if m.contains("BROKER_CACHE_KEY_PREVIOUS")),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_unreadable_and_names_the_previous_key_variable() {
        let bytes = sealer(&[1]).seal("k", &rec()).unwrap();
        let err = sealer(&[3]).open::<Rec>("k", &bytes).unwrap_err();
        match err {
            StoreError::Unreadable(m) => {
                assert!(m.contains("unknown key"), "{m}");
                assert!(m.contains("BROKER_CACHE_KEY_PREVIOUS"), "{m}");
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
    }

    #[test]
    fn any_flipped_bit_fails_authentication() {
        let s = sealer(&[1]);
        let bytes = s.seal("k", &rec()).unwrap();
        // Every byte after the key id: nonce, ciphertext, tag.
        for i in 1 + KEY_ID_LEN..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            let err = s.open::<Rec>("k", &t).unwrap_err();
            assert!(
                matches!(&err, StoreError::Unreadable(m) if m.contains("authentication")),
                "byte {i}: {err}"
            );
        }
        let err = s.open::<Rec>("k", &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(err, StoreError::Unreadable(_)));
        assert!(matches!(
            s.open::<Rec>("k", &[]).unwrap_err(),
            StoreError::Unreadable(_)
        ));
        assert!(matches!(
            s.open::<Rec>("k", &[0x7f, 1, 2]).unwrap_err(),
            StoreError::Unreadable(_)
        ));
    }

    #[test]
    fn a_value_moved_to_another_key_fails_authentication() {
        let s = sealer(&[1]);
        let bytes = s.seal("cb:v1:sess:{aaaa}", &rec()).unwrap();
        let err = s.open::<Rec>("cb:v1:sess:{bbbb}", &bytes).unwrap_err();
        assert!(
            matches!(&err, StoreError::Unreadable(m) if m.contains("authentication")),
            "{err}"
        );
    }

    #[test]
    fn plaintext_and_sealed_refuse_each_other() {
        let plain = Sealer::plaintext();
        let p = plain.seal("k", &rec()).unwrap();
        assert_eq!(p[0], PLAINTEXT_V1);
        assert_eq!(plain.open::<Rec>("k", &p).unwrap(), rec());
        let sealed = sealer(&[1]);
        let err = sealed.open::<Rec>("k", &p).unwrap_err();
        assert!(
            matches!(&err, StoreError::Unreadable(m) if m.contains("plaintext")),
            "{err}"
        );
        let s = sealed.seal("k", &rec()).unwrap();
        let err = plain.open::<Rec>("k", &s).unwrap_err();
        assert!(
            matches!(&err, StoreError::Unreadable(m) if m.contains("BROKER_CACHE_KEY")),
            "{err}"
        );
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let s = sealer(&[9, 8]);
        let dbg = format!("{s:?}");
        assert!(dbg.contains("aes-256-gcm"), "{dbg}");
        let raw = [9u8; 32];
        assert!(!dbg.contains(&hex::encode(raw)));
        use base64::Engine;
        for byte in [9u8, 8] {
            let b64 = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
            assert!(!dbg.contains(&b64), "{dbg}");
        }
    }
}
