//! The adapter end to end: `tools/call bucket_objects_list` through mcp-adapter + broker + moto,
//! against (a) a direct aws-sdk-s3 `ListObjectsV2` on the same moto with the same credentials
//! (the adapter's added latency) and (b) the Python stack the incident's backend used
//! (`bench/python/mcp_s3_server.py`: the official SDK's `MCPServer` with boto3, validating the same
//! HS256 JWT per call, one AssumeRole per token), driven by the same client at the same concurrency.
//!
//! moto is slow (single Python process) and dominates wall time on every side, so the comparison
//! that says what the MCP stacks cost is server CPU per tool call: utime+stime of adapter + broker
//! against the Python server process, read from /proc before and after each run. moto's own CPU is
//! reported beside it and counted on neither side.

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
use crate::report::{Report, load_row, us, verdict};

#[derive(Debug, Clone)]
pub struct AdapterConfig {
    pub concurrency: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Distinct users (tokens); worker i is user i mod users.
    pub users: usize,
    /// Objects put in the bucket before measuring (one list page returns them all).
    pub objects: usize,
}

const TOOL: &str = "bucket_objects_list";
const DIRECT: &str = "direct S3 (aws-sdk-s3)";
const ADAPTER: &str = "mcp-adapter + broker";
const PYTHON: &str = "Python MCPServer + boto3";

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
    sts_endpoint: &str,
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
        .env("BENCH_S3_ENDPOINT", stack.aws_endpoint())
        .env("BENCH_STS_ENDPOINT", sts_endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", &broker_user.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &broker_user.secret_access_key);
    let mut process = ChildProcess::spawn("python-mcp", &mut cmd, &scratch.join("python.log"));
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
    moto_cpu_us: f64,
    load1: f64,
}

async fn measure<O: Op>(
    label: &'static str,
    spec: LoadSpec,
    ops: Vec<O>,
    server_pids: &[u32],
    moto_pid: u32,
) -> anyhow::Result<Point> {
    let load1 = procfs::load1();
    let cpu_before = procfs::cpu_time_of(server_pids)?;
    let broker_before = server_pids
        .get(1)
        .map(|p| procfs::cpu_time(*p))
        .transpose()?;
    let moto_before = procfs::cpu_time(moto_pid)?;
    let result = driver::run(spec, ops).await;
    let cpu = procfs::cpu_time_of(server_pids)? - cpu_before;
    let broker = match (server_pids.get(1), broker_before) {
        (Some(pid), Some(before)) => Some(procfs::cpu_time(*pid)? - before),
        _ => None,
    };
    let moto = procfs::cpu_time(moto_pid)? - moto_before;
    result.ensure_clean(label)?;
    // Requests started in the warm-up are not in `ops` but did use CPU; count every call the
    // servers handled in the sampled interval.
    let calls = result.ops as f64 * (spec.warmup + spec.duration).as_secs_f64()
        / spec.duration.as_secs_f64();
    Ok(Point {
        label,
        server_cpu_us: (!server_pids.is_empty()).then(|| cpu.as_secs_f64() * 1e6 / calls),
        broker_cpu_us: broker.map(|b| b.as_secs_f64() * 1e6 / calls),
        moto_cpu_us: moto.as_secs_f64() * 1e6 / calls,
        result,
        load1,
    })
}

