//! A string that must never be shown: tokens, secret keys, session tokens, session ids.
//!
//! `Secret` redacts itself in `Debug` and `Display` and is wiped from memory when dropped, so a
//! stray `{:?}` in a log line or an error message shows `[redacted]` instead of the value. Reading
//! the value takes an explicit [`Secret::expose`], which is easy to find in review.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

/// A secret string. Serializes transparently (the store seals what it writes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must not be shown.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Every call site is a place where the secret leaves its type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no value was given (an empty protobuf string field).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in bytes; safe to log.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// Lets clap parse flags and environment variables straight into a `Secret`.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("AKIA-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "AKIA-very-secret");
    }
}

/// A 32-byte key (`BROKER_CACHE_KEY`, `_PREVIOUS`, `BROKER_HANDLE_KEY`): decoded from base64 ONCE,
/// when the configuration is read, and handed around as bytes from then on (sealing, keyed
/// hashes), so no later step can fail on it. Wiped when dropped; never printed.
#[derive(Clone)]
pub struct Key32(zeroize::Zeroizing<[u8; 32]>);

/// Why a configured value is not a 32-byte key (the value itself is never shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("is not valid base64 (generate one with: openssl rand -base64 32)")]
    NotBase64,
    #[error("must decode to 32 bytes, got {0}")]
    WrongLength(usize),
}

impl Key32 {
    /// Decodes standard base64 (surrounding whitespace ignored) into exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Key32, KeyError> {
        use base64::Engine;
        let bytes = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::NotBase64)?,
        );
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(KeyError::WrongLength(bytes.len()));
        }
        key.copy_from_slice(&bytes);
        Ok(Key32(key))
    }

    /// The key's bytes. Every call site is a place where the key leaves its type.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for Key32 {
    fn from(bytes: [u8; 32]) -> Self {
        Key32(zeroize::Zeroizing::new(bytes))
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([redacted])")
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn a_key_is_decoded_once_and_never_printed() {
        let text = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let key = Key32::from_base64(&format!(" {text}\n")).unwrap();
        assert_eq!(key.expose(), b"0123456789abcdef0123456789abcdef");
        assert_eq!(format!("{key:?}"), "Key32([redacted])");
        assert_eq!(Key32::from_base64("%%").unwrap_err(), KeyError::NotBase64);
        assert_eq!(
            Key32::from_base64("c2hvcnQ=").unwrap_err(),
            KeyError::WrongLength(5)
        );
    }
}
