//! A PEM setting: the PEM text itself (ECS injects secrets as environment values) or a file path.
//!
//! The choice is made once, when the setting is parsed, into a [`PemSource`]; every reader (the
//! servers' TLS settings and both `healthcheck` subcommands) loads through [`PemSource::load`],
//! so a value that works for one works for all. The rule is by content, not by prefix: a value
//! holding a `-----BEGIN ` marker anywhere (after a comment line or a leading space too) is PEM
//! text, since no file path holds one; anything else is a path. Literal `\n` (as some secret
//! stores and `.env` files write them) become line breaks. A PEM value whose line breaks were
//! lost is refused by [`PemSource::load`], by name, without repeating the value (it may be a
//! private key), rather than opened as a file ("File name too long").

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

const MARKER: &str = "-----BEGIN ";

/// Where a PEM setting's bytes come from. `Debug` never shows inline text.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file to read; it must contain a PEM block.
    File(PathBuf),
    /// The PEM text itself, literal `\n` already turned into line breaks.
    Inline(String),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::Inline(_) => f.write_str("Inline(<pem>)"),
        }
    }
}

impl PemSource {
    /// Classifies a configured value (see the module documentation for the rule). Never fails
    /// on a PEM-looking value, so a parser's error (which clap prints with the value) cannot
    /// echo key material; [`PemSource::load`] refuses what cannot be used.
    pub fn parse(value: &OsStr) -> Result<PemSource, String> {
        if let Some(text) = value.to_str()
            && text.contains(MARKER)
        {
            let mut pem = text.trim().replace("\\n", "\n").trim_end().to_string();
            pem.push('\n');
            return Ok(PemSource::Inline(pem));
        }
        if value.is_empty() || value.to_str().is_some_and(|s| s.trim().is_empty()) {
            return Err("is empty; give a PEM file path or the PEM text".into());
        }
        Ok(PemSource::File(PathBuf::from(value)))
    }

    /// A clap value parser for PEM settings (`value_parser = PemSource::clap`).
    pub fn clap(value: &str) -> Result<PemSource, String> {
        PemSource::parse(OsStr::new(value.trim()))
    }

    /// The PEM bytes; `variable` names the setting in the error.
    pub fn load(&self, variable: &str) -> Result<Vec<u8>, ConfigError> {
        let bad = |message: String| ConfigError::new(variable, message);
        match self {
            Self::Inline(text) if !text.trim_end().contains('\n') => Err(bad(
                "looks like PEM text but has no line breaks (flattened?); give the PEM with its line breaks (or \\n) or a file path"
                    .into(),
            )),
            Self::Inline(text) => Ok(text.clone().into_bytes()),
            Self::File(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| bad(format!("cannot read {}: {e}", shown(path))))?;
                if !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                    return Err(bad(format!("{} is not a PEM file", shown(path))));
                }
                Ok(bytes)
            }
        }
    }
}

/// A configured path as an error may show it: a value that is rather key material pasted without
/// its `-----BEGIN ` line (several lines, or very long) is not repeated.
fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(['\n', '\r']) || text.len() > 256 {
        "the configured value (not a readable file path; not shown, it may be key material)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn load(value: &str) -> Result<Vec<u8>, ConfigError> {
        PemSource::parse(OsStr::new(value))
            .map_err(|m| ConfigError::new("X", m))?
            .load("X")
    }

    #[test]
    fn pem_text_is_inline_however_it_starts() {
        for value in [
            PEM.to_string(),
            format!("  {PEM}"),
            format!("# bundle\n{PEM}"),
            PEM.replace('\n', "\\n"),
        ] {
            assert!(
                matches!(
                    PemSource::parse(OsStr::new(&value)),
                    Ok(PemSource::Inline(_))
                ),
                "{value:?}"
            );
            let bytes = load(&value).unwrap();
            assert!(String::from_utf8(bytes).unwrap().contains("\nMIIB\n"));
        }
    }

    #[test]
    fn other_values_are_paths_and_flattened_pem_is_refused_without_echo() {
        assert_eq!(
            PemSource::parse(OsStr::new("/run/secrets/ca.pem")).unwrap(),
            PemSource::File(PathBuf::from("/run/secrets/ca.pem"))
        );
        let flat =
            "-----BEGIN PRIVATE KEY----- c2VjcmV0LWtleS1tYXRlcmlhbA== -----END PRIVATE KEY-----";
        let e = load(flat).unwrap_err().to_string();
        assert!(e.starts_with("X: ") && e.contains("no line breaks"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "the value is not echoed: {e}");
        assert!(!format!("{:?}", PemSource::clap(flat).unwrap()).contains("c2VjcmV0"));
        assert!(load("").is_err());
    }

    #[test]
    fn files_are_read_and_must_hold_pem() {
        let dir = std::env::temp_dir().join(format!("kit-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, PEM).unwrap();
        assert_eq!(load(good.to_str().unwrap()).unwrap(), PEM.as_bytes());
        let bad = dir.join("not.pem");
        std::fs::write(&bad, "hello").unwrap();
        let e = load(bad.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("not a PEM file"), "{e}");
        let e = load(dir.join("missing.pem").to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
