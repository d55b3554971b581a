//! `deploy/local/up`, the one-command local stack, and the README's grpcurl walkthrough.
//!
//! The local-stack tests run the script itself (with the debug binaries and the test venv, on free
//! ports, in a temporary state directory), wait for its "local stack ready" line, then run the
//! commands it **printed** — grpcurl, curl, the MCP Inspector CLI — through `bash -c`, exactly as
//! a person would paste them, and check their answers. Ctrl-C (SIGINT) must stop every process
//! the script started and free every port.
//!
//! The walkthrough test extracts the ```sh block under "### Operating it with grpcurl" from
//! README.md and runs it line by line against a broker the harness started, replacing only the
//! address and the `<handle>` placeholder.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::process::{ChildProcess, Scratch, read_lossy};
use e2e::redis::{RedisServer, keys_containing};
use e2e::stack::{BrokerStack, new_session_id};
use e2e::{mcp, ports, rpc, tools};
use serde_json::Value;

/// A cold debug build is not involved (LOCAL_BIN_DIR), but moto, seeding and two debug binaries
/// on a busy 2-core machine take a while.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
const READY_LINE: &str = "local stack ready";

fn up_script() -> PathBuf {
    tools::workspace_root().join("deploy/local/up")
}

/// `deploy/local/up` running in the background, its output in a file.
struct Up {
    process: ChildProcess,
    scratch: Scratch,
    ports: [u16; 3],
}

impl Up {
    /// Starts the script with the debug binaries, the test venv and a temporary state directory,
    /// plus `extra` environment variables; waits for its ready line. moto and the broker bind
    /// port 0 and the script reports what they got (`stack.env`); the adapter's port is named
    /// up front, because its resource URL and the balancer's ports are derived from it.
    async fn start(extra: &[(&str, &str)]) -> Up {
        let scratch = Scratch::new("local-stack");
        let adapter_port = ports::free_port();
        let mut cmd = up_command(&scratch);
        cmd.env("LOCAL_MOTO_PORT", "0")
            .env("LOCAL_BROKER_PORT", "0")
            .env("LOCAL_ADAPTER_PORT", adapter_port.to_string());
        for (key, value) in extra {
            cmd.env(key, value);
        }
        let process = ChildProcess::spawn("deploy/local/up", &mut cmd, &scratch.join("up.out"));
        let mut up = Up {
            process,
            scratch,
            ports: [0, 0, adapter_port],
        };
        let out = up.scratch.join("up.out");
        up.process
            .wait_until(&format!("prints \"{READY_LINE}\""), READY_TIMEOUT, || {
                let ready = read_lossy(&out).contains(READY_LINE);
                async move { ready }
            })
            .await;
        let env = up.stack_env();
        let port = |key: &str| -> u16 {
            env.get(key)
                .and_then(|p| p.parse().ok())
                .filter(|p| *p != 0)
                .unwrap_or_else(|| panic!("{key} in stack.env is not the bound port: {env:?}"))
        };
        up.ports = [
            port("LOCAL_MOTO_PORT"),
            port("LOCAL_BROKER_PORT"),
            adapter_port,
        ];
        up
    }

    fn output(&self) -> String {
        self.process.log_text()
    }

    fn state(&self) -> PathBuf {
        self.scratch.join("state")
    }

    /// `started NAME (pid N, …)` lines: every process the script started.
    fn children(&self) -> Vec<(String, u32)> {
        started_children(&self.output())
    }

    /// The `source …/stack.env` line it printed.
    fn source_line(&self) -> String {
        let sections = sections(&self.output());
        let lines = section(&sections, "In another shell");
        assert_eq!(lines.len(), 1, "one source line: {lines:?}");
        assert!(lines[0].starts_with("source "), "{lines:?}");
        lines[0].clone()
    }

    /// Runs printed `lines` as one bash script, after the printed `source` line.
    async fn run(&self, lines: &[String]) -> Shell {
        let script = format!(
            "set -euo pipefail\n{}\n{}\n",
            self.source_line(),
            lines.join("\n")
        );
        bash(&script, self.scratch.path()).await
    }

    /// The exports of `stack.env`.
    fn stack_env(&self) -> BTreeMap<String, String> {
        parse_stack_env(&read_lossy(&self.state().join("stack.env")))
    }
}

