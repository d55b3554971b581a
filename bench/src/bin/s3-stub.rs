//! `s3-stub [ADDR]`: the keep-alive S3 stand-in of the adapter benchmarks (see
//! `credbroker_bench::s3stub`). Binds ADDR (default `127.0.0.1:0`) and prints
//! `listening on <addr>` once it accepts connections.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    credbroker_bench::s3stub::run(listener).await?;
    Ok(())
}
