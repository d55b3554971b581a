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
