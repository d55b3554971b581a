//! The audit trail (`BROKER_AUDIT_LOG`): one JSON line per decision, hash-chained so that a
//! changed, removed or reordered line is found by `credential-broker audit verify`.
//!
//! Each line is a JSON object whose last two members are `prev` (the previous line's `hash`; 64
//! zeros for the first line of a file) and `hash`: SHA-256 (hex) of the line's exact bytes with the
//! `,"hash":"…"` member removed. Hashing the bytes as written, not a re-serialisation, means the
//! verifier needs no canonical JSON. At start the broker reads the last line of an existing file
//! and its `start` record links to it, so one file is one chain across restarts (`stdout` starts a
//! new chain at each start: its reader keeps the order).
//!
//! Fail closed: a record that cannot be written marks the log unhealthy; the broker then serves no
//! credential and no operator call (UNAVAILABLE naming the log) and reports NOT_SERVING, until a
//! retry (on the next decision, or the health poll) writes every pending line. Lines that failed
//! are kept (up to [`MAX_PENDING`]) and written first, in order, so the chain has no gap; beyond
//! that, records are counted and the first line after recovery says how many were lost.
//!
//! Never written: tokens, secret keys, session tokens, raw session ids (sessions are named by
//! their keyed handle), as Vault's audit devices hash what they must correlate.

use aws_lc_rs::digest;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Lines kept for a retry while the log cannot be written.
pub const MAX_PENDING: usize = 1024;

/// Where the audit trail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(PathBuf),
}

impl AuditTarget {
    /// `stdout` or a path.
    pub fn parse(value: &str) -> AuditTarget {
        match value.trim() {
            "stdout" | "-" => AuditTarget::Stdout,
            path => AuditTarget::File(PathBuf::from(path)),
        }
    }

    fn describe(&self) -> String {
        match self {
            AuditTarget::Stdout => "stdout".into(),
            AuditTarget::File(p) => p.display().to_string(),
        }
    }
}

/// Why the audit log cannot take a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(
        "the audit log (BROKER_AUDIT_LOG={0}) cannot be written; nothing is served until it can: free space or fix the path"
    )]
    Unwritable(String),
}

/// One decision. `None` fields are written as `null` for the core ones (every line has the same
/// core members) and left out for the others.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub outcome: &'static str,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub role_arn: Option<String>,
    /// The session's keyed handle, never its id.
    pub session: Option<String>,
    pub access_key_id: Option<String>,
    /// mTLS client name or remote address.
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// SessionAdmin method, for operator calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// The OpenTelemetry trace the decision was made in (32 hex digits), when traces are
    /// exported: ties the record to the request's spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Event {
    pub fn new(event: &'static str, outcome: &'static str) -> Event {
        Event {
            event,
            outcome,
            trace_id: crate::telemetry::trace_id(),
            ..Event::default()
        }
    }
}

/// The line as written: time first, then the event's members.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event,
}

struct Inner {
    out: Box<dyn Write + Send>,
    prev: String,
    pending: VecDeque<String>,
    lost: u64,
}

impl Inner {
    /// Writes every pending line in order; on success nothing is pending.
    fn drain(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch: String = self.pending.iter().map(String::as_str).collect();
        self.out.write_all(batch.as_bytes())?;
        self.out.flush()?;
        self.pending.clear();
        Ok(())
    }

    /// Chains `event` after the last line and queues it.
    #[allow(
        clippy::expect_used,
        reason = "a struct of strings and numbers always serialises to JSON"
    )]
    fn push(&mut self, event: &Event) {
        let body = serde_json::to_string(&Line {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            event,
        })
        .expect("an audit event serialises");
        let (line, hash) = chain(&body, &self.prev);
        self.prev = hash;
        self.pending.push_back(line);
    }
}

/// `body` (a JSON object) with `prev` and `hash` appended, and its hash.
fn chain(body: &str, prev: &str) -> (String, String) {
    let open = &body[..body.len() - 1];
    let unhashed = format!("{open},\"prev\":\"{prev}\"}}");
    let hash = hex::encode(digest::digest(&digest::SHA256, unhashed.as_bytes()));
    let line = format!(
        "{},\"hash\":\"{hash}\"}}\n",
        &unhashed[..unhashed.len() - 1]
    );
    (line, hash)
}

/// The audit log of this process.
pub struct AuditLog {
    inner: Mutex<Inner>,
    healthy: AtomicBool,
    target: String,
    /// `credential_served` sampling: the minute, and per session handle the access key recorded
    /// in it (a lookup by `&str`: no allocation on the warm path).
    served: Mutex<(i64, HashMap<String, String>)>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("target", &self.target)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

static GLOBAL: OnceLock<AuditLog> = OnceLock::new();

/// The process's audit log, when `BROKER_AUDIT_LOG` is set.
pub fn global() -> Option<&'static AuditLog> {
    GLOBAL.get()
}

