//! A PEM setting's value: the PEM text itself (ECS injects secrets as environment values) or a
//! file path. The server's TLS settings and the `healthcheck` subcommand read theirs through
//! [`load`], so a value that works for one works for the other.
//!
//! Inline or path is decided by content, not by prefix: a value is PEM text when it contains a
//! `-----BEGIN ` marker and a line break (a real one, or a literal `\n` as some secret stores and
//! `.env` files write them). No file path contains both; a leading space or a comment line before
//! the marker does not turn PEM text into a "path". A value with a marker but no line break is
//! refused as flattened PEM rather than opened as a file (which failed with "File name too long").
//! Errors never echo a value that looks like PEM: it may be a private key.

use std::ffi::OsStr;
use std::path::Path;

const MARKER: &str = "-----BEGIN ";

/// Where a PEM setting's bytes come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PemValue<'a> {
    /// The PEM text itself, line breaks restored.
    Inline(&'a str),
    /// A file to read.
    Path(&'a Path),
}

impl std::fmt::Debug for PemValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<pem>)"),
            Self::Path(p) => write!(f, "Path({})", p.display()),
        }
    }
}

/// Classifies a configured value (see the module documentation for the rule).
pub(crate) fn classify(value: &OsStr) -> Result<PemValue<'_>, String> {
    if let Some(text) = value.to_str()
        && text.contains(MARKER)
    {
        if text.contains('\n') || text.contains("\\n") {
            return Ok(PemValue::Inline(text));
        }
        return Err(
            "looks like PEM text but has no line breaks (flattened?); give the PEM with its line breaks (or \\n) or a file path"
                .into(),
        );
    }
    if value.is_empty() {
        return Err("is empty; give a PEM file path or the PEM text".into());
    }
    Ok(PemValue::Path(Path::new(value)))
}

/// The PEM bytes of a configured value: the inline text (with literal `\n` turned into line
/// breaks), or the file's contents, which must contain a PEM block.
pub fn load(value: &OsStr) -> Result<Vec<u8>, String> {
    match classify(value)? {
        PemValue::Inline(text) => {
            let mut pem = text.trim().replace("\\n", "\n");
            pem.push('\n');
            Ok(pem.into_bytes())
        }
        PemValue::Path(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", shown(path)))?;
            if !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                return Err(format!("{} is not a PEM file", shown(path)));
            }
            Ok(bytes)
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

    #[test]
    fn pem_text_is_inline_however_it_starts() {
        for value in [
            PEM.to_string(),
            format!("  {PEM}"),
            format!("# bundle\n{PEM}"),
            PEM.replace('\n', "\\n"),
        ] {
            assert!(
                matches!(classify(OsStr::new(&value)), Ok(PemValue::Inline(_))),
                "{value:?}"
            );
            let bytes = load(OsStr::new(&value)).unwrap();
            assert!(String::from_utf8(bytes).unwrap().contains("\nMIIB\n"));
        }
    }

    #[test]
    fn other_values_are_paths_and_flattened_pem_is_refused_without_echo() {
        assert_eq!(
            classify(OsStr::new("/run/secrets/ca.pem")).unwrap(),
            PemValue::Path(Path::new("/run/secrets/ca.pem"))
        );
        let flat =
            "-----BEGIN PRIVATE KEY----- c2VjcmV0LWtleS1tYXRlcmlhbA== -----END PRIVATE KEY-----";
        let e = load(OsStr::new(flat)).unwrap_err();
        assert!(e.contains("no line breaks"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "the value is not echoed: {e}");
        assert!(load(OsStr::new("")).is_err());
    }

    #[test]
    fn files_are_read_and_must_hold_pem() {
        let dir = std::env::temp_dir().join(format!("broker-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, PEM).unwrap();
        assert_eq!(load(good.as_os_str()).unwrap(), PEM.as_bytes());
        let bad = dir.join("not.pem");
        std::fs::write(&bad, "hello").unwrap();
        assert!(
            load(bad.as_os_str())
                .unwrap_err()
                .contains("not a PEM file")
        );
        assert!(
            load(dir.join("missing.pem").as_os_str())
                .unwrap_err()
                .contains("cannot read")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