impl Drop for Up {
    /// A failing test must not leave the stack behind: SIGTERM to the script (which stops its
    /// children), then SIGKILL by pid to anything it started that is still there.
    fn drop(&mut self) {
        if self.process.is_running() {
            self.process.sigterm();
            for _ in 0..300 {
                if !self.process.is_running() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.process.kill();
        for (_, pid) in self.children() {
            if pid_alive(pid) {
                // SAFETY: plain syscall on the pid of a process this test's script started.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// The script with a clean environment: PATH, a scratch HOME, the debug binaries, the test venv.
fn up_command(scratch: &Scratch) -> Command {
    let mut cmd = Command::new(up_script());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch.path())
        .env("LOCAL_BIN_DIR", tools::bin_dir())
        .env("LOCAL_VENV", tools::venv_dir())
        .env("LOCAL_STATE_DIR", scratch.join("state"));
    cmd
}

/// What one `bash -c` printed.
#[derive(Debug)]
struct Shell {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Shell {
    fn expect_ok(&self, what: &str) -> &str {
        assert!(
            self.success,
            "{what} failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

async fn bash(script: &str, home: &Path) -> Shell {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("bash -c did not finish within 120 s:\n{script}"))
        .expect("run bash");
    Shell {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The output as (header line, commands under it): a header is an unindented line, a command a
/// line indented by exactly two spaces.
fn sections(output: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in output.lines() {
        if let Some(cmd) = line.strip_prefix("  ") {
            if !cmd.is_empty()
                && !cmd.starts_with(' ')
                && let Some(last) = out.last_mut()
            {
                last.1.push(cmd.to_string());
            }
        } else if !line.trim().is_empty() {
            out.push((line.to_string(), Vec::new()));
        }
    }
    out
}

/// The commands under the one header containing `needle`.
fn section(sections: &[(String, Vec<String>)], needle: &str) -> Vec<String> {
    let found: Vec<_> = sections
        .iter()
        .filter(|(h, _)| h.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one section headed {needle:?}, found {}: {sections:#?}",
        found.len()
    );
    found[0].1.clone()
}

fn started_children(output: &str) -> Vec<(String, u32)> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("up: started "))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once(" (pid ")?;
            let pid = rest.split([',', ')']).next()?.parse().ok()?;
            Some((name.to_string(), pid))
        })
        .collect()
}

fn parse_stack_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let value = value.strip_prefix('\'')?.strip_suffix('\'')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie has no cmdline and is already gone for our purposes.
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true)
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&ports::loopback(port), Duration::from_secs(1)).is_ok()
}

/// The JSON-RPC answer in what a curl block printed, possibly after other text: an event stream,
/// or one JSON body (a read-only tool call or `tools/list`, `ADAPTER_ANSWER_FORMAT=json`).
fn rpc_answer(stdout: &str) -> Value {
    mcp::parse_body("text/event-stream", stdout)
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .filter_map(|line| mcp::parse_body("application/json", line.trim()))
                .find(|message| message.get("id").is_some())
        })
        .unwrap_or_else(|| panic!("no JSON-RPC answer in: {stdout}"))
}

/// Everything the two local-stack tests check, against a running `up`.
async fn check_printed_commands(up: &Up) -> BTreeMap<String, String> {
    let output = up.output();
    let env = up.stack_env();
    for key in [
        "LOCAL_MOTO_URL",
        "LOCAL_BROKER_ADDR",
        "LOCAL_MCP_URL",
        "LOCAL_RW_TOKEN",
        "LOCAL_RO_TOKEN",
        "LOCAL_RW_ROLE_ARN",
        "LOCAL_RO_ROLE_ARN",
        "LOCAL_GRPCURL",
        "LOCAL_MOTO_PID",
        "LOCAL_BROKER_PID",
        "LOCAL_ADAPTER_PID",
    ] {
        assert!(
            env.get(key).is_some_and(|v| !v.is_empty()),
            "{key} missing from stack.env: {env:?}"
        );
    }
    let [moto_port, broker_port, adapter_port] = up.ports;
    assert_eq!(env["LOCAL_BROKER_ADDR"], format!("127.0.0.1:{broker_port}"));
    assert_eq!(
        env["LOCAL_MCP_URL"],
        format!("http://127.0.0.1:{adapter_port}/mcp")
    );
    assert_eq!(
        env["LOCAL_MOTO_URL"],
        format!("http://127.0.0.1:{moto_port}")
    );
    // The demo tokens are printed, and are the ones in stack.env.
    for key in ["LOCAL_RW_TOKEN", "LOCAL_RO_TOKEN"] {
        assert!(
            output.contains(&format!("    {}\n", env[key])),
            "{key} not printed"
        );
    }
    let children = up.children();
    let names: Vec<&str> = children.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["moto", "credential-broker", "mcp-adapter"]);
    for ((_, pid), key) in
        children
            .iter()
            .zip(["LOCAL_MOTO_PID", "LOCAL_BROKER_PID", "LOCAL_ADAPTER_PID"])
    {
        assert_eq!(env[key], pid.to_string());
        assert!(pid_alive(*pid), "{key} {pid} not running");
    }

    let sections = sections(&output);

    // grpcurl: list, health, ListSessions (the last after a session exists).
    let grpc = section(&sections, "The broker with grpcurl");
    assert_eq!(grpc.len(), 3, "{grpc:?}");
    assert!(grpc.iter().all(|l| l.starts_with("grpcurl -plaintext ")));
    let listed = up.run(&grpc[..1]).await;
    let listed = listed.expect_ok("printed grpcurl list");
    for service in ["credbroker.v1.CredentialBroker", "grpc.health.v1.Health"] {
        assert!(
            listed.lines().any(|l| l.trim() == service),
            "{service}: {listed}"
        );
    }
    let health = up.run(&grpc[1..2]).await;
    health.expect_ok("printed health check");
    assert_eq!(health.json()["status"], "SERVING");

    // curl: a read-write session lists demo-bucket.
    let rw = section(&sections, "read-write token");
    assert_eq!(rw.len(), 3, "{rw:?}");
    let rw_out = up.run(&rw).await;
    let rw_stdout = rw_out.expect_ok("printed read-write curl session");
    let sid = rw_stdout
        .lines()
        .find_map(|l| l.strip_prefix("Mcp-Session-Id: "))
        .unwrap_or_default();
    assert!(!sid.is_empty(), "no session id printed: {rw_stdout}");
    let answer = rpc_answer(rw_stdout);
    let result = &answer["result"];
    assert_ne!(result["isError"], Value::Bool(true), "{answer}");
    let keys: Vec<&str> = result["structuredContent"]["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects: {answer}"))
        .iter()
        .filter_map(|o| o["key"].as_str())
        .collect();
    assert!(
        keys.contains(&"README.txt"),
        "demo-bucket objects: {keys:?}"
    );
    assert_eq!(result["structuredContent"]["bucket"], "demo-bucket");