/// Installs the process's audit log (once, at start).
pub fn install(log: AuditLog) -> &'static AuditLog {
    GLOBAL.get_or_init(|| log)
}

/// Records `event` in the process's audit log, if any.
pub fn record(event: &Event) -> Result<(), AuditError> {
    match global() {
        Some(log) => log.record(event),
        None => Ok(()),
    }
}

/// Fails when the process's audit log cannot be written (after one retry of what is pending).
pub fn ready() -> Result<(), AuditError> {
    match global() {
        Some(log) => log.ready(),
        None => Ok(()),
    }
}

impl AuditLog {
    /// Opens the target (append; created 0600 if missing) and links to the file's last line.
    /// An error here stops the broker at start: it names BROKER_AUDIT_LOG.
    pub fn open(target: &AuditTarget) -> Result<AuditLog, String> {
        match target {
            AuditTarget::Stdout => Ok(AuditLog::with_writer(
                Box::new(std::io::stdout()),
                GENESIS.to_string(),
                "stdout".into(),
            )),
            AuditTarget::File(path) => {
                let prev = last_hash(path).map_err(|e| {
                    format!(
                        "BROKER_AUDIT_LOG: cannot read {} to continue its chain: {e}",
                        path.display()
                    )
                })?;
                let mut options = std::fs::OpenOptions::new();
                options.append(true).create(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let file = options.open(path).map_err(|e| {
                    format!(
                        "BROKER_AUDIT_LOG: cannot open {} for appending: {e}",
                        path.display()
                    )
                })?;
                Ok(AuditLog::with_writer(
                    Box::new(file),
                    prev.unwrap_or_else(|| GENESIS.to_string()),
                    target.describe(),
                ))
            }
        }
    }

    /// A log over any writer (tests use one that fails on demand).
    pub fn with_writer(out: Box<dyn Write + Send>, prev: String, target: String) -> AuditLog {
        AuditLog {
            inner: Mutex::new(Inner {
                out,
                prev,
                pending: VecDeque::new(),
                lost: 0,
            }),
            healthy: AtomicBool::new(true),
            target,
            served: Mutex::new((0, HashMap::new())),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn error(&self) -> AuditError {
        AuditError::Unwritable(self.target.clone())
    }

    /// Writes one record (after anything pending). `Err`: it is not on disk, and the caller must
    /// not act on the decision it records.
    pub fn record(&self, event: &Event) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.pending.len() >= MAX_PENDING {
            inner.lost += 1;
        } else {
            inner.push(event);
        }
        self.flush_locked(&mut inner)
    }

    /// Retries what is pending; Ok when the log is writable.
    pub fn ready(&self) -> Result<(), AuditError> {
        if self.is_healthy() {
            return Ok(());
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.flush_locked(&mut inner)
    }

    fn flush_locked(&self, inner: &mut Inner) -> Result<(), AuditError> {
        match inner.drain() {
            Ok(()) => {
                if inner.lost > 0 {
                    let lost = std::mem::take(&mut inner.lost);
                    let mut gap = Event::new("audit_records_lost", "error");
                    gap.lost = Some(lost);
                    gap.reason = Some("records made while the audit log could not be written and more were pending than kept".into());
                    inner.push(&gap);
                    if inner.drain().is_err() {
                        return self.fail();
                    }
                }
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(audit_log = %self.target, "audit log writable again; serving");
                }
                Ok(())
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(audit_log = %self.target, error = %e, "audit log write failed; refusing every credential and operator call until it works");
                }
                Err(self.error())
            }
        }
    }

    fn fail(&self) -> Result<(), AuditError> {
        self.healthy.store(false, Ordering::Release);
        Err(self.error())
    }

    /// Whether a `credential_served` record is due for this session and key: the first serve of
    /// each (session, access key) per wall-clock minute is recorded, the rest are not.
    pub fn sample_served(&self, handle: &str, access_key_id: &str) -> bool {
        let minute = crate::clock::now_ms() / 60_000;
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if served.0 != minute {
            served.0 = minute;
            served.1.clear();
        }
        if served.1.get(handle).is_some_and(|k| k == access_key_id) {
            return false;
        }
        served
            .1
            .insert(handle.to_string(), access_key_id.to_string());
        true
    }

    /// Forgets that a serve was sampled (its record could not be written).
    pub fn unsample_served(&self, handle: &str, access_key_id: &str) {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if served.1.get(handle).is_some_and(|k| k == access_key_id) {
            served.1.remove(handle);
        }
    }
}

/// The `hash` of the last line of `path`, if the file exists and has one. The last line is read
/// from the file's tail only.
fn last_hash(path: &Path) -> std::io::Result<Option<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let from = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = String::new();
    file.take(64 * 1024).read_to_string(&mut tail)?;
    let last = tail.lines().rev().find(|l| !l.trim().is_empty());
    Ok(last.map(|l| match split_hash(l) {
        Some((_, hash)) => hash.to_string(),
        // A torn last line (a crash mid-write): chain to the hash of its bytes, so the verifier
        // reports that line and nothing after it.
        None => hex::encode(digest::digest(&digest::SHA256, l.as_bytes())),
    }))
}

