//! `adapter-floor BROKER_URL S3_ENDPOINT [ADDR]`: the adapter's floor for the benchmarks (see
//! `credbroker_bench::adapter_floor`). Binds ADDR (default `127.0.0.1:0`) and prints
//! `listening on <addr>` once it accepts connections.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(broker), Some(s3)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: adapter-floor BROKER_URL S3_ENDPOINT [ADDR]");
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    credbroker_bench::adapter_floor::run(listener, &broker, &s3).await
}
