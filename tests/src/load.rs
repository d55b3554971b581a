//! Steady load for fault and load tests: workers that call the adapter's tools or the broker's
//! `GetCredentials` back to back and record every answer with its timing, until told to stop.
//!
//! The records are what the tests judge afterwards: which answers were served, which failed and
//! how, when service stopped and resumed around an injected fault, and — through the access key
//! ids — whether any credential was ever served to the wrong subject.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::mcp::McpHttp;
use crate::rpc::{self, Client};

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Served. For `GetCredentials`: the access key id; for tools: the tool's name.
    Served(String),
    /// A tool result with `isError`: the adapter's error code and message.
    ToolError { code: String, message: String },
    /// An HTTP answer other than 200 from the adapter.
    Http { status: u16, text: String },
    /// A gRPC error from the broker.
    Grpc { code: tonic::Code, message: String },
    /// No answer at all (connection refused or reset, timeout).
    Lost(String),
}

impl Outcome {
    pub fn is_served(&self) -> bool {
        matches!(self, Outcome::Served(_))
    }

    /// A short label for tallies: `served`, `tool:CODE`, `http:STATUS`, `grpc:CODE`, `lost`.
    pub fn label(&self) -> String {
        match self {
            Outcome::Served(_) => "served".into(),
            Outcome::ToolError { code, .. } => format!("tool:{code}"),
            Outcome::Http { status, .. } => format!("http:{status}"),
            Outcome::Grpc { code, .. } => format!("grpc:{code:?}"),
            Outcome::Lost(_) => "lost".into(),
        }
    }
}

/// One call.
#[derive(Debug, Clone)]
pub struct Sample {
    pub worker: usize,
    pub subject: String,
    /// `tool` (through the adapter) or `grpc` (the broker directly).
    pub kind: &'static str,
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Outcome,
}

