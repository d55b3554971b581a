//! JavaScript MCP clients against the real stack: moto with IAM enforcement, the broker, and the
//! adapter pointed at moto's S3. The clients live in `tests/clients/js` (a Node package;
//! `scripts/test` runs `npm ci` there and installs Debian's Chromium):
//!
//! - the official TypeScript SDK (`@modelcontextprotocol/sdk`) from Node.js (`src/sdk_client.ts`);
//! - the MCP Inspector's CLI (`mcp-inspector --cli`), as an operator would use it;
//! - the incident's browser frontend, rebuilt on the TypeScript SDK (`src/frontend.ts`, bundled
//!   with esbuild) in headless Chromium driven by playwright-core (`src/browser_driver.ts`), on a
//!   page served from another origin than the adapter's, so that CORS is part of the test.
//!
//! Each test compiles the TypeScript (esbuild, `build.mjs`) into its own directory under the
//! package's gitignored `dist/`, runs a Node program that prints one JSON object, and asserts on
//! it. Each prints the versions it exercised.

use std::path::Path;
use std::time::Duration;

use e2e::node::{Build, NodeRun};
use e2e::ports::free_port;
use e2e::stack::AdapterStack;
use e2e::tools;
use serde_json::{Value, json};

const NODE_TIMEOUT: Duration = Duration::from_secs(90);
const TOOLS: usize = 7;

// ---------------------------------------------------------------------------------------------
// Fixture

type Fixture = AdapterStack;

// ---------------------------------------------------------------------------------------------
// Node

/// Runs `node <args…>` in the JS package's directory with `stdin` as its input.
async fn run_node(args: &[&std::ffi::OsStr], stdin: Option<&Value>) -> NodeRun {
    e2e::node::run_node(args, stdin, NODE_TIMEOUT).await
}

async fn run_script(script: &Path, input: &Value) -> Value {
    e2e::node::run_script(script, input, NODE_TIMEOUT).await
}

fn node_version() -> String {
    let output = std::process::Command::new(tools::node())
        .arg("--version")
        .output()
        .expect("node --version");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// Helpers on MCP results

/// A tool result without isError; returns its structured content.
fn structured<'a>(result: &'a Value, what: &str) -> &'a Value {
    assert_ne!(result["isError"], true, "{what}: error result: {result}");
    let content = &result["structuredContent"];
    assert!(
        content.is_object(),
        "{what}: no structured content: {result}"
    );
    content
}

fn keys(listing: &Value) -> Vec<String> {
    listing["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects: {listing}"))
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// a. The TypeScript SDK from Node.js

