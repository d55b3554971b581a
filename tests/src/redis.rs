//! Real `redis-server` processes: standalone, and a 3-master cluster.
//!
//! Every server is started by the test on a free loopback port with its own directory, no
//! persistence (`--save "" --appendonly no`), and is killed by pid when dropped. A standalone
//! server can be stopped and restarted on the same port, for the broker's recovery tests.
//!
//! [`dump_all`](RedisServer::dump_all) reads every key and every value on every node, by type
//! (GET, HGETALL, LRANGE, SMEMBERS, ZRANGE, XRANGE) — not with DUMP, whose RDB encoding
//! LZF-compresses long strings and could hide a plaintext secret — for the "no plaintext secret
//! in Redis" tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ports::{unassigned_port, unassigned_port_with_bus};
use crate::process::{ChildProcess, Scratch};
use crate::tools;

/// One key and everything stored under it.
#[derive(Debug, Clone)]
pub struct RedisEntry {
    pub key: Vec<u8>,
    /// Redis type: `string`, `hash`, `list`, `set`, `zset`, `stream`.
    pub kind: String,
    /// Every bulk string of the value (hash fields and values, list items, …).
    pub values: Vec<Vec<u8>>,
}

impl RedisEntry {
    /// True when `needle` occurs in the key or in any value.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty()
            && (contains(&self.key, needle) || self.values.iter().any(|v| contains(v, needle)))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Keys (printable) of the entries that contain `needle`.
pub fn keys_containing(entries: &[RedisEntry], needle: &[u8]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.contains(needle))
        .map(|e| String::from_utf8_lossy(&e.key).into_owned())
        .collect()
}

/// A redis-server this test started.
#[derive(Debug)]
pub struct RedisServer {
    process: Option<ChildProcess>,
    scratch: Scratch,
    port: u16,
    cluster: bool,
    /// Extra `redis-server` arguments, kept across restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// A standalone server, ready for commands.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            process: None,
            scratch: Scratch::new("redis"),
            port: unassigned_port(),
            cluster: false,
            extra: Vec::new(),
        };
        server.first_start().await;
        server
    }

    /// A standalone server with extra arguments (e.g. `--maxmemory-policy volatile-lru`), which
    /// it keeps across [`RedisServer::restart`].
    pub async fn start_with_args(args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            process: None,
            scratch: Scratch::new("redis"),
            port: unassigned_port(),
            cluster: false,
            extra: args.iter().map(ToString::to_string).collect(),
        };
        server.first_start().await;
        server
    }

    async fn start_cluster_node(taken: &[u16]) -> RedisServer {
        let mut server = RedisServer {
            process: None,
            scratch: Scratch::new("redis-node"),
            port: 0,
            cluster: true,
            extra: Vec::new(),
        };
        server.first_start_avoiding(taken).await;
        server
    }

    /// redis-server cannot bind port 0 and report it (`--port 0` turns TCP off), so the first
    /// start draws a port (see `ports`) and draws again when the server exits because the port
    /// is taken (retry-on-conflict); [`RedisServer::restart`] reuses the port it got.
    async fn first_start(&mut self) {
        self.first_start_avoiding(&[]).await;
    }

    async fn first_start_avoiding(&mut self, taken: &[u16]) {
        const DRAWS: usize = 5;
        for _ in 0..DRAWS {
            while self.port == 0 || taken.contains(&self.port) {
                self.port = if self.cluster {
                    unassigned_port_with_bus()
                } else {
                    unassigned_port()
                };
            }
            match self.try_spawn_and_wait().await {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => self.port = 0,
                Err(log) => panic!("redis-server exited at start:\n{log}"),
            }
        }
        panic!("redis-server: no free port in {DRAWS} draws");
    }

    async fn spawn_and_wait(&mut self) {
        if let Err(log) = self.try_spawn_and_wait().await {
            panic!("redis-server exited at start:\n{log}");
        }
    }

    /// Starts the server on `self.port` and waits until it says it is ready and answers PING;
    /// `Err(its log)` when it exits first.
    async fn try_spawn_and_wait(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut cmd = Command::new(tools::redis_server());
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(self.scratch.path())
        .args(&self.extra);
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "5000"]);
        }
        let log = self.scratch.join("redis.log");
        let mut process = ChildProcess::spawn(&format!("redis-server:{port}"), &mut cmd, &log);
        let addr = crate::ports::loopback(self.port);
        // Its own log first: a PING alone could be answered by another test's server that took
        // the port, while this one is exiting with "Address already in use".
        let ours = process
            .wait_until_or_exit(
                "redis-server logs 'Ready to accept connections'",
                Duration::from_secs(20),
                || {
                    std::future::ready(
                        crate::process::read_lossy(&log).contains("Ready to accept connections"),
                    )
                },
            )
            .await;
        if ours.is_err() {
            return Err(process.log_text());
        }
        process
            .wait_until("PING answers PONG", Duration::from_secs(20), || ping(addr))
            .await;
        self.process = Some(process);
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    pub fn log_text(&self) -> String {
        crate::process::read_lossy(&self.scratch.join("redis.log"))
    }

    pub fn dir(&self) -> PathBuf {
        self.scratch.path().to_path_buf()
    }

    /// Kills the server (SIGKILL: no goodbye to clients). Its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait().await;
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildProcess::is_running)
    }

    /// Every key and value on this server.
    pub async fn dump_all(&self) -> Vec<RedisEntry> {
        dump_node(&self.url()).await
    }

    /// Runs one command and returns its reply.
    pub async fn cmd(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.expect("redis command")
    }
}