pub async fn run(cfg: &AdapterConfig, report: &mut Report) -> anyhow::Result<()> {
    let stack = BrokerStack::start_with(|b| b.env("RUST_LOG", "info")).await;
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .env("RUST_LOG", "info")
        .start()
        .await;
    let moto_pid = moto_pid(&stack)?;
    let bucket = stack.seed().buckets.demo.clone();
    let admin = aws::s3(&stack.aws_endpoint(), &stack.seed().users.admin);
    for i in 0..cfg.objects {
        aws::put_object(
            &admin,
            &bucket,
            &format!("bench/object-{i:04}.txt"),
            b"benchmark",
        )
        .await
        .map_err(|e| anyhow::anyhow!("seed object: {e}"))?;
    }
    let tokens: Vec<String> = (0..cfg.users)
        .map(|u| stack.rw_token(&format!("mcp-user-{u:02}@example.com")))
        .collect();
    // The credentials the adapter gets for each token (the broker caches per scope, so
    // ExchangeToken returns the very same credentials): the direct S3 baseline uses them.
    let mut broker = stack.broker.client().await;
    let mut direct_clients = Vec::new();
    for token in &tokens {
        let creds = broker
            .exchange_token(ExchangeTokenRequest {
                token: token.clone(),
                role_arn: String::new(),
            })
            .await?
            .into_inner()
            .credentials
            .ok_or_else(|| anyhow::anyhow!("ExchangeToken without credentials"))?;
        direct_clients.push(aws::s3(&stack.aws_endpoint(), StaticCreds::from(&creds)));
    }

    // What one list page holds (the seed's own objects included): every answer must match.
    let expect = aws::list_keys(&direct_clients[0], &bucket)
        .await
        .map_err(|e| anyhow::anyhow!("direct list: {e}"))?
        .len()
        .min(100);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?;
    let python_sts = StsProxy::start(stack.moto.port());
    let scratch = Scratch::new("bench-python");
    let (python, python_url) =
        start_python(&stack, &python_sts.endpoint(), &scratch, &http, &tokens[0]).await?;
    let arguments = json!({ "bucket": bucket, "max_keys": 100 });

    let mut rows = Vec::new();
    let mut json_points = Vec::new();
    let mut summary = Vec::new();
    for &c in &cfg.concurrency {
        let spec = LoadSpec {
            concurrency: c,
            warmup: cfg.warmup,
            duration: cfg.duration,
        };
        let direct = (0..c)
            .map(|i| DirectList {
                s3: direct_clients[i % cfg.users].clone(),
                bucket: bucket.clone(),
            })
            .collect();
        let sessions = |url: String| {
            let http = http.clone();
            let tokens = tokens.clone();
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
        // its aws-sdk-s3 clients), i.e. what a bare SDK call costs a Rust client against moto.
        let me = [std::process::id()];
        let mut points = vec![measure(DIRECT, spec, direct, &me, moto_pid).await?];
        let ops = sessions(adapter.mcp_url()).await?;
        let pids = [adapter.pid(), stack.broker.pid()];
        points.push(measure(ADAPTER, spec, ops, &pids, moto_pid).await?);
        let ops = sessions(python_url.clone()).await?;
        points.push(measure(PYTHON, spec, ops, &[python.pid()], moto_pid).await?);

        let find = |label: &str| points.iter().find(|p| p.label == label);
        let d = points[0].result.summary();
        let python_point = find(PYTHON).expect("measured");
        let py_cpu = python_point.server_cpu_us.unwrap_or(f64::NAN);
        let py = python_point.result.summary();
        let mut entry = json!({ "concurrency": c, "python_added_p50_us": py.p50_us - d.p50_us });
        for (key, label) in [("adapter", ADAPTER)] {
            if let Some(pt) = find(label) {
                let s = pt.result.summary();
                entry[format!("{key}_added_p50_us")] = json!(s.p50_us - d.p50_us);
                entry[format!("{key}_python_cpu_ratio")] =
                    json!(py_cpu / pt.server_cpu_us.unwrap_or(f64::NAN));
                entry[format!("{key}_throughput_over_python")] =
                    json!(s.throughput / py.throughput);
            }
        }
        summary.push(entry);
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
                    format!("{:.0} µs", pt.moto_cpu_us),
                    format!("{:.2}", pt.load1),
                ],
            ));
            json_points.push(json!({
                "target": pt.label,
                "summary": s,
                "server_cpu_us_per_call": pt.server_cpu_us,
                "broker_cpu_us_per_call": pt.broker_cpu_us,
                "moto_cpu_us_per_call": pt.moto_cpu_us,
                "load1_before": pt.load1,
            }));
        }
    }
    // The adapter's added latency, in pairs (see `paired_added_latency`), on one session.
    const PAIRS: usize = 400;
    let mut direct = DirectList {
        s3: direct_clients[0].clone(),
        bucket: bucket.clone(),
    };
    let mut tool = ToolCall {
        session: McpSession::open(&http, &adapter.mcp_url(), &tokens[0])
            .await
            .map_err(anyhow::Error::msg)?,
        arguments: arguments.clone(),
        expect,
    };
    for _ in 0..20 {
        // warm-up: connections, the adapter's S3 client for this credential
        paired_added_latency(&mut direct, &mut tool, 2).await?;
    }
    let diffs = paired_added_latency(&mut direct, &mut tool, PAIRS).await?;
    let paired = (
        quantile(&diffs, 0.25),
        quantile(&diffs, 0.5),
        quantile(&diffs, 0.75),
    );
    let python_sts_calls = python_sts.assume_role_count();
    let mut md = format!(
        "`tools/call {TOOL}` on `{bucket}` ({expect} objects in one page), {users} users, \
         each worker its own MCP session (`initialize`, `notifications/initialized`, then \
         `tools/call` with `Mcp-Session-Id` and `Authorization: Bearer` on every request, over \
         keep-alive connections), the same reqwest client for every MCP server. Direct S3 = \
         aws-sdk-s3 `ListObjectsV2` with the credentials the broker issued for the same tokens. \
         {warmup:?} warm-up, {duration:?} per point. \"+p50\" = p50 − direct S3's p50 at the same \
         concurrency. Server CPU = utime+stime per call of adapter + broker, or of the Python \
         process; moto's CPU is counted on neither side. The Python server made \
         {python_sts_calls} AssumeRole calls (one per token). In parentheses: the broker's \
         share of the adapter + broker CPU; for direct S3, the CPU of the benchmark process itself \
         (its aws-sdk-s3 clients: what the same S3 call costs any Rust client).\n\n\
         | stack | concurrency | calls/s | p50 | p99 | p99.9 | +p50 over direct S3 | server CPU/call | moto CPU/call | load1 |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        users = cfg.users,
        warmup = cfg.warmup,
        duration = cfg.duration,
    );
    md.push_str(&rows.join("\n"));
    md.push_str("\n\nTargets:\n\n");
    for (key, label) in [("adapter", ADAPTER)] {
        let ratios: Vec<String> = summary
            .iter()
            .filter_map(|s| {
                s[format!("{key}_python_cpu_ratio")]
                    .as_f64()
                    .map(|r| format!("{r:.1}× at concurrency {}", s["concurrency"]))
            })
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let lowest = summary
            .iter()
            .filter_map(|s| s[format!("{key}_python_cpu_ratio")].as_f64())
            .fold(f64::INFINITY, f64::min);
        let first = &summary[0];
        let added = first[format!("{key}_added_p50_us")]
            .as_f64()
            .unwrap_or(f64::NAN);
        md.push_str(&format!(
            "- {label}: Python ÷ Rust server CPU per call {} → ≥ 10× {}; added p50 over direct \
             S3 at concurrency {} (where the median is not moto's queue) +{} → ≤ 1 ms {}\n",
            ratios.join(", "),
            verdict(lowest >= 10.0),
            first["concurrency"],
            us(added),
            verdict(added <= 1000.0),
        ));
    }
    md.push_str(&format!(
        "- mcp-adapter + broker, added latency measured in pairs ({PAIRS} pairs of one direct \
         `ListObjectsV2` and one `tools/call` back to back on one session, alternating which goes \
         first, so that moto's drift cancels): median of (tool call − direct) {}, interquartile \
         {} to {} → ≤ 1 ms {}\n",
        us(paired.1),
        us(paired.0),
        us(paired.2),
        verdict(paired.1 <= 1000.0),
    ));
    report.add(
        "Adapter end to end vs direct S3 and the Python MCP stack",
        md,
        json!({
            "points": json_points,
            "summary": summary,
            "python_assume_role_calls": python_sts_calls,
            "paired_added_latency_us": { "pairs": PAIRS, "p25": paired.0, "median": paired.1, "p75": paired.2 },
        }),
    )?;
    drop(python);
    Ok(())
}

/// moto's pid: the harness does not expose it, so find the `moto_server` child of this process
/// listening on moto's port (our own child, never another process's).
fn moto_pid(stack: &BrokerStack) -> anyhow::Result<u32> {
    let me = std::process::id();
    let port = stack.moto.port().to_string();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if ppid == Some(me) && cmdline.contains("moto_server") && cmdline.contains(&port) {
            return Ok(pid);
        }
    }
    anyhow::bail!("moto_server child on port {port} not found")
}
