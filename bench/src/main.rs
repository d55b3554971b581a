//! `credbroker-bench`: runs the benchmarks of issue 7 and writes `report.md` / `results.json`.
//!
//! `scripts/bench` builds everything in release and runs `credbroker-bench all`; each benchmark is
//! also its own subcommand, for reproducing one figure.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use credbroker_bench::report::Report;
use credbroker_bench::scenarios::adapter::{AdapterConfig, BackendKind};
use credbroker_bench::scenarios::cold::ColdConfig;
use credbroker_bench::scenarios::memory::MemoryConfig;
use credbroker_bench::scenarios::startup::StartupConfig;
use credbroker_bench::scenarios::steady::SteadyConfig;
use credbroker_bench::scenarios::warm::WarmConfig;

use credbroker_bench::{floor, scenarios};

#[derive(Debug, Parser)]
#[command(
    name = "credbroker-bench",
    about = "Benchmarks of the credential broker and the MCP adapter"
)]
struct Cli {
    /// Where report.md and results.json go.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args, Clone)]
struct Load {
    /// Concurrency levels (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Measured time per point.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up before each point.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

#[derive(Debug, Args, Clone)]
struct WarmArgs {
    #[command(flatten)]
    load: Load,
    /// HTTP/2 connections shared by all workers (the same for broker and floor).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Rounds of floor, memory and Redis per concurrency, back to back; each row is the median
    /// round (a VM's speed drifts by more than the differences measured).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, Args, Clone)]
struct ColdArgs {
    /// Concurrent cold requests per round.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, Args, Clone)]
struct SteadyArgs {
    /// Credential lifetime the STS proxy reports.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    lifetime: Duration,
    /// BROKER_REFRESH_MARGIN.
    #[arg(long, default_value = "70s", value_parser = humantime::parse_duration)]
    margin: Duration,
    #[arg(long = "for", default_value = "230s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 8)]
    principals: usize,
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    interval: Duration,
}

#[derive(Debug, Args, Clone)]
struct MemoryArgs {
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    #[arg(long, default_value_t = 20_000)]
    redis_sessions: usize,
    #[arg(long, default_value_t = 50)]
    sessions_per_user: usize,
    #[arg(long, default_value_t = 32)]
    bind_concurrency: usize,
}

#[derive(Debug, Args, Clone)]
struct StartupArgs {
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// Skip the adapter (for a tree where mcp-adapter does not build yet).
    #[arg(long)]
    no_adapter: bool,
}

#[derive(Debug, Args, Clone)]
struct AdapterArgs {
    /// Concurrency levels (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,16")]
    concurrency: Vec<usize>,
    /// Measured time per point.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up before each point.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// S3 backends (comma-separated): moto, stub. `--backends` with no value measures only
    /// `tools/list` (the MCP request path without S3).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "moto,stub")]
    backends: Vec<BackendKind>,
    #[arg(long, default_value_t = 8)]
    users: usize,
    #[arg(long, default_value_t = 20)]
    objects: usize,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every benchmark below, in order, with their defaults.
    All {
        /// Skip the adapter benchmarks.
        #[arg(long)]
        no_adapter: bool,
    },
    /// Broker warm path (memory and Redis store) against the floor.
    Warm(WarmArgs),
    /// Concurrent cold requests for one principal → STS calls (1 broker; 2 replicas + Redis).
    Cold(ColdArgs),
    /// STS calls per principal per refresh window under continuous traffic.
    Steady(SteadyArgs),
    /// Broker RSS with many live sessions; bytes per session in Redis.
    Memory(MemoryArgs),
    /// Exec → SERVING for broker and adapter.
    Startup(StartupArgs),
    /// tools/call end to end vs direct S3 and the Python MCP stack.
    Adapter(AdapterArgs),
    /// (internal) the floor server, as its own process.
    FloorServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        response_file: Option<PathBuf>,
    },
}

fn warm(a: &WarmArgs) -> WarmConfig {
    WarmConfig {
        concurrency: a.load.concurrency.clone(),
        warmup: a.load.warmup,
        duration: a.load.duration,
        connections: a.connections,
        sessions: a.sessions,
        users: a.users,
        rounds: a.rounds,
    }
}

fn cold(a: &ColdArgs) -> ColdConfig {
    ColdConfig {
        requests: a.requests,
        rounds: a.rounds,
    }
}

fn steady(a: &SteadyArgs) -> SteadyConfig {
    SteadyConfig {
        lifetime: a.lifetime,
        margin: a.margin,
        duration: a.duration,
        principals: a.principals,
        interval: a.interval,
    }
}

fn memory(a: &MemoryArgs) -> MemoryConfig {
    MemoryConfig {
        sessions: a.sessions,
        redis_sessions: a.redis_sessions,
        sessions_per_user: a.sessions_per_user,
        concurrency: a.bind_concurrency,
    }
}

fn startup(a: &StartupArgs) -> StartupConfig {
    StartupConfig {
        runs: a.runs,
        adapter: !a.no_adapter,
    }
}

fn adapter(a: &AdapterArgs) -> AdapterConfig {
    AdapterConfig {
        concurrency: a.concurrency.clone(),
        warmup: a.warmup,
        duration: a.duration,
        users: a.users,
        objects: a.objects,
        backends: a.backends.clone(),
    }
}

/// Defaults of a subcommand's arguments, for `all`.
fn defaults<T: clap::FromArgMatches + Args>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults"));
    let matches = cmd.get_matches_from(["defaults"]);
    T::from_arg_matches(&matches).expect("defaults parse")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::FloorServer {
        listen,
        response_file,
    } = &cli.command
    {
        return floor::main(*listen, response_file.as_deref());
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut report = Report::new(&cli.out, command)?;
        match &cli.command {
            Cmd::All { no_adapter } => {
                scenarios::startup::run(
                    &StartupConfig {
                        adapter: !no_adapter,
                        ..startup(&defaults())
                    },
                    &mut report,
                )
                .await?;
                scenarios::warm::run(&warm(&defaults()), &mut report).await?;
                scenarios::cold::run(&cold(&defaults()), &mut report).await?;
                if !no_adapter {
                    scenarios::adapter::run(&adapter(&defaults()), &mut report).await?;
                }
                scenarios::memory::run(&memory(&defaults()), &mut report).await?;
                scenarios::steady::run(&steady(&defaults()), &mut report).await?;
            }
            Cmd::Warm(a) => scenarios::warm::run(&warm(a), &mut report).await?,
            Cmd::Cold(a) => scenarios::cold::run(&cold(a), &mut report).await?,
            Cmd::Steady(a) => scenarios::steady::run(&steady(a), &mut report).await?,
            Cmd::Memory(a) => scenarios::memory::run(&memory(a), &mut report).await?,
            Cmd::Startup(a) => scenarios::startup::run(&startup(a), &mut report).await?,
            Cmd::Adapter(a) => scenarios::adapter::run(&adapter(a), &mut report).await?,
            Cmd::FloorServer { .. } => unreachable!("handled above"),
        }
        println!("\nreport: {}", cli.out.join("report.md").display());
        anyhow::Ok(())
    })
}