/// A 3-master Redis Cluster (no replicas) on loopback, created with `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 cluster-enabled nodes, creates the cluster, waits for `cluster_state:ok`
    /// on every node.
    pub async fn start() -> RedisCluster {
        let mut nodes: Vec<RedisServer> = Vec::new();
        for _ in 0..3 {
            let taken: Vec<u16> = nodes.iter().map(RedisServer::port).collect();
            nodes.push(RedisServer::start_cluster_node(&taken).await);
        }
        let mut create = tokio::process::Command::new(tools::redis_cli());
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(node.host_port());
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        for node in &cluster.nodes {
            let url = node.url();
            let ok = wait_for(Duration::from_secs(30), || cluster_state_ok(url.clone())).await;
            assert!(
                ok,
                "cluster node {} never reported cluster_state:ok",
                node.host_port()
            );
        }
        cluster
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `redis://127.0.0.1:P` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn host_ports(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::host_port)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every key and value on every node.
    pub async fn dump_all(&self) -> Vec<RedisEntry> {
        let mut all = Vec::new();
        for node in &self.nodes {
            all.extend(node.dump_all().await);
        }
        all
    }
}

async fn wait_for<F, Fut>(timeout: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn cluster_state_ok(url: String) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let info: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await;
    info.is_ok_and(|i| i.contains("cluster_state:ok"))
}

/// True when a RESP `PING` to `addr` gets `+PONG`.
async fn ping(addr: std::net::SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

/// Every key and value on one node (`SCAN` sees only the node's own keys in a cluster).
async fn dump_node(url: &str) -> Vec<RedisEntry> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut entries = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let mut read = match kind.as_str() {
            "string" => redis::cmd("GET"),
            "hash" => redis::cmd("HGETALL"),
            "list" => {
                let mut c = redis::cmd("LRANGE");
                c.arg(&key).arg(0).arg(-1);
                c
            }
            "set" => redis::cmd("SMEMBERS"),
            "zset" => {
                let mut c = redis::cmd("ZRANGE");
                c.arg(&key).arg(0).arg(-1).arg("WITHSCORES");
                c
            }
            "stream" => {
                let mut c = redis::cmd("XRANGE");
                c.arg(&key).arg("-").arg("+");
                c
            }
            // Expired between SCAN and TYPE.
            "none" => continue,
            other => panic!("dump_all: unexpected Redis type {other}"),
        };
        if matches!(kind.as_str(), "string" | "hash" | "set") {
            read.arg(&key);
        }
        let value: redis::Value = read.query_async(&mut conn).await.expect("read value");
        let mut values = Vec::new();
        flatten(&value, &mut values);
        entries.push(RedisEntry { key, kind, values });
    }
    entries
}

fn flatten(value: &redis::Value, out: &mut Vec<Vec<u8>>) {
    use redis::Value;
    match value {
        Value::BulkString(bytes) => out.push(bytes.clone()),
        Value::SimpleString(s) => out.push(s.clone().into_bytes()),
        Value::Int(i) => out.push(i.to_string().into_bytes()),
        Value::Double(d) => out.push(d.to_string().into_bytes()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
}
