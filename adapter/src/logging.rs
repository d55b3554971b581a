//! Log setup (text or JSON lines on stdout) with two guards against leaking session ids.
//!
//! The adapter's own events never carry a token, a secret or a raw session id. rmcp's do: it logs
//! `create new session` with the id at INFO and names sessions in some error lines. So rmcp gets
//! only WARN and above, without its spans, and every line passes through [`RedactingWriter`],
//! which replaces every session id (`mcps_` and 43 base64url characters, see `sessions`) with
//! `<session>`, and anything shaped like a UUID (the id format of rmcp's own manager, and of any
//! id rmcp might mint elsewhere) with `<uuid>`.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;
use crate::sessions::{SESSION_ID_PREFIX, SESSION_ID_RANDOM_CHARS};

/// Installs the global subscriber (`credbroker_kit::logging::init`, the one composing function:
/// another layer is one more element of `layers`). `RUST_LOG` refines the level (default `info`);
/// rmcp gets WARN+ events only, never its spans (a span carries the session id as a field).
pub fn init(format: LogFormat) {
    let _ = credbroker_kit::logging::init(credbroker_kit::logging::LogSetup {
        format,
        writer: RedactingWriter,
        ansi: false,
        json_spans: false,
        warn_only_targets: &["rmcp"],
        // Spans exported over OTLP when the OTEL_* variables ask for it (`telemetry`).
        layers: crate::telemetry::layer().into_iter().collect(),
    });
}

/// Hands each formatted line to stdout after redacting session ids and UUIDs.
#[derive(Clone, Copy)]
pub(crate) struct RedactingWriter;

impl<'a> MakeWriter<'a> for RedactingWriter {
    type Writer = RedactingLine;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine(Vec::with_capacity(256))
    }
}

/// One log event, buffered until it is complete.
pub(crate) struct RedactingLine(Vec<u8>);

impl Write for RedactingLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        let line = redact_ids(&self.0);
        let _ = io::stdout().lock().write_all(&line);
    }
}

/// Replaces every session id with `<session>` and every `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`
/// (hex) with `<uuid>`.
pub(crate) fn redact_ids(input: &[u8]) -> Vec<u8> {
    let prefix = SESSION_ID_PREFIX.as_bytes();
    let is_id_char = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    // A prefix and then the id's characters; a truncated id is redacted too (fail closed).
    let session_at = |at: usize| -> Option<usize> {
        if !input[at..].starts_with(prefix) {
            return None;
        }
        let body = input[at + prefix.len()..]
            .iter()
            .take(SESSION_ID_RANDOM_CHARS)
            .take_while(|b| is_id_char(b))
            .count();
        Some(prefix.len() + body)
    };
    const SHAPE: &[usize] = &[8, 4, 4, 4, 12];
    const LEN: usize = 36;
    let matches_at = |at: usize| -> bool {
        if at + LEN > input.len() {
            return false;
        }
        let mut pos = at;
        for (index, &group) in SHAPE.iter().enumerate() {
            if !input[pos..pos + group].iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            pos += group;
            if index + 1 < SHAPE.len() {
                if input[pos] != b'-' {
                    return false;
                }
                pos += 1;
            }
        }
        true
    };
    let mut output = Vec::with_capacity(input.len());
    let mut at = 0;
    while at < input.len() {
        if let Some(len) = session_at(at) {
            output.extend_from_slice(b"<session>");
            at += len;
        } else if matches_at(at) {
            output.extend_from_slice(b"<uuid>");
            at += LEN;
        } else {
            output.push(input[at]);
            at += 1;
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_redacted_and_the_rest_is_kept() {
        let line = b"create new session session_id=\"2f0c7a6e-58f7-4c84-a1c5-3c2f0f3e5d11\" tag=9f86d081884c\n";
        assert_eq!(
            String::from_utf8(redact_ids(line)).unwrap(),
            "create new session session_id=\"<uuid>\" tag=9f86d081884c\n"
        );
        assert_eq!(redact_ids(b"no ids here"), b"no ids here");
        assert_eq!(redact_ids(b"2f0c7a6e-58f7"), b"2f0c7a6e-58f7");
    }

    #[test]
    fn session_ids_are_redacted_whole_and_truncated() {
        let id = crate::sessions::new_session_id();
        let line = format!("Session not found: {id}, retry\n");
        assert_eq!(
            String::from_utf8(redact_ids(line.as_bytes())).unwrap(),
            "Session not found: <session>, retry\n"
        );
        let cut = format!("id={}\n", &id[..20]);
        assert_eq!(
            String::from_utf8(redact_ids(cut.as_bytes())).unwrap(),
            "id=<session>\n"
        );
        let two = format!("{id}{id}");
        assert_eq!(redact_ids(two.as_bytes()), b"<session><session>");
    }
}
