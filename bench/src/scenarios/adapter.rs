//! The adapter end to end: `tools/call bucket_objects_list` through mcp-adapter + broker, on two
//! S3 backends — moto (IAM-checked, but it closes every connection and its Python dominates wall
//! time) and the keep-alive S3 stand-in (`s3stub`, microseconds per answer, connections kept) —
//! against, in the same run with the same client and concurrency:
//!
//! - a direct aws-sdk-s3 `ListObjectsV2` with the same credentials (the adapter's added latency);
//! - the floor (`adapter_floor`: a bare axum handler making the same broker call and the same S3
//!   call, no rmcp): what one tool call must cost at least;
//! - the Python stack the incident's backend used (`bench/python/mcp_s3_server.py`: the official
//!   SDK's `MCPServer` with boto3, SSE answers) and its lean variant (`BENCH_LEAN=1`: JSON answers;
//!   both validate the HS256 JWT per call and cache a boto3 client per token).
//!
//! The comparison that says what the MCP stacks cost is server CPU per tool call: utime+stime of
//! adapter + broker (or floor + broker, or the Python process) from /proc before and after each
//! point. The backend's CPU is reported beside it and counted on no side.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client as S3;
use credbroker_proto::v1::ExchangeTokenRequest;
use e2e::adapter::AdapterBuilder;
use e2e::aws::{self, StaticCreds};
use e2e::process::{ChildProcess, Scratch};
use e2e::stack::{AUDIENCE, BrokerStack, ISSUER};
use e2e::sts_proxy::StsProxy;
use e2e::tools;
use serde_json::{Value, json};

use crate::driver::{self, LoadResult, LoadSpec, Op};
use crate::mcp::McpSession;
use crate::procfs;
use crate::report::{Report, load_row, rate, us, verdict};

#[derive(Debug, Clone)]
pub struct AdapterConfig {
    pub concurrency: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Distinct users (tokens); worker i is user i mod users.
    pub users: usize,
    /// Objects put in the bucket before measuring (one list page returns them all).
    pub objects: usize,
    /// The S3 backends to measure on.
    pub backends: Vec<BackendKind>,
}

/// An S3 backend the adapter benchmarks run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// moto server: IAM enforced, `Connection: close` on every answer.
    Moto,
    /// The keep-alive S3 stand-in (`s3-stub`): no checks, answers from memory.
    Stub,
}

impl BackendKind {
    fn tag(self) -> &'static str {
        match self {
            BackendKind::Moto => "moto",
            BackendKind::Stub => "stub",
        }
    }

    fn label(self) -> &'static str {
        match self {
            BackendKind::Moto => "moto",
            BackendKind::Stub => "keep-alive S3 stub",
        }
    }
}

const TOOL: &str = "bucket_objects_list";
const DIRECT: &str = "direct S3 (aws-sdk-s3)";
const ADAPTER: &str = "mcp-adapter + broker";
const FLOOR: &str = "floor (axum handler) + broker";
const PYTHON: &str = "Python MCPServer + boto3 (incident: SSE)";
const LEAN: &str = "Python MCPServer + boto3 (lean: JSON)";

struct DirectList {
    s3: S3,
    bucket: String,
}

impl Op for DirectList {
    async fn call(&mut self) -> Result<(), String> {
        self.s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(100)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws::error_code(&e))
    }
}

/// `tools/list` on a session: the MCP request path without S3.
struct ToolsList {
    session: McpSession,
}

impl Op for ToolsList {
    async fn call(&mut self) -> Result<(), String> {
        let result = self.session.request("tools/list", json!({})).await?;
        match result.get("tools").and_then(Value::as_array) {
            Some(tools) if !tools.is_empty() => Ok(()),
            _ => Err(format!("tools/list without tools: {result}")),
        }
    }
}

struct ToolCall {
    session: McpSession,
    arguments: Value,
    expect: usize,
}

impl Op for ToolCall {
    async fn call(&mut self) -> Result<(), String> {
        let result = self.session.call_tool(TOOL, self.arguments.clone()).await?;
        let count = result
            .get("structuredContent")
            .and_then(|s| s.get("count"))
            .and_then(Value::as_u64);
        match count {
            Some(n) if n as usize == self.expect => Ok(()),
            _ => Err(format!(
                "expected {} objects, the tool answered: {}",
                self.expect,
                result.to_string().chars().take(300).collect::<String>()
            )),
        }
    }
}

