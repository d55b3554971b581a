//! Node programs of the JS package (`tests/clients/js`): its TypeScript compiled by esbuild into a
//! directory of the test's own ([`Build`]), and a program run with a JSON input on stdin that
//! prints one JSON object ([`run_node`], [`run_script`]). Shared by the JS client tests and the
//! adapter-replica tests, which drive the same SDK.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::tools;

/// `tests/clients/js/src` compiled by esbuild into `dist/<name>-<pid>`; removed on drop.
pub struct Build {
    dir: PathBuf,
}

impl Build {
    /// Runs `node build.mjs dist/<name>-<pid>`; panics with its output when it fails.
    pub fn new(name: &str) -> Build {
        let js = tools::js_dir();
        let relative = format!("dist/{name}-{}", std::process::id());
        let output = std::process::Command::new(tools::node())
            .arg("build.mjs")
            .arg(&relative)
            .current_dir(&js)
            .output()
            .expect("run node build.mjs");
        assert!(
            output.status.success(),
            "node build.mjs {relative} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Build {
            dir: js.join(relative),
        }
    }

    /// A compiled file (`sdk_client.mjs`, say).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a Node program did.
pub struct NodeRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl NodeRun {
    /// The JSON the program printed (all of stdout, or its last line); panics with its stderr.
    pub fn json(&self, what: &str) -> Value {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(self.stdout.trim())
            .or_else(|_| serde_json::from_str(line))
            .unwrap_or_else(|e| {
                panic!(
                    "{what} printed no JSON ({e}):\nstdout:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
    }
}

/// Runs `node <args…>` in the JS package's directory with `stdin` as its input; panics when it
/// has not finished after `timeout`.
pub async fn run_node(args: &[&OsStr], stdin: Option<&Value>, timeout: Duration) -> NodeRun {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(tools::node())
        .args(args)
        .current_dir(tools::js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut input = child.stdin.take().expect("node's stdin is piped");
    if let Some(value) = stdin {
        input
            .write_all(value.to_string().as_bytes())
            .await
            .expect("write node's stdin");
    }
    drop(input);
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node {args:?} did not finish in {timeout:?}"))
        .expect("node's exit");
    NodeRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// Runs the compiled `script` with `input` on stdin and returns the JSON it printed; prints how
/// long it took.
pub async fn run_script(script: &Path, input: &Value, timeout: Duration) -> Value {
    let run = run_node(&[script.as_os_str()], Some(input), timeout).await;
    let name = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("{name} took {:?}", run.took);
    run.json(&name)
}
