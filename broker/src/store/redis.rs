//! The shared store: Redis (a single node, or Redis Cluster), so that every broker replica serves
//! the same sessions and STS is called once per credential, not once per replica.
//!
//! ## Layout
//! | key | value | TTL |
//! |---|---|---|
//! | `cb:v1:cred:{<credential id>}` | sealed [`CredentialRecord`] | until the credential expires |
//! | `cb:v1:lock:{<credential id>}` | random owner token (`SET NX PX`) | the lock's TTL |
//! | `cb:v1:sess:{<session handle>}` | sealed [`SessionRecord`] | as the broker asks (token `exp` + grace, or revocation retention) |
//! | `cb:v1:sessidx` | sorted set of session handles, all scores 0 | none (stale members are removed lazily and by [`RedisStore::sweep`]) |
//!
//! Credential ids and session handles are keyed hashes ([`crate::hashing`]): neither a raw
//! session id nor who holds credentials for which role can be read from the key names, and every
//! value is sealed ([`super::seal`]) with its own key name as associated data.
//!
//! The `{…}` hash tags put each record on one cluster slot, so the single-key Lua scripts (lock
//! release, session compare-and-swap) run on Redis Cluster too. The index is one key on one slot
//! and is never touched by a script together with a record.
//!
//! ## Failure
//! Every call runs under [`OP_TIMEOUT`], so a dead or hung Redis fails a request in about a
//! second with [`StoreError::Unavailable`] instead of holding it. Reconnection is the `redis`
//! crate's: [`ConnectionManager`] for a single node (one connection attempt per demand, no
//! exponential back-off, so the broker is back within a second or two of Redis), the cluster
//! connection's own slot refresh and retries for a cluster. No message carries the URL's password.
//!
//! There is deliberately no in-process cache of sessions: every call reads the session from Redis,
//! so a revocation on one replica is seen by all at their next call.

use super::records::CredentialRecord;
use super::records::SessionRecord;
use super::seal::Sealer;
use super::{LockToken, Store, StoreError, Version};
use crate::hashing::SessionHandle;
use crate::secret::{Key32, Secret};
use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, Value};
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

/// Upper bound of one Redis call, connection (re-)establishment included.
pub const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long [`RedisStore::connect`] tries to reach Redis before giving up (the broker itself
/// waits as long as `BROKER_STORE_STARTUP_TIMEOUT` says, unbounded by default).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two connection attempts at start.
const STARTUP_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How [`RedisStore::connect_with`] treats a Redis that is not there yet or that evicts keys.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// How long to keep trying to reach Redis at start; `None` waits until it answers.
    pub startup_timeout: Option<Duration>,
    /// Accept a `maxmemory-policy` other than `noeviction` (BROKER_REDIS_ALLOW_EVICTION).
    pub allow_eviction: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            startup_timeout: Some(STARTUP_TIMEOUT),
            allow_eviction: false,
        }
    }
}
/// Members of the session index examined per round trip when listing or sweeping.
const INDEX_PAGE: usize = 500;

const INDEX_KEY: &str = "cb:v1:sessidx";
/// Taken by the replica that sweeps the index, so N replicas do not all sweep at once.
const SWEEP_LOCK_KEY: &str = "cb:v1:lock:{sessidx-sweep}";

/// Releases a lock only if it still holds our token (a lock that expired and was taken by another
/// replica must not be deleted by the late first holder).
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

/// Session compare-and-swap: writes ARGV[2] with a TTL of ARGV[3] ms only if the stored value is
/// still exactly ARGV[1] (the empty string meaning "no record").
static SWAP_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1",
    )
});

fn cred_key(id: &str) -> String {
    format!("cb:v1:cred:{{{id}}}")
}

fn lock_key(id: &str) -> String {
    format!("cb:v1:lock:{{{id}}}")
}

/// Built without `format!` (which grows its string as it writes): this runs on every warm request.
fn session_key(handle: &str) -> String {
    let mut key = String::with_capacity(handle.len() + 13);
    key.push_str("cb:v1:sess:{");
    key.push_str(handle);
    key.push('}');
    key
}

/// A single-node or cluster connection; both multiplex and reconnect by themselves, and clone
/// cheaply (one shared connection per node underneath).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Where to connect, parsed from `BROKER_CACHE_URL`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// One URL per node (`redis://` or `rediss://`, credentials included): secret.
    node_urls: Vec<Secret>,
    cluster: bool,
    /// `host:port[,host:port…]`, for messages.
    display: String,
    /// The password, to scrub from any message that might echo it.
    password: Option<Secret>,
}

