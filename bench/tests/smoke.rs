//! Keeps the load driver from rotting: the whole benchmark set runs only from `scripts/bench`
//! (release build, minutes), but this runs in the default test command in a fraction of a second,
//! against the floor server in-process.

use std::time::Duration;

use credbroker_bench::driver::LoadSpec;
use credbroker_bench::floor;
use credbroker_bench::scenarios::warm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_measures_the_floor() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(floor::serve(listener, floor::synthetic_response()));
    let sessions = vec![(
        "mcp-session-smoke-0000000000".to_string(),
        "token".to_string(),
    )];
    let spec = LoadSpec {
        concurrency: 4,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(250),
    };
    let result = warm::measure(&endpoint, &sessions, 1, spec).await.unwrap();
    result.ensure_clean("floor").unwrap();
    let s = result.summary();
    assert!(s.ops > 10, "only {} requests in 250 ms", s.ops);
    assert!(s.throughput > 0.0 && s.p50_us > 0.0 && s.p99_us >= s.p50_us);
    server.abort();
}
