//! Child processes that tests start, and only those.
//!
//! A [`ChildProcess`] owns one spawned program. Its stdout and stderr go to a log file in a
//! per-test scratch directory, so tests can read the log afterwards (for example to prove that no
//! secret was ever logged). Dropping it kills the process by its pid (SIGKILL, then `wait`), so a
//! failing or panicking test never leaves a server behind, and nothing else on the machine is ever
//! touched: there is no killing by name.
//!
//! Readiness waits ([`ChildProcess::wait_until`]) poll a probe with a timeout; when the timeout
//! passes or the process exits first, they panic with the tail of the log, which is usually the
//! whole story of why it did not come up.

use std::fs::OpenOptions;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How many log lines a panic message shows.
const TAIL_LINES: usize = 40;

/// A scratch directory for one started service: its log file, its `HOME`, its data.
///
/// Removed when dropped, except while the thread is panicking (a failing test) or when
/// `E2E_KEEP_TMP` is set: then it is kept and its path printed, so the logs can be read.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    /// A new, empty directory under the system temp dir, named after `what`.
    pub fn new(what: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("e2e-{what}-"))
            .tempdir()
            .expect("create scratch dir");
        let path = dir.path().to_path_buf();
        Scratch {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let keep = std::thread::panicking() || std::env::var_os("E2E_KEEP_TMP").is_some();
        if keep && let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!("e2e: kept {}", kept.display());
        }
    }
}

/// One running program that this test started.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl ChildProcess {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `log_path` (appending, so a
    /// restarted service keeps one log). Panics when the program cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command, log_path: &Path) -> ChildProcess {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({:?}): {e}", cmd.get_program()));
        ChildProcess {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
            exit: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote so far (stdout and stderr interleaved).
    pub fn log_text(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_text(), lines)
    }

    /// The exit status, if the process has exited (never blocks).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Sends `signal` to this process (by pid) if it is still running.
    pub fn signal(&mut self, signal: i32) {
        if self.is_running() {
            let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
            // SAFETY: plain syscall on the pid of our own, not yet reaped, child.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Asks the process to shut down (SIGTERM); see [`ChildProcess::wait_exit`].
    pub fn sigterm(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Kills the process (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.exit = Some(self.child.wait().expect("wait after kill"));
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `probe` every 50 ms until it returns true. Panics, with the log tail, when `timeout`
    /// passes first or when the process exits while we wait.
    pub async fn wait_until<F, Fut>(&mut self, what: &str, timeout: Duration, probe: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        if let Err(status) = self.wait_until_or_exit(what, timeout, probe).await {
            panic!(
                "{} exited ({status}) while waiting for: {what}\n--- last lines of {} ---\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(TAIL_LINES)
            );
        }
    }

    /// Like [`ChildProcess::wait_until`], but an exit is returned (`Err(status)`) rather than a
    /// panic: for starters that retry on a port conflict. Panics when `timeout` passes first.
    pub async fn wait_until_or_exit<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<(), ExitStatus>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit_status() {
                return Err(status);
            }
            if probe().await {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                panic!(
                    "{} (pid {}) not ready after {timeout:?}: {what}\n--- last lines of {} ---\n{}",
                    self.name,
                    self.pid(),
                    self.log_path.display(),
                    self.log_tail(TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the process has written its bound address to `path` (see
    /// [`credbroker_kit::listen`]) and returns it; `Err(status)` if it exits first.
    pub async fn wait_addr_file(
        &mut self,
        path: &Path,
        timeout: Duration,
    ) -> Result<std::net::SocketAddr, ExitStatus> {
        let what = format!("its bound address in {}", path.display());
        self.wait_until_or_exit(&what, timeout, || async {
            credbroker_kit::listen::read_addr_file(path).is_some()
        })
        .await?;
        credbroker_kit::listen::read_addr_file(path).ok_or_else(|| self.fail(&what))
    }

    /// Panics with the log tail: for callers whose own readiness check failed.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{} (pid {}): {what}\n--- last lines of {} ---\n{}",
            self.name,
            self.pid(),
            self.log_path.display(),
            self.log_tail(TAIL_LINES)
        );
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "e2e: {} (pid {}) log {}; last lines:\n{}",
                self.name,
                self.pid(),
                self.log_path.display(),
                self.log_tail(15)
            );
        }
        self.kill();
    }
}

/// `Deref` / `DerefMut` from a server handle to its `process` field: the handle has every
/// [`ChildProcess`] method (`log_text`, `pid`, `kill`, `sigterm`, `wait_exit`, `is_running`, …),
/// one set of process methods for every server the harness starts.
macro_rules! deref_to_process {
    ($server:ty) => {
        impl std::ops::Deref for $server {
            type Target = $crate::process::ChildProcess;
            fn deref(&self) -> &$crate::process::ChildProcess {
                &self.process
            }
        }

        impl std::ops::DerefMut for $server {
            fn deref_mut(&mut self) -> &mut $crate::process::ChildProcess {
                &mut self.process
            }
        }
    };
}
pub(crate) use deref_to_process;

/// The address a server reports once it listens (it binds port 0 and writes the address to a
/// file, see [`credbroker_kit::listen`]), read once and kept.
#[derive(Debug)]
pub struct ReportedAddr {
    file: PathBuf,
    addr: std::sync::OnceLock<SocketAddr>,
}

impl ReportedAddr {
    /// The address the server will write to `file`.
    pub fn new(file: PathBuf) -> ReportedAddr {
        ReportedAddr {
            file,
            addr: std::sync::OnceLock::new(),
        }
    }

    /// The file the server writes (its `*_LISTEN_ADDR_FILE` setting).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Waits until `process` has reported its address; `Err(status)` when it exits first.
    pub async fn wait(
        &self,
        process: &mut ChildProcess,
        timeout: Duration,
    ) -> Result<SocketAddr, ExitStatus> {
        if let Some(addr) = self.addr.get() {
            return Ok(*addr);
        }
        let bound = process.wait_addr_file(&self.file, timeout).await?;
        Ok(*self.addr.get_or_init(|| dialable(bound)))
    }

    /// The address; if not known yet, blocks until `process` reports it (panicking with its log
    /// after `timeout`). For callers that spawned without waiting.
    pub fn get(&self, process: &ChildProcess, timeout: Duration) -> SocketAddr {
        *self.addr.get_or_init(|| {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(bound) = credbroker_kit::listen::read_addr_file(&self.file) {
                    return dialable(bound);
                }
                if Instant::now() >= deadline {
                    process.fail("never reported its listening address");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    }
}

/// A bound address as a client on this machine dials it (loopback for "all addresses").
fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// A file's contents as text, invalid UTF-8 replaced; empty when missing.
pub fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