/// Parses `redis://…`, `rediss://…`, `redis+cluster://[user:pass@]h:p,h:p[/]` and
/// `rediss+cluster://…`. Errors never quote the URL.
fn parse_target(url: &str) -> Result<Target, String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        "must be redis://…, rediss://…, redis+cluster://… or rediss+cluster://…".to_string()
    })?;
    let (node_scheme, cluster) = match scheme {
        "redis" => ("redis", false),
        "rediss" => ("rediss", false),
        "redis+cluster" => ("redis", true),
        "rediss+cluster" => ("rediss", true),
        _ => {
            return Err(
                "must be redis://…, rediss://…, redis+cluster://… or rediss+cluster://…".into(),
            );
        }
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err("names no host".into());
    }
    if !cluster && hosts.len() > 1 {
        return Err(
            "lists several hosts; use redis+cluster://host:port,host:port for Redis Cluster".into(),
        );
    }
    if cluster && !matches!(path.trim_end_matches('/'), "" | "/0") {
        return Err(
            "a cluster URL takes no database number or options (Redis Cluster has database 0 only)"
                .into(),
        );
    }
    let mut node_urls = Vec::with_capacity(hosts.len());
    let mut password = None;
    for host in &hosts {
        let node = match userinfo {
            Some(u) => format!(
                "{node_scheme}://{u}@{host}{}",
                if cluster { "" } else { path }
            ),
            None => format!("{node_scheme}://{host}{}", if cluster { "" } else { path }),
        };
        // The crate's own parser, so what is checked here is what it will connect to; its
        // errors are not passed on, as they might quote the URL.
        let info =
            redis::IntoConnectionInfo::into_connection_info(node.as_str()).map_err(|_| {
                "is not a valid Redis URL (redis://[user:password@]host:port[/db])".to_string()
            })?;
        password = info
            .redis
            .password
            .filter(|p| !p.is_empty())
            .map(Secret::new);
        node_urls.push(Secret::new(node));
    }
    Ok(Target {
        node_urls,
        cluster,
        display: hosts.join(","),
        password,
    })
}

/// The Redis-backed [`Store`]; see the module docs.
pub struct RedisStore {
    /// What "now" is for TTLs computed from a record's expiry (the broker's injected clock).
    clock: crate::clock::Clock,
    conn: Connection,
    sealer: Sealer,
    /// `redis host:port` or `redis cluster host:port,…`, for messages.
    name: String,
    password: Option<Secret>,
}