/// `(line without its hash member, hash)` when the line ends with `,"hash":"<64 hex>"}`.
fn split_hash(line: &str) -> Option<(String, &str)> {
    const SUFFIX: usize = ",\"hash\":\"\"}".len() + 64;
    if line.len() < SUFFIX + 2 || !line.is_char_boundary(line.len() - SUFFIX) {
        return None;
    }
    let (head, tail) = line.split_at(line.len() - SUFFIX);
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((format!("{head}}}"), hash))
}

/// Why a file's chain is broken, naming the first bad line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error(
        "line {0}: not an audit record (expected a JSON object ending with \"prev\" and \"hash\")"
    )]
    Malformed(usize),
    #[error("line {0}: its hash does not match its content (the line was changed)")]
    Changed(usize),
    #[error(
        "line {line}: \"prev\" does not match the previous line's hash (a line was removed, inserted or reordered before it)"
    )]
    Broken { line: usize },
    #[error(
        "the last line's hash is {found}, not the expected {expected} (lines were removed from the end)"
    )]
    Truncated { found: String, expected: String },
    #[error("the file holds no audit record")]
    Empty,
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// Checks a whole file; returns the number of records and the last hash.
pub fn verify(path: &Path, last: Option<&str>) -> Result<(usize, String), VerifyError> {
    let file = std::fs::File::open(path).map_err(|e| VerifyError::Io(e.to_string()))?;
    let mut prev = GENESIS.to_string();
    let mut count = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| VerifyError::Io(e.to_string()))?;
        let (unhashed, hash) = split_hash(&line).ok_or(VerifyError::Malformed(n))?;
        let value: serde_json::Value =
            serde_json::from_str(&unhashed).map_err(|_| VerifyError::Malformed(n))?;
        let claimed_prev = value
            .get("prev")
            .and_then(|v| v.as_str())
            .ok_or(VerifyError::Malformed(n))?;
        let computed = hex::encode(digest::digest(&digest::SHA256, unhashed.as_bytes()));
        if computed != hash {
            return Err(VerifyError::Changed(n));
        }
        if claimed_prev != prev {
            return Err(VerifyError::Broken { line: n });
        }
        prev = hash.to_string();
        count += 1;
    }
    if count == 0 {
        return Err(VerifyError::Empty);
    }
    if let Some(expected) = last
        && expected != prev
    {
        return Err(VerifyError::Truncated {
            found: prev,
            expected: expected.to_string(),
        });
    }
    Ok((count, prev))
}

/// Flags of `audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// `audit` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Exit 0 when FILE's hash chain is whole; otherwise name the first bad line and exit 1.
    Verify {
        /// The audit log file (BROKER_AUDIT_LOG).
        file: PathBuf,
        /// The hash the last line must have (kept elsewhere, e.g. from an earlier verify), which
        /// also catches lines removed from the end.
        #[arg(long)]
        last_hash: Option<String>,
    },
}