    // The session it made is what ListSessions shows for alice.
    let sessions = up.run(&grpc[2..3]).await;
    sessions.expect_ok("printed ListSessions");
    let sessions = sessions.json();
    let alice: Vec<&Value> = sessions["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions listed: {sessions}"))
        .iter()
        .filter(|s| s["subject"] == env["LOCAL_RW_SUB"].as_str())
        .collect();
    assert_eq!(alice.len(), 1, "{sessions}");
    assert_eq!(alice[0]["roleArn"], env["LOCAL_RW_ROLE_ARN"].as_str());
    assert!(!sessions.to_string().contains(sid), "a session id leaked");

    // The read-only token: its put is refused by S3 (IAM enforced by moto).
    let ro = section(&sections, "read-only token");
    assert_eq!(ro.len(), 3, "{ro:?}");
    let ro_out = up.run(&ro).await;
    let answer = rpc_answer(ro_out.expect_ok("printed read-only curl session"));
    assert_eq!(answer["result"]["isError"], Value::Bool(true), "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["error"]["code"], "AccessDenied",
        "{answer}"
    );

    // No token: 401 with WWW-Authenticate.
    let anonymous = section(&sections, "Without a token");
    assert_eq!(anonymous.len(), 1, "{anonymous:?}");
    assert!(!anonymous[0].contains("Authorization"));
    let anon = up.run(&anonymous).await;
    let anon_out = anon.expect_ok("printed token-less curl");
    let status_line = anon_out.lines().next().unwrap_or_default();
    assert!(status_line.contains(" 401"), "{anon_out}");
    assert!(
        anon_out.lines().any(|l| l
            .to_ascii_lowercase()
            .starts_with("www-authenticate: bearer resource_metadata=")),
        "{anon_out}"
    );
    assert!(
        anon_out.contains("Authorization: Bearer <JWT>"),
        "{anon_out}"
    );

    // The MCP Inspector CLI, when the JS client tests have installed it (no network here).
    let inspector = section(&sections, "MCP Inspector");
    assert_eq!(inspector.len(), 1, "{inspector:?}");
    let line = &inspector[0];
    let (prefix, rest) = line
        .split_once(" --cli ")
        .unwrap_or_else(|| panic!("no --cli in {line}"));
    assert!(
        prefix.starts_with("npx -y @modelcontextprotocol/inspector@")
            && prefix
                .split('@')
                .next_back()
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.')),
        "pinned npx prefix: {prefix}"
    );
    let installed =
        tools::workspace_root().join("tests/clients/js/node_modules/.bin/mcp-inspector");
    if installed.exists() {
        let local = format!("{} --cli {rest}", installed.display());
        let ran = up.run(&[local]).await;
        let out = ran.expect_ok("printed MCP Inspector command");
        assert!(out.contains("README.txt"), "{out}");
        assert!(out.contains("\"isError\": false"), "{out}");
    } else {
        eprintln!(
            "SKIPPED: the printed MCP Inspector command was not run: {} is missing (the JS client \
             tests install it; this test does not use the network)",
            installed.display()
        );
    }

    // No secret in any log: the HS256 secret, the broker's AWS secret key; and no token in the
    // services' logs (up's own output prints the demo tokens on purpose).
    let state = up.state();
    let jwt_secret = read_lossy(&state.join("secrets/jwt_secret"));
    let jwt_secret = jwt_secret.trim();
    assert!(jwt_secret.len() >= 32);
    let aws = read_lossy(&state.join("secrets/aws-credentials"));
    let aws_secret = aws
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .expect("broker secret key in the credentials file")
        .trim()
        .to_string();
    for log in ["moto.log", "seed.log", "broker.log", "adapter.log"] {
        let text = read_lossy(&state.join(log));
        for (what, secret) in [
            ("HS256 secret", jwt_secret),
            ("broker AWS secret key", aws_secret.as_str()),
            ("read-write token", env["LOCAL_RW_TOKEN"].as_str()),
            ("read-only token", env["LOCAL_RO_TOKEN"].as_str()),
            ("MCP session id", sid),
        ] {
            assert!(!text.contains(secret), "{what} in {log}");
        }
    }
    for (what, secret) in [
        ("HS256 secret", jwt_secret),
        ("broker AWS secret key", aws_secret.as_str()),
    ] {
        assert!(!output.contains(secret), "{what} in up's output");
    }
    env
}