impl RedisStore {
    /// Reads "now" from `clock` (the engine's) for the TTLs it derives from record expiries.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.name)
            .field("sealer", &self.sealer)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`BROKER_CACHE_URL`), sealing values with `cache_keys` (current first).
    /// No keys means plaintext, allowed only when `insecure_plaintext` says so. Fails when Redis
    /// cannot be reached within 10 s (a refused password at once) or evicts keys.
    pub async fn connect(
        url: &Secret,
        cache_keys: &[Key32],
        insecure_plaintext: bool,
    ) -> Result<Self, String> {
        Self::connect_with(
            url,
            cache_keys,
            insecure_plaintext,
            ConnectOptions::default(),
        )
        .await
    }

    /// [`RedisStore::connect`] with the start-up wait and the eviction rule given by `options`.
    /// A Redis whose `maxmemory-policy` evicts keys is refused unless `options.allow_eviction`.
    pub async fn connect_with(
        url: &Secret,
        cache_keys: &[Key32],
        insecure_plaintext: bool,
        options: ConnectOptions,
    ) -> Result<Self, String> {
        let target = parse_target(url.expose()).map_err(|e| format!("BROKER_CACHE_URL: {e}"))?;
        let sealer = match (cache_keys.is_empty(), insecure_plaintext) {
            (false, _) => {
                Sealer::from_keys(cache_keys).map_err(|e| format!("BROKER_CACHE_KEY: {e}"))?
            }
            (true, true) => Sealer::plaintext(),
            (true, false) => return Err(
                "BROKER_CACHE_KEY: a Redis store needs a cache key, or --insecure-plaintext-cache"
                    .into(),
            ),
        };
        let name = if target.cluster {
            format!("redis cluster {}", target.display)
        } else {
            format!("redis {}", target.display)
        };
        let scrub = |e: &redis::RedisError| scrub(&e.to_string(), target.password.as_ref());
        let conn = if target.cluster {
            let nodes: Vec<&str> = target.node_urls.iter().map(Secret::expose).collect();
            let client = ClusterClient::builder(nodes)
                .connection_timeout(OP_TIMEOUT)
                .response_timeout(OP_TIMEOUT)
                .retries(2)
                .min_retry_wait(50)
                .max_retry_wait(300)
                .build()
                .map_err(|e| format!("BROKER_CACHE_URL: {}", scrub(&e)))?;
            let conn = startup_retry(&name, options.startup_timeout, &scrub, || {
                client.get_async_connection()
            })
            .await
            .map_err(|e| format!("BROKER_CACHE_URL: cannot reach {name}: {}", scrub(&e)))?;
            Connection::Cluster(conn)
        } else {
            let client = redis::Client::open(target.node_urls[0].expose())
                .map_err(|e| format!("BROKER_CACHE_URL: {}", scrub(&e)))?;
            // One attempt per reconnection, bounded by OP_TIMEOUT: a failed attempt is retried
            // by the next command (the health ping runs every second). The crate's default
            // back-off starts at a second and grows to a minute, which would keep the broker
            // down long after Redis is back.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(OP_TIMEOUT)
                .set_response_timeout(OP_TIMEOUT);
            let conn = startup_retry(&name, options.startup_timeout, &scrub, || {
                ConnectionManager::new_with_config(client.clone(), config.clone())
            })
            .await
            .map_err(|e| format!("BROKER_CACHE_URL: cannot reach {name}: {}", scrub(&e)))?;
            Connection::Single(conn)
        };
        let store = Self {
            clock: crate::clock::Clock::system(),
            conn,
            sealer,
            name,
            password: target.password,
        };
        store
            .ping()
            .await
            .map_err(|e| format!("BROKER_CACHE_URL: {e}"))?;
        store.check_eviction_policy(options.allow_eviction).await?;
        Ok(store)
    }

    /// Every node's `maxmemory-policy`, read from `INFO memory` (ElastiCache renames or disables
    /// `CONFIG GET` but answers `INFO`). A cluster answers per master.
    pub async fn eviction_policies(&self) -> Result<Vec<String>, StoreError> {
        let info: Value = self
            .query("INFO memory", redis::cmd("INFO").arg("memory"))
            .await?;
        let mut texts = Vec::new();
        collect_texts(&info, &mut texts);
        Ok(texts
            .iter()
            .flat_map(|t| t.lines())
            .filter_map(|l| l.trim().strip_prefix("maxmemory_policy:"))
            .map(|p| p.trim().to_string())
            .collect())
    }

    /// `Ok` when Redis does not evict keys, or when eviction is allowed (then says in the log
    /// what is at risk); otherwise an error naming the policy, the setting and the fix.
    pub async fn check_eviction_policy(&self, allow_eviction: bool) -> Result<(), String> {
        let policies = self
            .eviction_policies()
            .await
            .map_err(|e| format!("BROKER_CACHE_URL: cannot read maxmemory-policy: {e}"))?;
        let evicting: Vec<&str> = policies
            .iter()
            .map(String::as_str)
            .filter(|p| *p != "noeviction")
            .collect();
        let what = if policies.is_empty() {
            "unknown (INFO memory did not report maxmemory_policy)".to_string()
        } else if evicting.is_empty() {
            return Ok(());
        } else {
            evicting.join(",")
        };
        if allow_eviction {
            tracing::warn!(
                store = %self.name,
                maxmemory_policy = %what,
                "BROKER_REDIS_ALLOW_EVICTION=true: Redis may evict keys under memory pressure; revocations and session bindings are keys with TTLs, so an evicted revocation makes a revoked session id bindable again"
            );
            return Ok(());
        }
        Err(format!(
            "{}: maxmemory-policy is {what}; revocations and session bindings are keys with TTLs that an evicting policy can drop (a revoked session id would become bindable again). Set maxmemory-policy noeviction (ElastiCache: a parameter group, see deploy/), or accept the risk with BROKER_REDIS_ALLOW_EVICTION=true",
            self.name
        ))
    }

    /// `redis host:port` or `redis cluster host:port,…`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether values are encrypted (false only with `--insecure-plaintext-cache`).
    pub fn is_sealed(&self) -> bool {
        self.sealer.is_sealed()
    }

    /// Runs one command under [`OP_TIMEOUT`]; `what` names it in the error.
    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(what, cmd.query_async(&mut conn)).await
    }

    /// Runs a script under [`OP_TIMEOUT`].
    pub(super) async fn script<T: FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(*a);
        }
        let mut conn = self.conn.clone();
        self.bounded(what, invocation.invoke_async(&mut conn)).await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "{}: {what}: {}",
                self.name,
                scrub(&e.to_string(), self.password.as_ref())
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{}: {what}: no answer within {}ms",
                self.name,
                OP_TIMEOUT.as_millis()
            ))),
        }
    }

    /// Drops an index member whose record is gone. Re-adds it if a record appeared meanwhile:
    /// a concurrent bind adds the member before and after writing, so whichever order the two
    /// replicas run in, a live session ends up indexed.
    async fn forget_member(&self, handle: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "ZREM session index",
                redis::cmd("ZREM").arg(INDEX_KEY).arg(handle),
            )
            .await?;
        let exists: i64 = self
            .query(
                "EXISTS session",
                redis::cmd("EXISTS").arg(session_key(handle)),
            )
            .await?;
        if exists > 0 {
            self.index(handle).await?;
        }
        Ok(())
    }

    async fn index(&self, handle: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                "ZADD session index",
                redis::cmd("ZADD").arg(INDEX_KEY).arg(0).arg(handle),
            )
            .await?;
        Ok(())
    }

    /// A page of index members after `after` (exclusive), in handle order.
    async fn index_page(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let min = match after {
            Some(h) => format!("({h}"),
            None => "-".to_string(),
        };
        self.query(
            "ZRANGEBYLEX session index",
            redis::cmd("ZRANGEBYLEX")
                .arg(INDEX_KEY)
                .arg(min)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(count),
        )
        .await
    }

    /// Removes index members whose session record is gone (expired). Runs on one replica at a
    /// time (a short lock), so the index does not grow with sessions nobody lists. Returns how
    /// many members were removed, or `None` when another replica holds the sweep.
    pub async fn sweep(&self) -> Result<Option<usize>, StoreError> {
        let token = LockToken::random();
        let took: Value = self
            .query(
                "SET sweep lock",
                redis::cmd("SET")
                    .arg(SWEEP_LOCK_KEY)
                    .arg(&token.0)
                    .arg("NX")
                    .arg("PX")
                    .arg(50_000),
            )
            .await?;
        if took == Value::Nil {
            return Ok(None);
        }
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.index_page(after.as_deref(), INDEX_PAGE).await?;
            let exists = try_join_all(page.iter().map(|h| async move {
                self.query::<i64>("EXISTS session", redis::cmd("EXISTS").arg(session_key(h)))
                    .await
            }))
            .await?;
            for (h, n) in page.iter().zip(exists) {
                if n == 0 {
                    self.forget_member(h).await?;
                    removed += 1;
                }
            }
            if page.len() < INDEX_PAGE {
                break;
            }
            after = page.last().cloned();
        }
        let _: i64 = self
            .script(
                "release sweep lock",
                &UNLOCK,
                &[SWEEP_LOCK_KEY],
                &[token.0.as_bytes()],
            )
            .await?;
        Ok(Some(removed))
    }
}