/// Runs `audit`; the exit code is the answer.
pub fn run(args: &AuditArgs) -> i32 {
    match &args.command {
        AuditCommand::Verify { file, last_hash } => match verify(file, last_hash.as_deref()) {
            Ok((count, last)) => {
                println!(
                    "{}: {count} records, chain intact; last hash {last}",
                    file.display()
                );
                0
            }
            Err(e) => {
                eprintln!("audit verify: {}: {e}", file.display());
                1
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A writer into shared memory that fails while `broken` is set.
    #[derive(Clone, Default)]
    struct Flaky {
        data: Arc<Mutex<Vec<u8>>>,
        broken: Arc<AtomicBool>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("disk full"));
            }
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn write_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "credbroker-audit-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn events(log: &AuditLog, n: usize) {
        for i in 0..n {
            let mut e = Event::new("session_bound", "ok");
            e.subject = Some(format!("user-{i}"));
            log.record(&e).unwrap();
        }
    }

    #[test]
    fn a_chain_verifies_and_any_edit_is_named() {
        let w = Flaky::default();
        let log = AuditLog::with_writer(Box::new(w.clone()), GENESIS.into(), "mem".into());
        events(&log, 5);
        let text = String::from_utf8(w.data.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        let whole = write_file("whole", &text);
        let (count, last) = verify(&whole, None).unwrap();
        assert_eq!(count, 5);
        assert!(verify(&whole, Some(&last)).is_ok());

        let changed = text.replacen("user-2", "user-9", 1);
        assert_eq!(
            verify(&write_file("changed", &changed), None),
            Err(VerifyError::Changed(3))
        );
        let removed = [lines[0], lines[1], lines[3], lines[4]].join("\n");
        assert_eq!(
            verify(&write_file("removed", &removed), None),
            Err(VerifyError::Broken { line: 3 })
        );
        let reordered = [lines[0], lines[2], lines[1], lines[3], lines[4]].join("\n");
        assert_eq!(
            verify(&write_file("reordered", &reordered), None),
            Err(VerifyError::Broken { line: 2 })
        );
        let head_cut = lines[1..].join("\n");
        assert_eq!(
            verify(&write_file("head", &head_cut), None),
            Err(VerifyError::Broken { line: 1 })
        );
        let tail_cut = lines[..4].join("\n");
        assert!(verify(&write_file("tail", &tail_cut), None).is_ok());
        assert!(matches!(
            verify(&write_file("tail", &tail_cut), Some(&last)),
            Err(VerifyError::Truncated { .. })
        ));
    }

    #[test]
    fn a_failed_write_fails_closed_then_recovers_with_the_chain_whole() {
        let w = Flaky::default();
        let log = AuditLog::with_writer(Box::new(w.clone()), GENESIS.into(), "mem".into());
        events(&log, 2);
        w.broken.store(true, Ordering::SeqCst);
        let e = log.record(&Event::new("session_bound", "ok")).unwrap_err();
        assert!(e.to_string().contains("BROKER_AUDIT_LOG=mem"), "{e}");
        assert!(!log.is_healthy());
        assert!(log.ready().is_err());
        w.broken.store(false, Ordering::SeqCst);
        log.ready().unwrap();
        assert!(log.is_healthy());
        events(&log, 1);
        let text = String::from_utf8(w.data.lock().unwrap().clone()).unwrap();
        let (count, _) = verify(&write_file("recovered", &text), None).unwrap();
        assert_eq!(
            count, 4,
            "the failed record was written on recovery, in order"
        );
    }

    #[test]
    fn records_beyond_the_pending_limit_are_counted_as_lost() {
        let w = Flaky::default();
        let log = AuditLog::with_writer(Box::new(w.clone()), GENESIS.into(), "mem".into());
        w.broken.store(true, Ordering::SeqCst);
        for _ in 0..MAX_PENDING + 3 {
            assert!(log.record(&Event::new("token_refused", "refused")).is_err());
        }
        w.broken.store(false, Ordering::SeqCst);
        log.ready().unwrap();
        let text = String::from_utf8(w.data.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), MAX_PENDING + 1);
        assert!(text.lines().last().unwrap().contains("\"lost\":3"));
        assert!(verify(&write_file("lost", &text), None).is_ok());
    }

    #[test]
    fn a_reopened_file_continues_its_chain() {
        let path = write_file("reopen", "");
        let target = AuditTarget::File(path.clone());
        let first = AuditLog::open(&target).unwrap();
        events(&first, 2);
        drop(first);
        let second = AuditLog::open(&target).unwrap();
        events(&second, 2);
        assert_eq!(verify(&path, None).unwrap().0, 4);
    }

    #[test]
    fn an_unopenable_path_is_refused_naming_the_variable() {
        let e =
            AuditLog::open(&AuditTarget::File("/nonexistent-dir/audit.log".into())).unwrap_err();
        assert!(e.starts_with("BROKER_AUDIT_LOG"), "{e}");
    }

    #[test]
    fn served_credentials_are_sampled_once_per_session_key_and_minute() {
        let log = AuditLog::with_writer(Box::new(std::io::sink()), GENESIS.into(), "x".into());
        assert!(log.sample_served("h1", "AKIA1"));
        assert!(!log.sample_served("h1", "AKIA1"));
        assert!(log.sample_served("h1", "AKIA2"), "a new key of the session");
        assert!(log.sample_served("h2", "AKIA1"));
        log.unsample_served("h2", "AKIA1");
        assert!(
            log.sample_served("h2", "AKIA1"),
            "forgotten after a failed write"
        );
    }
}
