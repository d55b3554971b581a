//! What operators rely on in the adapter, against the real binary: the Prometheus endpoint on
//! `ADAPTER_METRICS_LISTEN` and the `healthcheck` subcommand ECS runs.

use std::time::Duration;

use e2e::adapter::AdapterBuilder;
use e2e::mcp::McpHttp;
use e2e::stack::BrokerStack;
use e2e::tools;
use serde_json::json;

async fn scrape(url: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return response.text().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics at {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the first sample whose line starts with `name{` and contains every label.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn healthcheck(addr: &str) -> std::process::ExitStatus {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(tools::adapter_bin())
            .args(["healthcheck", "--addr", &addr, "--timeout", "2s"])
            .env_clear()
            .status()
            .expect("run mcp-adapter healthcheck")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_tool_calls_refusals_and_broker_calls() {
    let stack = BrokerStack::start().await;
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .metrics()
        .start()
        .await;
    let mcp = McpHttp::new(&adapter.mcp_url());
    let bucket = stack.seed().buckets.demo.clone();

    let refused = mcp
        .call_tool(
            None,
            None,
            "bucket_objects_list",
            json!({ "bucket": bucket }),
        )
        .await
        .unwrap();
    assert_eq!(refused.status.as_u16(), 401, "{}", refused.text);

    let token = stack.rw_token("alice");
    let listed = mcp
        .call_tool(
            None,
            Some(&token),
            "bucket_objects_list",
            json!({ "bucket": bucket }),
        )
        .await
        .unwrap();
    assert!(listed.is_tool_success(), "{}", listed.text);

    let text = scrape(&adapter.metrics_url()).await;
    assert_eq!(
        sample(
            &text,
            "mcp_adapter_auth_refusals_total",
            &["status=\"401\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mcp_adapter_tool_calls_total",
            &["tool=\"bucket_objects_list\"", "outcome=\"ok\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "mcp_adapter_broker_call_seconds_count",
            &["method=\"ExchangeToken\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        !text.contains("alice") && !text.contains(&token),
        "no subject or token in metrics"
    );

    // The health check ECS runs: 0 against the adapter, 1 against a dead port.
    let live = healthcheck(&format!("127.0.0.1:{}", adapter.port())).await;
    assert!(live.success(), "{live:?}");
    let nobody = e2e::ports::closed_port();
    let dead = healthcheck(&nobody.addr().to_string()).await;
    assert_eq!(dead.code(), Some(1), "{dead:?}");
}