/// SIGINT: exit 0, every child gone, every port free, stack.env removed.
async fn interrupt_and_check_stopped(mut up: Up) {
    let children = up.children();
    up.process.signal(libc::SIGINT);
    let status = up.process.wait_exit(Duration::from_secs(90)).await;
    let output = up.output();
    let status = status.unwrap_or_else(|| panic!("up still running 90 s after SIGINT:\n{output}"));
    assert!(
        status.success(),
        "up exited {status} after SIGINT:\n{output}"
    );
    for (name, pid) in &children {
        assert!(!pid_alive(*pid), "{name} (pid {pid}) survived SIGINT");
        assert!(
            output.contains(&format!("up: stopped {name} (pid {pid})")),
            "{output}"
        );
    }
    for port in up.ports {
        assert!(!port_open(port), "port {port} still open after SIGINT");
    }
    assert!(
        !up.state().join("stack.env").exists(),
        "stack.env left behind"
    );
}

#[tokio::test]
async fn local_up_prints_commands_that_work_and_ctrl_c_stops_everything() {
    let up = Up::start(&[]).await;
    assert!(up.output().contains("store: memory"), "{}", up.output());
    check_printed_commands(&up).await;
    interrupt_and_check_stopped(up).await;
}

#[tokio::test]
async fn local_up_with_redis_keeps_sessions_sealed_in_redis() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let up = Up::start(&[("BROKER_CACHE_URL", &url)]).await;
    let output = up.output();
    assert!(
        output.contains(&format!("store: redis ({})", redis.host_port())),
        "{output}"
    );
    let env = check_printed_commands(&up).await;
    let key = read_lossy(&up.state().join("secrets/broker_cache_key"));
    assert_eq!(
        key.trim().len(),
        44,
        "a base64 32-byte cache key was generated"
    );

    let entries = redis.dump_all().await;
    assert!(
        entries.iter().any(|e| e.key.starts_with(b"cb:v1:sess:")),
        "no session in Redis: {:?}",
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.key).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(entries.iter().any(|e| e.key.starts_with(b"cb:v1:cred:")));
    for secret in [
        env["LOCAL_RW_TOKEN"].as_str(),
        env["LOCAL_RO_TOKEN"].as_str(),
        "alice@example.com",
        key.trim(),
    ] {
        assert!(
            keys_containing(&entries, secret.as_bytes()).is_empty(),
            "plaintext in Redis"
        );
    }
    interrupt_and_check_stopped(up).await;
    assert!(
        redis
            .dump_all()
            .await
            .iter()
            .any(|e| e.key.starts_with(b"cb:v1:sess:"))
    );
}