#[tokio::test]
async fn typescript_sdk_sends_the_token_on_every_request_and_surfaces_the_401() {
    let build = Build::new("sdk");
    let fx = Fixture::start().await;
    let bucket = fx.bucket();
    let key = "from-js/sdk.txt";
    let out = run_script(
        &build.file("sdk_client.mjs"),
        &json!({
            "url": fx.adapter.mcp_url(),
            "bucket": bucket,
            "key": key,
            "rw_token": fx.stack.rw_token("alice-js"),
            "ro_token": fx.stack.ro_token("bob-js"),
        }),
    )
    .await;
    println!(
        "versions exercised: node {}, @modelcontextprotocol/sdk {}",
        text(&out["versions"]["node"]),
        tools::js_package_version("@modelcontextprotocol/sdk")
    );

    // Read-write: the session, the tools, a listing, a write, the write listed.
    let rw = &out["rw"];
    assert_eq!(rw["protocol_version"], "2025-11-25", "{rw}");
    assert!(rw["session_id"].is_string(), "no Mcp-Session-Id: {rw}");
    let names = strings(&rw["tools"]);
    assert_eq!(names.len(), TOOLS, "{names:?}");
    for tool in ["bucket_objects_list", "bucket_objects_put"] {
        assert!(names.iter().any(|n| n == tool), "{tool} missing: {names:?}");
    }
    let listed = keys(structured(&rw["list"], "rw list"));
    assert!(listed.iter().any(|k| k == "README.txt"), "{listed:?}");
    let put = structured(&rw["put"], "rw put");
    assert_eq!(
        (&put["uploaded"], &put["failed"]),
        (&json!(1), &json!(0)),
        "{put}"
    );
    let again = keys(structured(&rw["again"], "rw list again"));
    assert_eq!(again, vec![key.to_string()], "the write is not listed");
    // Issue 17: the written object as a resource, its key completed, progress from 20 items.
    assert_eq!(
        rw["resource"]["ok"]["contents"][0]["text"], "written by the TypeScript SDK",
        "{rw}"
    );
    assert!(
        rw["completion"]["ok"]["completion"]["values"]
            .as_array()
            .is_some_and(|values| values.contains(&json!(key))),
        "{rw}"
    );
    assert_eq!(
        structured(&rw["put20"]["ok"], "rw put of 20")["uploaded"],
        20,
        "{rw}"
    );
    let progress = rw["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 20, "{rw}");
    assert_eq!(progress[19]["progress"], 20, "{rw}");
    assert_eq!(progress[19]["total"], 20, "{rw}");
    let answers = rw["answers"].as_array().unwrap();
    assert!(
        answers.len() >= 6,
        "initialize, initialized, tools/list, 3 calls, DELETE: {answers:?}"
    );
    for answer in answers {
        assert_eq!(
            answer["has_auth"], true,
            "a request without the token: {answer}"
        );
        let status = answer["status"].as_u64().unwrap();
        assert!(
            (200..300).contains(&status) || (answer["method"] == "GET" && status == 405),
            "{answer}"
        );
    }
    assert!(
        answers
            .iter()
            .any(|a| a["method"] == "DELETE" && a["status"].as_u64().unwrap() < 300),
        "terminateSession's DELETE: {answers:?}"
    );

    // Read-only: lists, and S3 (moto's IAM) refuses the write.
    let ro = &out["ro"];
    let listed = keys(structured(&ro["list"], "ro list"));
    assert!(listed.iter().any(|k| k == "README.txt"), "{listed:?}");
    let put = &ro["put"];
    assert_eq!(put["isError"], true, "the read-only role wrote: {put}");
    let error = &put["structuredContent"]["error"];
    assert_eq!(error["code"], "AccessDenied", "{put}");
    assert_eq!(
        (&error["uploaded"], &error["failed"]),
        (&json!(0), &json!(1)),
        "{put}"
    );
    assert_eq!(
        error["results"][0]["error"]["code"], "AccessDenied",
        "{put}"
    );

    // No token: with the default ADAPTER_REQUIRE_AUTH=all, initialize itself is the 401,
    // surfaced by the SDK (the MCP authorization spec: the token goes on every request).
    let anonymous = &out["anonymous"];
    let error = &anonymous["connected"];
    assert_eq!(error["name"], "StreamableHTTPError", "{anonymous}");
    assert_eq!(error["code"], 401, "{anonymous}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Authorization: Bearer <JWT>"),
        "the SDK's error does not say what to send: {message}"
    );
    let refused = anonymous["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] == 401)
        .unwrap_or_else(|| panic!("no HTTP 401 answer: {anonymous}"));
    assert_eq!(refused["has_auth"], false);
    assert_eq!(refused["www_authenticate"], fx.challenge(), "{refused}");

    let log = fx.adapter.log_text();
    assert!(
        log.contains("no auth header, refusing request that needs a token"),
        "{log}"
    );
    assert!(
        !log.contains("no auth header, allowing initialization"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// b. The MCP Inspector CLI

async fn inspector(url: &str, header: Option<&str>, method: &[&str]) -> NodeRun {
    let cli = tools::js_dir().join("node_modules/.bin/mcp-inspector");
    let mut args: Vec<std::ffi::OsString> = vec![
        cli.into_os_string(),
        "--cli".into(),
        url.into(),
        "--transport".into(),
        "http".into(),
    ];
    if let Some(header) = header {
        args.push("--header".into());
        args.push(header.into());
    }
    args.extend(method.iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run_node(&refs, None).await
}

#[tokio::test]
async fn mcp_inspector_cli_lists_and_writes_with_a_bearer_header_and_is_refused_without() {
    let fx = Fixture::start().await;
    let bucket = fx.bucket();
    let url = fx.adapter.mcp_url();
    let header = format!(
        "Authorization: Bearer {}",
        fx.stack.rw_token("carol-inspector")
    );
    println!(
        "versions exercised: node {}, @modelcontextprotocol/inspector {} (its CLI on \
         @modelcontextprotocol/sdk {})",
        node_version(),
        tools::js_package_version("@modelcontextprotocol/inspector"),
        tools::js_package_version("@modelcontextprotocol/sdk"),
    );

    let listed = inspector(&url, Some(&header), &["--method", "tools/list"]).await;
    let tools_listed = listed.json("mcp-inspector tools/list");
    assert_eq!(
        tools_listed["tools"].as_array().map(Vec::len),
        Some(TOOLS),
        "{tools_listed}"
    );

    let bucket_arg = format!("bucket=s3://{bucket}");
    let list_args = [
        "--method",
        "tools/call",
        "--tool-name",
        "bucket_objects_list",
        "--tool-arg",
        bucket_arg.as_str(),
    ];
    let run = inspector(&url, Some(&header), &list_args).await;
    println!("mcp-inspector tools/call took {:?}", run.took);
    let result = run.json("mcp-inspector tools/call bucket_objects_list");
    let listed = keys(structured(&result, "inspector list"));
    assert!(listed.iter().any(|k| k == "README.txt"), "{listed:?}");

    // A write: --tool-arg values that are JSON are passed as JSON.
    let items = r#"items=[{"key":"from-js/inspector.txt","text":"written by mcp-inspector"}]"#;
    let bucket_name = format!("bucket={bucket}");
    let run = inspector(
        &url,
        Some(&header),
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "bucket_objects_put",
            "--tool-arg",
            bucket_name.as_str(),
            items,
        ],
    )
    .await;
    let put = run.json("mcp-inspector tools/call bucket_objects_put");
    assert_eq!(structured(&put, "inspector put")["uploaded"], 1, "{put}");
    let run = inspector(&url, Some(&header), &list_args).await;
    let listed = keys(structured(
        &run.json("mcp-inspector list again"),
        "inspector list again",
    ));
    assert!(
        listed.iter().any(|k| k == "from-js/inspector.txt"),
        "{listed:?}"
    );

    // Without the header: with the default ADAPTER_REQUIRE_AUTH=all the CLI cannot even connect
    // (initialize is refused with HTTP 401), and it fails showing the adapter's JSON-RPC error.
    // (The CLI prints the SDK error's message, which holds the answer's body but not its status;
    // the SDK test above checks the status itself.)
    let run = inspector(&url, None, &list_args).await;
    assert!(
        !run.status.success(),
        "mcp-inspector without a token succeeded:\n{}",
        run.stdout
    );
    let said = format!("{}\n{}", run.stdout, run.stderr);
    for expected in [
        "Failed to connect to MCP server",
        r#""code":-32001"#,
        "Authorization: Bearer <JWT>",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        assert!(
            said.contains(expected),
            "the CLI's error does not show {expected:?}:\n{said}"
        );
    }
    assert!(
        fx.adapter
            .log_text()
            .contains("no auth header, refusing request that needs a token"),
        "the adapter did not refuse the call"
    );
}

// ---------------------------------------------------------------------------------------------
// c. The incident's frontend in headless Chromium

/// The ports of the page's origin and of a foreign origin, two different ones. Drawn before the
/// adapter starts (see `e2e::ports`): its `ADAPTER_ALLOWED_ORIGINS` must name the page's origin,
/// and the Node driver serves both pages only later.
fn page_ports() -> (u16, u16) {
    let page_port = free_port();
    let foreign_port = loop {
        let port = free_port();
        if port != page_port {
            break port;
        }
    };
    (page_port, foreign_port)
}

#[tokio::test]
async fn browser_frontend_broken_client_gets_401_and_fixed_client_lists_and_writes() {
    let build = Build::new("browser");
    let (page_port, foreign_port) = page_ports();
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let fx = Fixture::start_with(|b| b.env("ADAPTER_ALLOWED_ORIGINS", &page_origin)).await;
    let token = fx.stack.rw_token("dana-browser");
    browser_frontend(
        &build,
        &fx.adapter.mcp_url(),
        &fx.challenge(),
        &fx.bucket(),
        &token,
        (page_port, foreign_port),
    )
    .await;
}

/// The same page through a round-robin balancer over three adapters (no stickiness): every
/// request of the browser's session may land on another adapter (issue 19).
#[tokio::test]
async fn browser_frontend_through_a_balancer_over_three_adapters() {
    let build = Build::new("browser-replicas");
    let (page_port, foreign_port) = page_ports();
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let fleet =
        e2e::fleet::Fleet::start(3, |b| b.env("ADAPTER_ALLOWED_ORIGINS", &page_origin)).await;
    let token = fleet.rw_token("dana-browser-replicas");
    browser_frontend(
        &build,
        &fleet.balancer.mcp_url(),
        &fleet.challenge(),
        &fleet.bucket(),
        &token,
        (page_port, foreign_port),
    )
    .await;
    let hits = fleet.balancer.hits();
    println!("requests per adapter: {hits:?}");
    assert!(hits.iter().all(|&h| h > 0), "{hits:?}");
}

/// Runs the browser driver against `mcp_url` (whose adapters allow the page's origin) and checks
/// everything the page and Chromium saw.
async fn browser_frontend(
    build: &Build,
    mcp_url: &str,
    challenge: &str,
    bucket: &str,
    token: &str,
    (page_port, foreign_port): (u16, u16),
) {
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let key = "from-js/browser.txt";
    let out = run_script(
        &build.file("browser_driver.mjs"),
        &json!({
            "mcp_url": mcp_url,
            "bucket": bucket,
            "key": key,
            "token": token,
            "page_port": page_port,
            "foreign_port": foreign_port,
            "chromium": tools::chromium(),
        }),
    )
    .await;
    let versions = &out["versions"];
    println!(
        "versions exercised: node {}, @modelcontextprotocol/sdk {} (bundled by esbuild {}), \
         playwright-core {}, Chromium {}",
        text(&versions["node"]),
        tools::js_package_version("@modelcontextprotocol/sdk"),
        tools::js_package_version("esbuild"),
        text(&versions["playwright_core"]),
        text(&versions["chromium"])
    );
    assert_eq!(out["page_origin"], page_origin);
    assert_eq!(out["page_errors"], json!([]), "{out}");
    let requests = out["requests"].as_array().unwrap();
    println!("requests the page made to /mcp, as Chromium sent them:");
    for r in requests {
        println!(
            "  {:<6} {:<6} {:<34} Authorization: {:<5} -> {}",
            text(&r["phase"]),
            text(&r["method"]),
            text(&r["rpc"]),
            r["has_auth"],
            r["status"]
        );
    }
    let of =
        |phase: &str| -> Vec<&Value> { requests.iter().filter(|r| r["phase"] == phase).collect() };
    // Chromium adds `Origin` when it sends a request; one the client aborted before any answer
    // (the SDK's standalone GET event stream, when it closes) may never have been sent, and then
    // Playwright knows only the headers the page set. Those are left out of this check.
    for request in requests
        .iter()
        .filter(|r| r["phase"] != "foreign")
        .filter(|r| !(r["status"].is_null() && r["failure"] == "net::ERR_ABORTED"))
    {
        assert_eq!(
            request["origin"], page_origin,
            "not a cross-origin request: {request}"
        );
    }

    // The broken client: its initialize carried the token (which made the session its user's),
    // its later requests did not and got 401 — tools/list included, since a session with an
    // owner serves nothing without the owner's token; the page shows the 401 and what to send.
    let broken = &out["broken"];
    assert_eq!(broken["status"], "done", "{broken}\n{out}");
    let text = broken["text"].as_str().unwrap();
    for expected in [
        "initialize: ok",
        "tools/list refused: HTTP 401",
        "bucket_objects_list refused: HTTP 401",
        "bucket_objects_put refused: HTTP 401",
        "Authorization: Bearer <JWT>",
        &format!("WWW-Authenticate: {challenge}"),
    ] {
        assert!(
            text.contains(expected),
            "the broken page does not show {expected:?}:\n{text}"
        );
    }
    assert!(!text.contains("ALLOWED"), "{text}");
    let seen = of("broken");
    let initialize = seen
        .iter()
        .find(|r| r["rpc"] == "initialize")
        .unwrap_or_else(|| panic!("no initialize seen: {seen:?}"));
    assert_eq!(initialize["has_auth"], true, "{initialize}");
    let calls: Vec<&&Value> = seen
        .iter()
        .filter(|r| {
            let rpc = r["rpc"].as_str().unwrap();
            rpc.starts_with("tools/call") || rpc == "tools/list"
        })
        .collect();
    assert_eq!(calls.len(), 3, "{seen:?}");
    for call in calls {
        assert_eq!(call["has_auth"], false, "{call}");
        assert_eq!(call["status"], 401, "{call}");
    }

    // The fixed client: every request to /mcp carried the token (the incident's monitor
    // checked "every request after the first"; this one sends it on the first too); the page
    // lists the bucket, writes, and lists the new object.
    let fixed = &out["fixed"];
    assert_eq!(fixed["status"], "done", "{fixed}\n{out}");
    let text = fixed["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("bucket_objects_put: uploaded 1 of 1: {key}")),
        "{text}"
    );
    assert!(text.contains("session ended (DELETE)"), "{text}");
    let objects = strings(&fixed["objects"]);
    for expected in ["README.txt", key] {
        assert!(
            objects.iter().any(|o| o == expected),
            "the page does not list {expected}: {objects:?}"
        );
    }
    let seen = of("fixed");
    let rpcs: Vec<&str> = seen.iter().map(|r| r["rpc"].as_str().unwrap()).collect();
    for expected in [
        "initialize",
        "notifications/initialized",
        "event-stream",
        "tools/list",
        "tools/call bucket_objects_list",
        "tools/call bucket_objects_put",
        "end-session",
    ] {
        assert!(rpcs.contains(&expected), "{expected} not seen: {rpcs:?}");
    }
    for (number, request) in seen.iter().enumerate() {
        assert_eq!(
            (&request["has_auth"], &request["auth_is_token"]),
            (&json!(true), &json!(true)),
            "fixed request #{} carried no (or another) Authorization: {request}",
            number + 1
        );
        if request["method"] != "GET" {
            let status = request["status"].as_u64().unwrap_or(0);
            assert!((200..300).contains(&status), "{request}");
        }
    }

    // The same page from an origin the adapter does not allow: the adapter's preflight answer
    // carries no Access-Control-Allow-Origin, so Chromium never sends the fixed client's first
    // request (`net::ERR_FAILED`, no status) and the page gets "Failed to fetch".
    let foreign = &out["foreign"];
    let status = foreign["status"].as_str().unwrap_or_default();
    assert!(
        status.starts_with("failed: TypeError: Failed to fetch"),
        "the page on a foreign origin got somewhere: {foreign}"
    );
    assert_eq!(foreign["objects"], json!([]), "{foreign}");
    let foreign_origin = format!("http://127.0.0.1:{foreign_port}");
    let console = strings(&out["console"]);
    assert!(
        console
            .iter()
            .any(|line| line.contains("blocked by CORS policy")
                && line.contains(&format!("from origin '{foreign_origin}'"))),
        "Chromium did not report the CORS refusal: {console:#?}"
    );
    let seen = of("foreign");
    assert!(!seen.is_empty(), "no request from the foreign origin seen");
    for request in seen {
        assert_ne!(
            request["rpc"], "tools/call bucket_objects_list",
            "{request}"
        );
        let status = request["status"].as_u64();
        assert!(
            status.is_none_or(|s| !(200..300).contains(&s)),
            "a request from a foreign origin succeeded: {request}"
        );
    }
}
