//! The official Python MCP client driven by a plan (`tests/clients/python/mcp_plan.py`): the plan
//! goes in on stdin as one JSON line, each step's outcome comes back as one JSON line on stdout,
//! and a `pause` step waits for `go` on stdin. Shared by the adapter tests and the replica tests.

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::tools;

/// A running `mcp_plan.py`.
pub struct PlanRun {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PlanRun {
    /// Starts the client (killed if dropped) and hands it `plan`.
    pub async fn start(plan: &Value) -> PlanRun {
        let script = tools::workspace_root().join("tests/clients/python/mcp_plan.py");
        let mut child = tokio::process::Command::new(tools::python())
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start mcp_plan.py");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(format!("{plan}\n").as_bytes())
            .await
            .expect("write the plan");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        PlanRun {
            child,
            stdin,
            lines,
        }
    }

    /// The next line the client printed, as JSON; `None` once it closed its output.
    pub async fn next_event(&mut self) -> Option<Value> {
        let line = self.lines.next_line().await.expect("read mcp_plan.py")?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
    }

    /// Lets a paused plan go on.
    pub async fn resume(&mut self) {
        self.stdin.write_all(b"go\n").await.expect("write go");
    }

    /// Waits for the client to exit; panics with its stderr unless it succeeded.
    pub async fn finish(self) {
        drop(self.stdin);
        let output = self
            .child
            .wait_with_output()
            .await
            .expect("mcp_plan.py exit");
        assert!(
            output.status.success(),
            "mcp_plan.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