#[tokio::test]
async fn local_up_stops_the_rest_and_fails_when_a_child_dies() {
    let mut up = Up::start(&[]).await;
    let children = up.children();
    let (_, broker_pid) = children
        .iter()
        .find(|(name, _)| name == "credential-broker")
        .cloned()
        .expect("broker started");
    // SAFETY: plain syscall on the pid of the broker this test's script started.
    unsafe {
        libc::kill(broker_pid as libc::pid_t, libc::SIGKILL);
    }
    let status = up.process.wait_exit(Duration::from_secs(60)).await;
    let output = up.output();
    let status = status.unwrap_or_else(|| panic!("up kept running without its broker:\n{output}"));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "credential-broker (pid {broker_pid}) exited unexpectedly"
        )) && output.contains("--- last lines of ")
            && output.contains("broker.log"),
        "{output}"
    );
    for (name, pid) in &children {
        assert!(!pid_alive(*pid), "{name} (pid {pid}) left running");
    }
    for port in up.ports {
        assert!(!port_open(port), "port {port} still open");
    }
}

#[tokio::test]
async fn local_up_refuses_a_taken_port_by_name() {
    let scratch = Scratch::new("local-stack-port");
    let held = std::net::TcpListener::bind(ports::loopback(0)).expect("bind");
    let port = held.local_addr().expect("addr").port();
    let mut cmd = up_command(&scratch);
    // The script stops at the moto check, before it binds anything: the adapter's port is never
    // bound, so probing it is harmless here.
    cmd.env("LOCAL_MOTO_PORT", port.to_string())
        .env("LOCAL_BROKER_PORT", "0")
        .env("LOCAL_ADAPTER_PORT", ports::free_port().to_string());
    let mut process = ChildProcess::spawn("deploy/local/up", &mut cmd, &scratch.join("up.out"));
    let status = process
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| process.fail("expected up to refuse a taken port and exit"));
    let output = process.log_text();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!("port {port} (moto) is already in use"))
            && output.contains("LOCAL_MOTO_PORT="),
        "{output}"
    );
    assert!(!output.contains("up: started"), "{output}");
}

#[test]
fn local_up_help_documents_every_setting_it_reads() {
    let output = Command::new(up_script())
        .arg("--help")
        .output()
        .expect("run deploy/local/up --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let script = std::fs::read_to_string(up_script()).expect("read up");
    let mut read = Vec::new();
    for prefix in ["${LOCAL_", "${BROKER_", "${ADAPTER_"] {
        for part in script.split(prefix).skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            read.push(format!("{}{name}", &prefix[2..]));
        }
    }
    read.sort();
    read.dedup();
    assert!(read.len() >= 10, "{read:?}");
    for name in read {
        assert!(help.contains(&name), "--help does not mention {name}");
    }
    for word in [
        "SIGINT",
        "stack.env",
        "Ctrl-C",
        "--debug",
        "local stack ready",
    ] {
        assert!(help.contains(word), "--help does not mention {word}");
    }
}

/// A misspelt variable would be ignored by the binary without a word: every `BROKER_*=` /
/// `ADAPTER_*=` the script hands to a process must be one that binary's `--help` names.
#[test]
fn local_up_sets_only_variables_the_binaries_read() {
    let script = std::fs::read_to_string(up_script()).expect("read up");
    for (prefix, bin) in [
        ("BROKER_", tools::broker_bin()),
        ("ADAPTER_", tools::adapter_bin()),
    ] {
        let help = Command::new(&bin).arg("--help").output().expect("--help");
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let mut set = Vec::new();
        for part in script.split(&format!("\"{prefix}")).skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if part[name.len()..].starts_with('=') {
                set.push(format!("{prefix}{name}"));
            }
        }
        assert!(set.len() >= 4, "{prefix}: {set:?}");
        for name in set {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{name} is not read by {}",
                bin.display()
            );
        }
    }
}