/// Retries the first connection until `limit` (`None`: until Redis answers), with a back-off
/// doubling from 250 ms to [`STARTUP_BACKOFF_MAX`] and one log line per attempt, so an operator
/// sees what the broker is waiting for (Redis may start with, or fail over under, the broker).
async fn startup_retry<T, F, Fut>(
    name: &str,
    limit: Option<Duration>,
    scrub: &dyn Fn(&redis::RedisError) -> String,
    mut connect: F,
) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    for attempt in 1u32.. {
        let result = match tokio::time::timeout(OP_TIMEOUT * 2, connect()).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "connection timed out",
            ))),
        };
        let e = match result {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        let out_of_time = limit.is_some_and(|l| started.elapsed() + pause >= l);
        if out_of_time || !retryable_at_start(&e) {
            return Err(e);
        }
        tracing::warn!(
            store = name,
            attempt,
            waited_s = started.elapsed().as_secs(),
            limit = %limit.map_or("none".to_string(), |l| format!("{l:?}")),
            error = %scrub(&e),
            "waiting for Redis before serving (BROKER_STORE_STARTUP_TIMEOUT); liveness SERVING, readiness NOT_SERVING"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(STARTUP_BACKOFF_MAX);
    }
    unreachable!("the attempt counter does not run out")
}

