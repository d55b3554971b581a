//! `adapter-floor BROKER_URL S3_ENDPOINT [ADDR]`: the adapter's floor for the benchmarks (see
//! `credbroker_bench::adapter_floor`). Binds ADDR (default `127.0.0.1:0`) and prints
//! `listening on <addr>` once it accepts connections. With `FLOOR_TOOLS_JSON` naming a file
//! holding the `result` of the adapter's `tools/list`, it answers `tools/list` too.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(broker), Some(s3)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: adapter-floor BROKER_URL S3_ENDPOINT [ADDR]");
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let tools = match std::env::var_os("FLOOR_TOOLS_JSON") {
        Some(path) => Some(serde_json::from_slice(&std::fs::read(&path)?)?),
        None => None,
    };
    credbroker_bench::adapter_floor::run(listener, &broker, &s3, tools).await
}