/// The lines of the ```sh block under "### Operating it with grpcurl" in README.md.
fn readme_walkthrough() -> Vec<String> {
    let readme =
        std::fs::read_to_string(tools::workspace_root().join("README.md")).expect("read README.md");
    let start = readme
        .find("### Operating it with grpcurl")
        .expect("README has \"### Operating it with grpcurl\"");
    let rest = &readme[start..];
    let next_heading = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| rest[4..].find(h))
        .min()
        .map_or(rest.len(), |i| i + 4);
    let rest = &rest[..next_heading];
    let open = rest.find("```sh\n").expect("a ```sh block in the section") + "```sh\n".len();
    let body = &rest[open..];
    let close = body.find("```").expect("the block is closed");
    body[..close]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn readme_grpcurl_walkthrough_runs_as_written() {
    let lines = readme_walkthrough();
    assert!(lines.len() >= 6, "{lines:?}");
    let stack = BrokerStack::start().await;
    let addr = stack.broker.addr().to_string();
    let subject = "alice@example.com";
    let mut client = stack.broker.client().await;
    let session = rpc::bind(&mut client, &new_session_id(), &stack.rw_token(subject), "")
        .await
        .expect("BindSession");
    let handle = session.session_handle;

    // grpcurl and credential-broker on PATH, as `source stack.env` does for the local stack.
    let scratch = Scratch::new("walkthrough");
    let bin = scratch.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::os::unix::fs::symlink(tools::grpcurl(), bin.join("grpcurl")).expect("link grpcurl");
    std::os::unix::fs::symlink(tools::broker_bin(), bin.join("credential-broker"))
        .expect("link credential-broker");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The operator's token, as `source stack.env` exports it for the local stack.
    let ops_token = stack.operator_token();
    let run = |line: String| {
        let script =
            format!("export PATH='{path}'\nexport LOCAL_OPS_TOKEN='{ops_token}'\n{line}\n");
        let home = scratch.path().to_path_buf();
        async move { bash(&script, &home).await }
    };

    let mut seen = Vec::new();
    let mut describe_line = None;
    for line in &lines {
        assert!(
            line.contains("127.0.0.1:50051"),
            "walkthrough line without the default address: {line}"
        );
        let concrete = line
            .replace("127.0.0.1:50051", &addr)
            .replace("<handle>", &handle);
        let out = run(concrete.clone()).await;
        let what = format!("README line `{line}`");
        let kind = if line.contains("healthcheck") {
            out.expect_ok(&what);
            "healthcheck"
        } else if line.contains("/RevokeSession") {
            out.expect_ok(&what);
            assert_eq!(out.json()["sessionHandle"], handle.as_str(), "{what}");
            assert_eq!(out.json()["revoked"], true, "{what}");
            "RevokeSession"
        } else if line.contains("/DescribeSession") {
            out.expect_ok(&what);
            assert_eq!(out.json()["sessionHandle"], handle.as_str(), "{what}");
            assert_eq!(out.json()["subject"], subject, "{what}");
            describe_line = Some(concrete);
            "DescribeSession"
        } else if line.contains("/ListSessions") {
            out.expect_ok(&what);
            let listed = out.json();
            assert!(
                listed["sessions"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["sessionHandle"] == handle.as_str())),
                "{what}: {listed}"
            );
            "ListSessions"
        } else if line.contains("Health/Check") {
            out.expect_ok(&what);
            assert_eq!(out.json()["status"], "SERVING", "{what}");
            "health"
        } else if line.contains(" describe ") {
            let text = out.expect_ok(&what);
            assert!(text.contains("service CredentialBroker"), "{what}: {text}");
            "describe"
        } else if line.ends_with(" list") {
            let text = out.expect_ok(&what);
            assert!(
                text.lines()
                    .any(|l| l.trim() == "credbroker.v1.CredentialBroker"),
                "{what}: {text}"
            );
            "list"
        } else {
            panic!("README walkthrough line this test does not know (teach it): {line}");
        };
        seen.push(kind);
    }
    for kind in [
        "list",
        "describe",
        "health",
        "ListSessions",
        "DescribeSession",
        "RevokeSession",
        "healthcheck",
    ] {
        assert!(seen.contains(&kind), "walkthrough lacks {kind}: {lines:?}");
    }
    let revoke_at = seen.iter().position(|k| *k == "RevokeSession");
    let describe_at = seen.iter().position(|k| *k == "DescribeSession");
    assert!(
        describe_at < revoke_at,
        "DescribeSession comes before RevokeSession"
    );

    // After the revocation, the same DescribeSession line answers NOT_FOUND.
    let again = run(describe_line.expect("a DescribeSession line")).await;
    assert!(
        !again.success,
        "revoked session still described: {}",
        again.stdout
    );
    assert!(
        again.stderr.contains("Code: NotFound") && again.stderr.contains("revoked"),
        "{}",
        again.stderr
    );
}
