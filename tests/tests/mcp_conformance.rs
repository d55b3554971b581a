//! The official MCP conformance suite (`@modelcontextprotocol/conformance` 0.1.16, pinned in
//! `tests/clients/js/package.json`) against the real adapter, broker and moto.
//!
//! The suite sends no token; an [`AuthProxy`] in front of the adapter adds a real one (issued for
//! a test user by the test's token minter). On Node.js 20 the suite needs `fs.globSync`, which
//! `tests/clients/js/conformance-hook.mjs` supplies. Every server scenario for a capability the
//! adapter declares must pass; the ones that need the suite's own fixture server (`test://…`
//! resources, `test_*` tools and prompts) do not apply and are listed in adapter/README.md.

use std::path::Path;
use std::time::Duration;

use e2e::adapter::AdapterBuilder;
use e2e::auth_proxy::AuthProxy;
use e2e::stack::BrokerStack;
use e2e::tools;
use serde_json::Value;

/// The scenarios that apply, and whether a WARNING is acceptable in them. `server-sse-polling`
/// warns that the server has no `test_reconnection` tool (a fixture of the suite's own server).
const SCENARIOS: &[(&str, bool)] = &[
    ("server-initialize", false),
    ("ping", false),
    ("tools-list", false),
    ("server-sse-multiple-streams", false),
    ("server-sse-polling", true),
    ("dns-rebinding-protection", false),
    ("logging-set-level", false),
];

/// Every `checks.json` under `dir`, flattened: `(scenario file, check)`.
fn checks(dir: &Path) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(checks(&path));
        } else if path.file_name().is_some_and(|n| n == "checks.json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            let list = match value {
                Value::Array(list) => list,
                Value::Object(ref o) if o.get("checks").is_some() => {
                    o["checks"].as_array().cloned().unwrap_or_default()
                }
                other => vec![other],
            };
            found.extend(list.into_iter().map(|c| (path.display().to_string(), c)));
        }
    }
    found
}

#[tokio::test]
async fn the_official_conformance_scenarios_pass() {
    let stack = BrokerStack::start().await;
    let proxy = AuthProxy::bind(&stack.rw_token("conformance"));
    // dns-rebinding-protection sends `Origin: http://<host:port of the URL>` and expects 2xx.
    let origin = format!("http://127.0.0.1:{}", proxy.port());
    let adapter = AdapterBuilder::new(&stack.broker.endpoint())
        .s3_endpoint(&stack.aws_endpoint())
        .env("ADAPTER_ALLOWED_ORIGINS", &origin)
        .start()
        .await;
    proxy.forward_to(adapter.port());
    let url = format!("http://127.0.0.1:{}/mcp", proxy.port());
    let js = tools::js_dir();
    let suite = js.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        suite.exists(),
        "{} missing: run npm ci in tests/clients/js",
        suite.display()
    );

    let mut problems = Vec::new();
    for (scenario, warning_ok) in SCENARIOS {
        let out = tempfile::tempdir().unwrap();
        let run = tokio::process::Command::new(tools::node())
            .current_dir(&js)
            .arg("--import")
            .arg("./conformance-hook.mjs")
            .arg(&suite)
            .args(["server", "--url", &url, "--scenario", scenario, "-o"])
            .arg(out.path())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(180), run)
            .await
            .unwrap_or_else(|_| panic!("{scenario} did not finish within 180 s"))
            .expect("run the conformance suite");
        let results = checks(out.path());
        let log = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for (_, check) in &results {
            eprintln!("{scenario}: {} {}", check["id"], check["status"]);
        }
        if !results.iter().any(|(_, c)| c["status"] == "SUCCESS") {
            problems.push(format!("{scenario}: no successful check\n{log}"));
        }
        for (file, check) in &results {
            let status = check["status"].as_str().unwrap_or("");
            if status == "FAILURE" || (status == "WARNING" && !warning_ok) {
                problems.push(format!("{scenario} ({file}): {status}: {check}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