/// Added latency measured in pairs: one direct S3 list and one tool call back to back, `pairs`
/// times, alternating which goes first. moto's latency drifts by milliseconds over seconds (it
/// dominates both calls), which swamps a p50 − p50 difference between two 5 s windows; within a
/// pair the drift cancels. Returns the (adapter − direct) differences in µs, sorted.
async fn paired_added_latency(
    direct: &mut DirectList,
    tool: &mut ToolCall,
    pairs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut diffs = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let time = |started: std::time::Instant| started.elapsed().as_secs_f64() * 1e6;
        let (d, t) = if i % 2 == 0 {
            let started = std::time::Instant::now();
            direct.call().await.map_err(anyhow::Error::msg)?;
            let d = time(started);
            let started = std::time::Instant::now();
            tool.call().await.map_err(anyhow::Error::msg)?;
            (d, time(started))
        } else {
            let started = std::time::Instant::now();
            tool.call().await.map_err(anyhow::Error::msg)?;
            let t = time(started);
            let started = std::time::Instant::now();
            direct.call().await.map_err(anyhow::Error::msg)?;
            (time(started), t)
        };
        diffs.push(t - d);
    }
    diffs.sort_by(f64::total_cmp);
    Ok(diffs)
}

/// The `q` quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The Python MCP server, started from the project's venv.
async fn start_python(
    stack: &BrokerStack,
    s3_endpoint: &str,
    sts_endpoint: &str,
    lean: bool,
    scratch: &Scratch,
    http: &reqwest::Client,
    token: &str,
) -> anyhow::Result<(ChildProcess, String)> {
    let port = e2e::ports::free_port();
    let script = tools::workspace_root().join("bench/python/mcp_s3_server.py");
    let broker_user = &stack.seed().users.broker;
    let mut cmd = Command::new(tools::python());
    cmd.arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch.path())
        .env("PYTHONUNBUFFERED", "1")
        .env("BENCH_PORT", port.to_string())
        .env("BENCH_JWT_SECRET", &stack.secret)
        .env("BENCH_JWT_ISSUER", ISSUER)
        .env("BENCH_JWT_AUDIENCE", AUDIENCE)
        .env("BENCH_S3_ENDPOINT", s3_endpoint)
        .env("BENCH_LEAN", if lean { "1" } else { "0" })
        .env("BENCH_STS_ENDPOINT", sts_endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", &broker_user.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &broker_user.secret_access_key);
    let name = if lean { "python-lean" } else { "python-mcp" };
    let mut process = ChildProcess::spawn(name, &mut cmd, &scratch.join(&format!("{name}.log")));
    let url = format!("http://127.0.0.1:{port}/mcp");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if McpSession::open(http, &url, token).await.is_ok() {
            return Ok((process, url));
        }
        if !process.is_running() || Instant::now() > deadline {
            anyhow::bail!(
                "the Python MCP server did not come up:\n{}",
                process.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Point {
    label: &'static str,
    result: LoadResult,
    /// Server CPU per call (µs): adapter+broker, or the Python process; none for direct S3.
    server_cpu_us: Option<f64>,
    /// Of that, the broker's (the second server pid), when there is one.
    broker_cpu_us: Option<f64>,
    /// The S3 backend's CPU per call (moto or the stub), counted on no side.
    backend_cpu_us: f64,
    load1: f64,
}

async fn measure<O: Op>(
    label: &'static str,
    spec: LoadSpec,
    ops: Vec<O>,
    server_pids: &[u32],
    backend_pid: u32,
) -> anyhow::Result<Point> {
    let load1 = procfs::load1();
    let cpu_before = procfs::cpu_time_of(server_pids)?;
    let broker_before = server_pids
        .get(1)
        .map(|p| procfs::cpu_time(*p))
        .transpose()?;
    let backend_before = procfs::cpu_time(backend_pid)?;
    let result = driver::run(spec, ops).await;
    let cpu = procfs::cpu_time_of(server_pids)? - cpu_before;
    let broker = match (server_pids.get(1), broker_before) {
        (Some(pid), Some(before)) => Some(procfs::cpu_time(*pid)? - before),
        _ => None,
    };
    let backend = procfs::cpu_time(backend_pid)? - backend_before;
    result.ensure_clean(label)?;
    // Requests started in the warm-up are not in `ops` but did use CPU; count every call the
    // servers handled in the sampled interval.
    let calls = result.ops as f64 * (spec.warmup + spec.duration).as_secs_f64()
        / spec.duration.as_secs_f64();
    Ok(Point {
        label,
        server_cpu_us: (!server_pids.is_empty()).then(|| cpu.as_secs_f64() * 1e6 / calls),
        broker_cpu_us: broker.map(|b| b.as_secs_f64() * 1e6 / calls),
        backend_cpu_us: backend.as_secs_f64() * 1e6 / calls,
        result,
        load1,
    })
}

/// A bench binary (`s3-stub`, `adapter-floor`) from the binaries' directory, started on port 0:
/// its address is the one it prints (`listening on ADDR`), so no port is probed.
async fn spawn_listening(
    name: &str,
    tag: &str,
    args: &[&str],
    env: &[(&str, &str)],
    scratch: &Scratch,
) -> anyhow::Result<(ChildProcess, String)> {
    let mut cmd = Command::new(tools::bin_dir().join(name));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    // A log of its own: the address is read from it.
    let log = scratch.join(&format!("{name}-{tag}.log"));
    let mut process = ChildProcess::spawn(name, &mut cmd, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = process
            .log_text()
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
        {
            return Ok((process, format!("http://{}", addr.trim())));
        }
        if !process.is_running() || Instant::now() > deadline {
            anyhow::bail!("{name} did not start:\n{}", process.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One backend and everything measured on it.
struct Backend {
    kind: BackendKind,
    endpoint: String,
    pid: u32,
    /// The stub's process (moto belongs to the stack).
    _process: Option<ChildProcess>,
}

/// What one backend's run measured, for the summary.
#[derive(Default)]
struct BackendFigures {
    /// (concurrency, adapter ÷ floor CPU, lean ÷ adapter, incident ÷ adapter, adapter calls/s,
    /// lean calls/s)
    ratios: Vec<(usize, f64, f64, f64, f64, f64)>,
    /// Paired added latency (p25, median, p75), µs.
    paired: (f64, f64, f64),
    /// The same for the floor: what a bare handler with the same broker call adds.
    floor_paired: (f64, f64, f64),
    /// What the adapter allocates per call (`adapter-counted`).
    allocations: Option<Allocations>,
}

/// Allocations per call in the adapter process, counted by `adapter-counted`'s allocator.
#[derive(Debug, Clone, Copy)]
struct Allocations {
    /// `tools/call bucket_objects_list`: (allocations, bytes allocated) per call.
    tool_call: (f64, f64),
    /// `tools/list`: (allocations, bytes allocated) per call.
    tools_list: (f64, f64),
}

/// The adapter process's allocation counters (`adapter-counted`'s `GET /`).
async fn counters(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64)> {
    let v: Value = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok((
        n("allocations"),
        n("bytes_allocated") + n("bytes_reallocated"),
    ))
}

/// Allocations per call of the adapter's code (its router in `adapter-counted`, configured as the
/// adapter processes here), over `CALLS` sequential calls on one warmed-up session: the counters
/// before and after, divided by the calls. Bytes count `realloc` growth too.
#[allow(clippy::too_many_arguments)]
async fn count_allocations(
    stack: &BrokerStack,
    endpoint: &str,
    http: &reqwest::Client,
    token: &str,
    arguments: &Value,
    expect: usize,
    tag: &str,
    scratch: &Scratch,
) -> anyhow::Result<Allocations> {
    const CALLS: usize = 400;
    let home = scratch.join(&format!("counted-{tag}"));
    std::fs::create_dir_all(&home)?;
    let broker = stack.broker.endpoint();
    let (process, url) = spawn_listening(
        "adapter-counted",
        tag,
        &[],
        &[
            ("ADAPTER_LISTEN", "127.0.0.1:0"),
            ("ADAPTER_BROKER_URL", &broker),
            ("ADAPTER_S3_ENDPOINT", endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", &home.to_string_lossy()),
        ],
        scratch,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let counters_url = loop {
        if let Some(addr) = process
            .log_text()
            .lines()
            .find_map(|l| l.strip_prefix("counters on "))
        {
            break format!("http://{}/", addr.trim());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "adapter-counted: no counters address:\n{}",
                process.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mcp_url = format!("{url}/mcp");
    let mut tool = ToolCall {
        session: McpSession::open(http, &mcp_url, token)
            .await
            .map_err(anyhow::Error::msg)?,
        arguments: arguments.clone(),
        expect,
    };
    let mut list = ToolsList {
        session: McpSession::open(http, &mcp_url, token)
            .await
            .map_err(anyhow::Error::msg)?,
    };
    let tool_call = per_call(&mut tool, http, &counters_url, CALLS).await?;
    let tools_list = per_call(&mut list, http, &counters_url, CALLS).await?;
    drop(process);
    Ok(Allocations {
        tool_call,
        tools_list,
    })
}

/// (allocations, bytes) per call of `op` in the process behind `counters_url`: 50 calls to warm
/// up, then the counters around `calls` calls.
async fn per_call<O: Op>(
    op: &mut O,
    http: &reqwest::Client,
    counters_url: &str,
    calls: usize,
) -> anyhow::Result<(f64, f64)> {
    for _ in 0..50 {
        op.call().await.map_err(anyhow::Error::msg)?;
    }
    let before = counters(http, counters_url).await?;
    for _ in 0..calls {
        op.call().await.map_err(anyhow::Error::msg)?;
    }
    let after = counters(http, counters_url).await?;
    Ok((
        (after.0 - before.0) / calls as f64,
        (after.1 - before.1) / calls as f64,
    ))
}

pub async fn run(cfg: &AdapterConfig, report: &mut Report) -> anyhow::Result<()> {
    let stack = BrokerStack::start_with(|b| b.env("RUST_LOG", "info")).await;
    let scratch = Scratch::new("bench-adapter");
    let bucket = stack.seed().buckets.demo.clone();
    let tokens: Vec<String> = (0..cfg.users)
        .map(|u| stack.rw_token(&format!("mcp-user-{u:02}@example.com")))
        .collect();
    // The credentials the adapter gets for each token (the broker caches per scope, so
    // ExchangeToken returns the very same credentials): the direct S3 baseline uses them.
    let mut broker = stack.broker.client().await;
    let mut creds = Vec::new();
    for token in &tokens {
        let c = broker
            .exchange_token(ExchangeTokenRequest {
                token: token.clone(),
                role_arn: String::new(),
            })
            .await?
            .into_inner()
            .credentials
            .ok_or_else(|| anyhow::anyhow!("ExchangeToken without credentials"))?;
        creds.push(c);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?;
    let python_sts = StsProxy::start(stack.moto.port());

    let mut figures = Vec::new();
    let mut json_backends = Vec::new();
    for &kind in &cfg.backends {
        let backend = match kind {
            BackendKind::Moto => Backend {
                kind,
                endpoint: stack.aws_endpoint(),
                pid: moto_pid(&stack)?,
                _process: None,
            },
            BackendKind::Stub => {
                let (process, endpoint) =
                    spawn_listening("s3-stub", "stub", &[], &[], &scratch).await?;
                Backend {
                    kind,
                    endpoint,
                    pid: process.pid(),
                    _process: Some(process),
                }
            }
        };
        let (f, json) = run_backend(
            cfg,
            report,
            &stack,
            &backend,
            &tokens,
            &creds,
            &bucket,
            &http,
            &python_sts,
            &scratch,
        )
        .await?;
        figures.push((kind, f));
        json_backends.push(json);
    }

    // The MCP request path without S3: tools/list on the adapter (its own session).
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .env("RUST_LOG", "info")
        .start()
        .await;
    // The floor's `tools/list`: the same broker call, then the adapter's own tool list.
    let tools = McpSession::open(&http, &adapter.mcp_url(), &tokens[0])
        .await
        .map_err(anyhow::Error::msg)?
        .request("tools/list", json!({}))
        .await
        .map_err(anyhow::Error::msg)?;
    let tools_file = scratch.join("tools-list.json");
    std::fs::write(&tools_file, serde_json::to_vec(&tools)?)?;
    let tools_path = tools_file.to_string_lossy().into_owned();
    let (floor, floor_url) = spawn_listening(
        "adapter-floor",
        "tools-list",
        &[&stack.broker.endpoint(), &stack.aws_endpoint()],
        &[("FLOOR_TOOLS_JSON", tools_path.as_str())],
        &scratch,
    )
    .await?;
    let floor_url = format!("{floor_url}/mcp");
    let mut list_rows = Vec::new();
    let mut list_cpu = Vec::new();
    let mut floor_list_cpu = Vec::new();
    for &c in &cfg.concurrency {
        let spec = LoadSpec {
            concurrency: c,
            warmup: cfg.warmup,
            duration: cfg.duration,
        };
        let mut ops = Vec::new();
        for i in 0..c {
            ops.push(ToolsList {
                session: McpSession::open(&http, &adapter.mcp_url(), &tokens[i % tokens.len()])
                    .await
                    .map_err(anyhow::Error::msg)?,
            });
        }
        let pt = measure(
            "mcp-adapter + broker: tools/list",
            spec,
            ops,
            &[adapter.pid(), stack.broker.pid()],
            stack.broker.pid(),
        )
        .await?;
        let mut ops = Vec::new();
        for i in 0..c {
            ops.push(ToolsList {
                session: McpSession::open(&http, &floor_url, &tokens[i % tokens.len()])
                    .await
                    .map_err(anyhow::Error::msg)?,
            });
        }
        let floor_pt = measure(
            "floor (axum handler) + broker: tools/list",
            spec,
            ops,
            &[floor.pid(), stack.broker.pid()],
            stack.broker.pid(),
        )
        .await?;
        for (pt, into) in [(&pt, &mut list_cpu), (&floor_pt, &mut floor_list_cpu)] {
            let s = pt.result.summary();
            let cpu = pt.server_cpu_us.unwrap_or(f64::NAN);
            into.push((c, cpu, pt.broker_cpu_us.unwrap_or(f64::NAN)));
            list_rows.push(load_row(
                pt.label,
                &s,
                &[
                    format!(
                        "{cpu:.0} µs ({:.0} µs)",
                        pt.broker_cpu_us.unwrap_or(f64::NAN)
                    ),
                    format!("{:.2}", pt.load1),
                ],
            ));
        }
    }
    drop((adapter, floor));

    let mut md = String::from(
        "`tools/list` on the adapter (no S3 call): the MCP request path alone, beside the floor \
         answering the same tool list after the same broker call. Server CPU = adapter (or \
         floor) + broker per call (in parentheses the broker's share).\n\n\
         | stack | concurrency | calls/s | p50 | p99 | p99.9 | server CPU/call | load1 |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    md.push_str(&list_rows.join("\n"));
    md.push_str("\n\nTargets (issue 16):\n\n");
    let worst_list = list_cpu.iter().map(|(_, c, _)| *c).fold(0.0, f64::max);
    let at = |cpu: &[(usize, f64, f64)]| {
        cpu.iter()
            .map(|(c, cpu, _)| format!("{cpu:.0} µs at c={c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    md.push_str(&format!(
        "- `tools/list` server CPU < 150 µs: {} → {} (the floor, a bare handler with the same \
         broker check and the same tool list: {})\n",
        at(&list_cpu),
        verdict(worst_list < 150.0),
        at(&floor_list_cpu),
    ));
    for (kind, f) in &figures {
        let (lean_target, paired_target) = match kind {
            BackendKind::Moto => (4.0, 1000.0),
            BackendKind::Stub => (10.0, 300.0),
        };
        let worst_floor = f.ratios.iter().map(|r| r.1).fold(0.0, f64::max);
        let worst_lean = f.ratios.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
        md.push_str(&format!(
            "- on {}: adapter ÷ floor CPU {} → ≤ 1.5× {}; lean Python ÷ adapter CPU {} → ≥ {lean_target}× {} \
             (lean Python ÷ floor: {}); incident Python ÷ adapter {}; paired added latency median {} \
             (floor {}) → ≤ {} {}; calls/s adapter vs lean Python {}\n",
            kind.label(),
            f.ratios
                .iter()
                .map(|r| format!("{:.2}× (c={})", r.1, r.0))
                .collect::<Vec<_>>()
                .join(", "),
            verdict(worst_floor <= 1.5),
            f.ratios
                .iter()
                .map(|r| format!("{:.1}× (c={})", r.2, r.0))
                .collect::<Vec<_>>()
                .join(", "),
            verdict(worst_lean >= lean_target),
            f.ratios
                .iter()
                .map(|r| format!("{:.1}× (c={})", r.2 * r.1, r.0))
                .collect::<Vec<_>>()
                .join(", "),
            f.ratios
                .iter()
                .map(|r| format!("{:.1}× (c={})", r.3, r.0))
                .collect::<Vec<_>>()
                .join(", "),
            us(f.paired.1),
            us(f.floor_paired.1),
            us(paired_target),
            verdict(f.paired.1 <= paired_target),
            f.ratios
                .iter()
                .map(|r| format!("{} vs {} (c={})", rate(r.4), rate(r.5), r.0))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        if let Some(a) = f.allocations {
            md.push_str(&format!(
                "- on {}: adapter allocations per call (adapter-counted): `tools/call {TOOL}` \
                 {:.0} allocations, {:.1} KiB; `tools/list` {:.0} allocations, {:.1} KiB\n",
                kind.label(),
                a.tool_call.0,
                a.tool_call.1 / 1024.0,
                a.tools_list.0,
                a.tools_list.1 / 1024.0,
            ));
        }
    }
    report.add(
        "Adapter: tools/list and the targets",
        md,
        json!({
            "tools_list": list_cpu.iter().map(|(c, cpu, b)| json!({"concurrency": c, "server_cpu_us": cpu, "broker_cpu_us": b})).collect::<Vec<_>>(),
            "floor_tools_list": floor_list_cpu.iter().map(|(c, cpu, b)| json!({"concurrency": c, "server_cpu_us": cpu, "broker_cpu_us": b})).collect::<Vec<_>>(),
            "backends": json_backends,
            "python_assume_role_calls": python_sts.assume_role_count(),
        }),
    )?;
    Ok(())
}

/// Every stack on one backend, at every concurrency; a report section of its own.
#[allow(clippy::too_many_arguments)]
async fn run_backend(
    cfg: &AdapterConfig,
    report: &mut Report,
    stack: &BrokerStack,
    backend: &Backend,
    tokens: &[String],
    creds: &[credbroker_proto::v1::AwsCredentials],
    bucket: &str,
    http: &reqwest::Client,
    python_sts: &StsProxy,
    scratch: &Scratch,
) -> anyhow::Result<(BackendFigures, Value)> {
    let admin = match backend.kind {
        BackendKind::Moto => aws::s3(&backend.endpoint, &stack.seed().users.admin),
        BackendKind::Stub => {
            let admin = aws::s3(&backend.endpoint, &stack.seed().users.admin);
            admin
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("stub bucket: {e:?}"))?;
            admin
        }
    };
    for i in 0..cfg.objects {
        aws::put_object(
            &admin,
            bucket,
            &format!("bench/object-{i:04}.txt"),
            b"benchmark",
        )
        .await
        .map_err(|e| anyhow::anyhow!("seed object: {e}"))?;
    }
    let direct_clients: Vec<S3> = creds
        .iter()
        .map(|c| aws::s3(&backend.endpoint, StaticCreds::from(c)))
        .collect();
    // What one list page holds (the seed's own objects included): every answer must match.
    let expect = aws::list_keys(&direct_clients[0], bucket)
        .await
        .map_err(|e| anyhow::anyhow!("direct list: {e}"))?
        .len()
        .min(100);

    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&backend.endpoint)
        .env("RUST_LOG", "info")
        .start()
        .await;
    let (floor, floor_url) = spawn_listening(
        "adapter-floor",
        backend.kind.tag(),
        &[&stack.broker.endpoint(), &backend.endpoint],
        &[],
        scratch,
    )
    .await?;
    let floor_url = format!("{floor_url}/mcp");
    let (python, python_url) = start_python(
        stack,
        &backend.endpoint,
        &python_sts.endpoint(),
        false,
        scratch,
        http,
        &tokens[0],
    )
    .await?;
    let (lean, lean_url) = start_python(
        stack,
        &backend.endpoint,
        &python_sts.endpoint(),
        true,
        scratch,
        http,
        &tokens[0],
    )
    .await?;
    let arguments = json!({ "bucket": bucket, "max_keys": 100 });

    let mut rows = Vec::new();
    let mut json_points = Vec::new();
    let mut figures = BackendFigures::default();
    for &c in &cfg.concurrency {
        let spec = LoadSpec {
            concurrency: c,
            warmup: cfg.warmup,
            duration: cfg.duration,
        };
        let direct = (0..c)
            .map(|i| DirectList {
                s3: direct_clients[i % cfg.users].clone(),
                bucket: bucket.to_string(),
            })
            .collect();
        let sessions = |url: String| {
            let http = http.clone();
            let tokens = tokens.to_vec();
            let arguments = arguments.clone();
            async move {
                let mut ops = Vec::new();
                for i in 0..c {
                    let session = McpSession::open(&http, &url, &tokens[i % tokens.len()])
                        .await
                        .map_err(anyhow::Error::msg)?;
                    ops.push(ToolCall {
                        session,
                        arguments: arguments.clone(),
                        expect,
                    });
                }
                anyhow::Ok(ops)
            }
        };
        // Direct S3: the "server CPU" column shows this process's own CPU (the load driver and
        // its aws-sdk-s3 clients), i.e. what a bare SDK call costs a Rust client.
        let me = [std::process::id()];
        let broker_pid = stack.broker.pid();
        let mut points = vec![measure(DIRECT, spec, direct, &me, backend.pid).await?];
        let ops = sessions(floor_url.clone()).await?;
        points.push(measure(FLOOR, spec, ops, &[floor.pid(), broker_pid], backend.pid).await?);
        let ops = sessions(adapter.mcp_url()).await?;
        points.push(
            measure(
                ADAPTER,
                spec,
                ops,
                &[adapter.pid(), broker_pid],
                backend.pid,
            )
            .await?,
        );
        let ops = sessions(lean_url.clone()).await?;
        points.push(measure(LEAN, spec, ops, &[lean.pid()], backend.pid).await?);
        let ops = sessions(python_url.clone()).await?;
        points.push(measure(PYTHON, spec, ops, &[python.pid()], backend.pid).await?);

        let find = |label: &str| points.iter().find(|p| p.label == label).expect("measured");
        let cpu = |label: &str| find(label).server_cpu_us.unwrap_or(f64::NAN);
        let d = points[0].result.summary();
        figures.ratios.push((
            c,
            cpu(ADAPTER) / cpu(FLOOR),
            cpu(LEAN) / cpu(ADAPTER),
            cpu(PYTHON) / cpu(ADAPTER),
            find(ADAPTER).result.summary().throughput,
            find(LEAN).result.summary().throughput,
        ));
        for pt in &points {
            let s = pt.result.summary();
            rows.push(load_row(
                pt.label,
                &s,
                &[
                    us(s.p50_us - d.p50_us),
                    match (pt.label, pt.server_cpu_us, pt.broker_cpu_us) {
                        (_, Some(all), Some(broker)) => format!("{all:.0} µs ({broker:.0} µs)"),
                        (DIRECT, Some(client), None) => format!("client {client:.0} µs"),
                        (_, Some(all), None) => format!("{all:.0} µs"),
                        _ => "—".into(),
                    },
                    format!("{:.0} µs", pt.backend_cpu_us),
                    format!("{:.2}", pt.load1),
                ],
            ));
            json_points.push(json!({
                "target": pt.label,
                "summary": s,
                "server_cpu_us_per_call": pt.server_cpu_us,
                "broker_cpu_us_per_call": pt.broker_cpu_us,
                "backend_cpu_us_per_call": pt.backend_cpu_us,
                "load1_before": pt.load1,
            }));
        }
    }
    // The added latency of the adapter and of the floor, in pairs (see `paired_added_latency`),
    // each on one session of its own.
    const PAIRS: usize = 400;
    let mut direct = DirectList {
        s3: direct_clients[0].clone(),
        bucket: bucket.to_string(),
    };
    let mut quartiles = async |url: &str| -> anyhow::Result<(f64, f64, f64)> {
        let mut tool = ToolCall {
            session: McpSession::open(http, url, &tokens[0])
                .await
                .map_err(anyhow::Error::msg)?,
            arguments: arguments.clone(),
            expect,
        };
        for _ in 0..20 {
            // warm-up: connections, the server's S3 client for this credential
            paired_added_latency(&mut direct, &mut tool, 2).await?;
        }
        let diffs = paired_added_latency(&mut direct, &mut tool, PAIRS).await?;
        Ok((
            quantile(&diffs, 0.25),
            quantile(&diffs, 0.5),
            quantile(&diffs, 0.75),
        ))
    };
    figures.paired = quartiles(&adapter.mcp_url()).await?;
    figures.floor_paired = quartiles(&floor_url).await?;
    figures.allocations = Some(
        count_allocations(
            stack,
            &backend.endpoint,
            http,
            &tokens[0],
            &arguments,
            expect,
            backend.kind.tag(),
            scratch,
        )
        .await?,
    );
    let mut md = format!(
        "On **{label}** ({endpoint_note}). `tools/call {TOOL}` on `{bucket}` ({expect} objects in \
         one page), {users} users, each worker its own MCP session (`initialize`, \
         `notifications/initialized`, then `tools/call` with `Mcp-Session-Id` and `Authorization: \
         Bearer` on every request, over keep-alive connections), the same reqwest client for \
         every server. Direct S3 = aws-sdk-s3 `ListObjectsV2` with the credentials the broker \
         issued for the same tokens. {warmup:?} warm-up, {duration:?} per point. \"+p50\" = p50 − \
         direct S3's p50 at the same concurrency. Server CPU = utime+stime per call of adapter + \
         broker, floor + broker, or the Python process (in parentheses: the broker's share; for \
         direct S3, the benchmark process's own CPU); the backend's CPU is counted on no side.\n\n\
         | stack | concurrency | calls/s | p50 | p99 | p99.9 | +p50 over direct S3 | server CPU/call | backend CPU/call | load1 |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        label = backend.kind.label(),
        endpoint_note = match backend.kind {
            BackendKind::Moto => "IAM enforced; a new TCP connection per S3 call",
            BackendKind::Stub => "kept-alive connections, answers from memory, no checks",
        },
        users = cfg.users,
        warmup = cfg.warmup,
        duration = cfg.duration,
    );
    md.push_str(&rows.join("\n"));
    md.push_str(&format!(
        "\n\nAdded latency in pairs ({PAIRS} pairs of one direct `ListObjectsV2` and one \
         `tools/call` back to back on one session, alternating which goes first): adapter median \
         {}, interquartile {} to {}; floor median {}, interquartile {} to {}.\n",
        us(figures.paired.1),
        us(figures.paired.0),
        us(figures.paired.2),
        us(figures.floor_paired.1),
        us(figures.floor_paired.0),
        us(figures.floor_paired.2),
    ));
    report.add(
        &format!("Adapter end to end on {}", backend.kind.label()),
        md,
        json!({
            "backend": backend.kind.label(),
            "points": json_points,
            "paired_added_latency_us": { "pairs": PAIRS, "p25": figures.paired.0, "median": figures.paired.1, "p75": figures.paired.2 },
            "floor_paired_added_latency_us": { "pairs": PAIRS, "p25": figures.floor_paired.0, "median": figures.floor_paired.1, "p75": figures.floor_paired.2 },
        }),
    )?;
    drop((python, lean, floor, adapter));
    let json = json!({
        "backend": backend.kind.label(),
        "ratios": figures.ratios.iter().map(|r| json!({
            "concurrency": r.0, "adapter_over_floor_cpu": r.1, "lean_python_over_adapter_cpu": r.2,
            "lean_python_over_floor_cpu": r.2 * r.1,
            "incident_python_over_adapter_cpu": r.3, "adapter_calls_per_s": r.4, "lean_python_calls_per_s": r.5,
        })).collect::<Vec<_>>(),
        "paired_median_us": figures.paired.1,
        "floor_paired_median_us": figures.floor_paired.1,
        "allocations_per_call": figures.allocations.map(|a| json!({
            "tool_call": {"allocations": a.tool_call.0, "bytes": a.tool_call.1},
            "tools_list": {"allocations": a.tools_list.0, "bytes": a.tools_list.1},
        })),
    });
    Ok((figures, json))
}

/// moto's pid, from the harness that started it.
fn moto_pid(stack: &BrokerStack) -> anyhow::Result<u32> {
    Ok(stack.moto.pid())
}