/// Every string in a reply (a cluster answers `INFO` with one entry per node).
fn collect_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => out.push(s.clone()),
        Value::VerbatimString { text, .. } => out.push(text.clone()),
        Value::Array(items) | Value::Set(items) => {
            items.iter().for_each(|v| collect_texts(v, out));
        }
        Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_texts(v, out)),
        _ => {}
    }
}

/// Connection trouble is worth waiting out at start; a refused password or a bad URL is not.
fn retryable_at_start(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_cluster_error()
}

/// `text` with the password, if it occurs, replaced.
fn scrub(text: &str, password: Option<&Secret>) -> String {
    match password.map(Secret::expose).filter(|p| !p.is_empty()) {
        Some(p) if text.contains(p) => text.replace(p, "[redacted]"),
        _ => text.to_string(),
    }
}

/// TTL in whole milliseconds, at least 1 (Redis refuses `PX 0`).
fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl Store for RedisStore {
    async fn get_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let key = cred_key(id);
        let bytes: Option<Vec<u8>> = self
            .query("GET credential", redis::cmd("GET").arg(&key))
            .await?;
        bytes.map(|b| self.sealer.open(&key, &b)).transpose()
    }

    async fn put_credential(&self, id: &str, record: &CredentialRecord) -> Result<(), StoreError> {
        let key = cred_key(id);
        let remaining = record.expires_at_ms.saturating_sub(self.clock.now_ms());
        if remaining <= 0 {
            // Already expired: store nothing, and drop what was there (as the memory store's
            // overwrite with an expired entry does).
            let _: i64 = self
                .query("DEL credential", redis::cmd("DEL").arg(&key))
                .await?;
            return Ok(());
        }
        let sealed = self.sealer.seal(&key, record)?;
        let _: Value = self
            .query(
                "SET credential",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(sealed)
                    .arg("PX")
                    .arg(remaining),
            )
            .await?;
        Ok(())
    }

    async fn try_lock(&self, id: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let token = LockToken::random();
        let reply: Value = self
            .query(
                "SET NX lock",
                redis::cmd("SET")
                    .arg(lock_key(id))
                    .arg(&token.0)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        Ok((reply != Value::Nil).then_some(token))
    }

    async fn unlock(&self, id: &str, token: &LockToken) -> Result<(), StoreError> {
        let _: i64 = self
            .script(
                "release lock",
                &UNLOCK,
                &[&lock_key(id)],
                &[token.0.as_bytes()],
            )
            .await?;
        Ok(())
    }

    async fn get_session(
        &self,
        handle: &SessionHandle,
    ) -> Result<Option<(SessionRecord, Version)>, StoreError> {
        let key = session_key(handle.as_str());
        let bytes: Option<Vec<u8>> = self
            .query("GET session", redis::cmd("GET").arg(&key))
            .await?;
        match bytes {
            None => Ok(None),
            Some(b) => {
                let record = self.sealer.open(&key, &b)?;
                Ok(Some((record, Version(b))))
            }
        }
    }

    async fn swap_session(
        &self,
        handle: &SessionHandle,
        expected: Option<&Version>,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = session_key(handle.as_str());
        let sealed = self.sealer.seal(&key, record)?;
        let expected: &[u8] = expected.map_or(&[], |v| v.0.as_slice());
        let ttl = ttl_ms(ttl).to_string();
        // Indexed before the write (so a record never exists unindexed if the second ZADD
        // fails) and after it (see `forget_member`).
        self.index(handle.as_str()).await?;
        let swapped: i64 = self
            .script(
                "session compare-and-swap",
                &SWAP_SESSION,
                &[&key],
                &[expected, &sealed, ttl.as_bytes()],
            )
            .await?;
        if swapped == 1 {
            self.index(handle.as_str()).await?;
        }
        Ok(swapped == 1)
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionHandle>,
        limit: usize,
    ) -> Result<Vec<(SessionHandle, SessionRecord)>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(INDEX_PAGE));
        let mut cursor = after.map(|h| h.as_str().to_string());
        // Keep paging past stale members: a short answer means "no more" to the caller.
        while out.len() < limit {
            let want = (limit - out.len()).min(INDEX_PAGE);
            let page = self.index_page(cursor.as_deref(), want).await?;
            let values = try_join_all(page.iter().map(|h| async move {
                let key = session_key(h);
                let bytes: Option<Vec<u8>> = self
                    .query("GET session", redis::cmd("GET").arg(&key))
                    .await?;
                Ok::<_, StoreError>((key, bytes))
            }))
            .await?;
            for (member, (key, bytes)) in page.iter().zip(values) {
                let Some(handle) = SessionHandle::parse(member) else {
                    // Not written by a broker: ignore rather than fail every listing.
                    continue;
                };
                match bytes {
                    Some(b) => out.push((handle, self.sealer.open(&key, &b)?)),
                    None => self.forget_member(member).await?,
                }
            }
            if page.len() < want {
                break;
            }
            cursor = page.last().cloned();
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // On a cluster, PING goes to every master and succeeds only if all answer.
        let _: String = self.query("PING", &redis::cmd("PING")).await?;
        Ok(())
    }
}