/// Shared record of all samples plus the stop switch.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn push(&self, sample: Sample) {
        self.samples.lock().expect("samples lock").push(sample);
    }

    /// A copy of every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples lock").clone()
    }

    /// Samples that finished after `t`.
    pub fn finished_after(&self, t: Instant) -> Vec<Sample> {
        self.samples()
            .into_iter()
            .filter(|s| s.finished > t)
            .collect()
    }

    /// Stops every worker and waits for them.
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let workers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.workers.lock().expect("lock"));
        for w in workers {
            w.await.expect("load worker panicked");
        }
    }

    /// A worker calling `tool` with `args` through the adapter, in `session` (or without one),
    /// pausing `pause` between calls (longer after a failure, so an outage is not a busy loop).
    #[allow(clippy::too_many_arguments)]
    pub fn tool_worker(
        &self,
        worker: usize,
        mcp: McpHttp,
        subject: &str,
        token: &str,
        session: Option<String>,
        tool: &'static str,
        args: Value,
        pause: Duration,
    ) {
        let (recorder, subject, token) = (self.clone(), subject.to_string(), token.to_string());
        let handle = tokio::spawn(async move {
            while !recorder.stopped() {
                let started = Instant::now();
                let answer = mcp
                    .call_tool(session.as_deref(), Some(&token), tool, args.clone())
                    .await;
                let outcome = match answer {
                    Err(e) => Outcome::Lost(e),
                    Ok(a) if a.is_tool_success() => Outcome::Served(tool.to_string()),
                    Ok(a) if a.is_tool_error() => Outcome::ToolError {
                        code: a.tool_error_code().unwrap_or("<none>").to_string(),
                        message: a.structured()["error"]["message"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| a.text.clone()),
                    },
                    Ok(a) => Outcome::Http {
                        status: a.status.as_u16(),
                        text: a.text.chars().take(300).collect(),
                    },
                };
                let failed = !outcome.is_served();
                recorder.push(Sample {
                    worker,
                    subject: subject.clone(),
                    kind: "tool",
                    started,
                    finished: Instant::now(),
                    outcome,
                });
                tokio::time::sleep(if failed { pause * 4 } else { pause }).await;
            }
        });
        self.workers.lock().expect("lock").push(handle);
    }

    /// One [`Recorder::grpc_worker`] per broker and user (`(subject, token)`), each on a new
    /// session, numbered from `*next` on (which ends past the last one).
    pub async fn grpc_workers(
        &self,
        brokers: &[crate::broker::Broker],
        users: &[(&str, &str)],
        next: &mut usize,
        pause: Duration,
    ) {
        for broker in brokers {
            let client = broker.client().await;
            for (subject, token) in users {
                self.grpc_worker(
                    *next,
                    client.clone(),
                    subject,
                    token,
                    crate::stack::new_session_id(),
                    pause,
                );
                *next += 1;
            }
        }
    }

    /// A worker calling the broker's `GetCredentials(session_id, token)` directly.
    #[allow(clippy::too_many_arguments)]
    pub fn grpc_worker(
        &self,
        worker: usize,
        client: Client,
        subject: &str,
        token: &str,
        session_id: String,
        pause: Duration,
    ) {
        let (recorder, subject, token) = (self.clone(), subject.to_string(), token.to_string());
        let mut client = client;
        let handle = tokio::spawn(async move {
            while !recorder.stopped() {
                let started = Instant::now();
                let answer = tokio::time::timeout(
                    Duration::from_secs(30),
                    rpc::get_credentials(&mut client, &session_id, &token, ""),
                )
                .await;
                let outcome = match answer {
                    Err(_) => Outcome::Lost("no answer within 30 s".into()),
                    Ok(Ok(r)) => {
                        let session_subject = r.session.map(|s| s.subject).unwrap_or_default();
                        let key = r.credentials.map(|c| c.access_key_id).unwrap_or_default();
                        if session_subject != subject {
                            Outcome::Served(format!("WRONG-SUBJECT:{session_subject}:{key}"))
                        } else {
                            Outcome::Served(key)
                        }
                    }
                    Ok(Err(status)) => Outcome::Grpc {
                        code: status.code(),
                        message: status.message().to_string(),
                    },
                };
                let failed = !outcome.is_served();
                recorder.push(Sample {
                    worker,
                    subject: subject.clone(),
                    kind: "grpc",
                    started,
                    finished: Instant::now(),
                    outcome,
                });
                tokio::time::sleep(if failed { pause * 4 } else { pause }).await;
            }
        });
        self.workers.lock().expect("lock").push(handle);
    }
}

/// Counts of outcome labels.
pub fn tally(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in samples {
        *out.entry(s.outcome.label()).or_default() += 1;
    }
    out
}

/// Access key ids served over gRPC, by subject; and the keys served to more than one subject
/// (must be empty: a credential is never another subject's).
pub fn keys_by_subject(samples: &[Sample]) -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let mut by_subject: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in samples {
        if let Outcome::Served(key) = &s.outcome
            && s.kind == "grpc"
        {
            by_subject
                .entry(s.subject.clone())
                .or_default()
                .insert(key.clone());
            owners
                .entry(key.clone())
                .or_default()
                .insert(s.subject.clone());
        }
    }
    let shared = owners
        .into_iter()
        .filter(|(key, subjects)| subjects.len() > 1 || key.starts_with("WRONG-SUBJECT"))
        .map(|(key, subjects)| format!("{key} served to {subjects:?}"))
        .collect();
    (by_subject, shared)
}

/// For each subject, when it was first served after `t` (None: never).
pub fn first_served_after(samples: &[Sample], t: Instant) -> BTreeMap<String, Option<Duration>> {
    let mut out: BTreeMap<String, Option<Duration>> = BTreeMap::new();
    for s in samples {
        let entry = out.entry(s.subject.clone()).or_insert(None);
        if s.started >= t && s.outcome.is_served() {
            let d = s.finished.duration_since(t);
            if entry.is_none_or(|e| d < e) {
                *entry = Some(d);
            }
        }
    }
    out
}