/// Raw sealed records for modules that keep their own record types in this store (the shared MCP
/// sessions of `crate::mcp_sessions`): one key, one sealed value, one TTL.
impl RedisStore {
    /// The record under `key`, opened; `None` when absent or expired.
    pub(crate) async fn get_sealed<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let bytes: Option<Vec<u8>> = self.query("GET record", redis::cmd("GET").arg(key)).await?;
        bytes.map(|b| self.sealer.open(key, &b)).transpose()
    }

    /// Writes `value` under `key` for `ttl`, only if the key does not exist (`must_exist`
    /// false: `SET NX`) or only if it does (`SET XX`). Returns whether it was written.
    pub(crate) async fn put_sealed<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        must_exist: bool,
    ) -> Result<bool, StoreError> {
        let sealed = self.sealer.seal(key, value)?;
        let reply: Value = self
            .query(
                "SET record",
                redis::cmd("SET")
                    .arg(key)
                    .arg(sealed)
                    .arg(if must_exist { "XX" } else { "NX" })
                    .arg("PX")
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        Ok(reply != Value::Nil)
    }

    /// Deletes `key`; returns whether it existed.
    pub(crate) async fn delete_key(&self, key: &str) -> Result<bool, StoreError> {
        let removed: i64 = self.query("DEL record", redis::cmd("DEL").arg(key)).await?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_urls_parse_and_display_without_credentials() {
        let t = parse_target("redis://:s3cret-pass@10.0.0.1:6380/2").unwrap();
        assert!(!t.cluster);
        assert_eq!(t.display, "10.0.0.1:6380");
        assert_eq!(
            t.node_urls[0].expose(),
            "redis://:s3cret-pass@10.0.0.1:6380/2"
        );
        assert_eq!(t.password.as_ref().map(Secret::expose), Some("s3cret-pass"));
        let t = parse_target("rediss://user:p%40ss@cache.example.com:6379").unwrap();
        assert_eq!(
            t.node_urls[0].expose(),
            "rediss://user:p%40ss@cache.example.com:6379"
        );
        assert_eq!(t.password.as_ref().map(Secret::expose), Some("p@ss"));
    }

    #[test]
    fn cluster_urls_become_one_url_per_node() {
        let t = parse_target("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001, 127.0.0.1:7002/")
            .unwrap();
        assert!(t.cluster);
        assert_eq!(t.display, "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002");
        let urls: Vec<&str> = t.node_urls.iter().map(Secret::expose).collect();
        assert_eq!(
            urls,
            [
                "redis://:pw@127.0.0.1:7000",
                "redis://:pw@127.0.0.1:7001",
                "redis://:pw@127.0.0.1:7002"
            ]
        );
        let t = parse_target("rediss+cluster://cfg.cache.amazonaws.com:6379").unwrap();
        assert_eq!(
            t.node_urls[0].expose(),
            "rediss://cfg.cache.amazonaws.com:6379"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for bad in [
            "redis://:hunter2@a:1,b:2",
            "redis+cluster://:hunter2@",
            "redis+cluster://:hunter2@a:1/3",
            "http://:hunter2@a:1",
            "hunter2",
        ] {
            let e = parse_target(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn scrub_removes_the_password() {
        let p = Secret::new("hunter2");
        assert_eq!(
            scrub("auth hunter2 failed", Some(&p)),
            "auth [redacted] failed"
        );
        assert_eq!(scrub("fine", Some(&p)), "fine");
        assert_eq!(scrub("fine", None), "fine");
    }

    #[test]
    fn keys_hash_tag_the_id() {
        assert_eq!(cred_key("ab12"), "cb:v1:cred:{ab12}");
        assert_eq!(lock_key("ab12"), "cb:v1:lock:{ab12}");
        assert_eq!(session_key("ff00"), "cb:v1:sess:{ff00}");
    }
}
