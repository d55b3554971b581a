//! A round-robin HTTP load balancer without stickiness: each request goes to the next replica,
//! whatever connection or session it belongs to — the worst case an ALB without stickiness can
//! produce, and what the adapter's shared sessions must survive.
//!
//! Behaviour, as a plain load balancer's:
//! - requests are relayed whole, responses streamed (SSE answers flow as they are written);
//! - a replica that refuses connections (stopped, or stopping after SIGTERM: it closed its
//!   listener) is taken out of rotation and the request goes to the next replica — the request
//!   never reached the stopped one, so nothing runs twice (an ALB's deregistration does the
//!   same); it is tried again after [`RETRY_DOWN_AFTER`];
//! - any other failure is a 502 to the client (the request may have reached the replica).
//!
//! [`RoundRobinProxy`] runs in the test process on its own thread and runtime, and stops when
//! dropped; the `round-robin-proxy` binary runs the same code for `deploy/local/up`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// How long a replica that refused a connection stays out of rotation.
pub const RETRY_DOWN_AFTER: Duration = Duration::from_secs(2);

/// Largest request body relayed (it is buffered so that a refused connection can be retried on
/// the next replica).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// The balancer's state, shared by its handlers.
pub struct Balancer {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    hits: Vec<AtomicUsize>,
    down_until: Mutex<Vec<Option<Instant>>>,
    client: Client<HttpConnector, Body>,
}

impl Balancer {
    /// A balancer over `backends` (plain HTTP).
    pub fn new(backends: Vec<SocketAddr>) -> Arc<Balancer> {
        assert!(
            !backends.is_empty(),
            "a balancer needs at least one backend"
        );
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let n = backends.len();
        Arc::new(Balancer {
            backends,
            next: AtomicUsize::new(0),
            hits: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            down_until: Mutex::new(vec![None; n]),
            client,
        })
    }

    /// Requests each backend answered (in backend order).
    pub fn hits(&self) -> Vec<usize> {
        self.hits.iter().map(|h| h.load(Ordering::SeqCst)).collect()
    }

    /// Takes backend `i` out of rotation for good (as a load balancer deregisters a target before
    /// it is stopped); requests already relayed to it run to their end.
    pub fn drain(&self, i: usize) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down[i] = Some(Instant::now() + Duration::from_secs(365 * 24 * 3600));
    }

    fn is_down(&self, i: usize) -> bool {
        let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down[i].is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self, i: usize) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down[i] = Some(Instant::now() + RETRY_DOWN_AFTER);
    }

    /// The axum router that relays every path.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(relay)
            .with_state(Arc::clone(self))
    }
}

async fn relay(State(lb): State<Arc<Balancer>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let n = lb.backends.len();
    let start = lb.next.fetch_add(1, Ordering::SeqCst);
    // Up to two passes: first the replicas in rotation, then (all down) every replica once more.
    for pass in 0..2 {
        for k in 0..n {
            let i = (start + k) % n;
            if pass == 0 && lb.is_down(i) {
                continue;
            }
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let uri: http::Uri = match format!("http://{}{path}", lb.backends[i]).parse() {
                Ok(uri) => uri,
                Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request target"),
            };
            let mut forward = http::Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(http::Version::HTTP_11);
            for (name, value) in &parts.headers {
                if !is_hop_by_hop(name) {
                    forward = forward.header(name, value);
                }
            }
            let Ok(forward) = forward.body(Body::from(body.clone())) else {
                return plain(StatusCode::BAD_REQUEST, "bad request");
            };
            match lb.client.request(forward).await {
                Ok(response) => {
                    lb.hits[i].fetch_add(1, Ordering::SeqCst);
                    let (mut parts, body) = response.into_parts();
                    for name in [
                        http::header::CONNECTION,
                        http::header::TRANSFER_ENCODING,
                        http::header::UPGRADE,
                        http::header::TRAILER,
                    ] {
                        parts.headers.remove(name);
                    }
                    parts.headers.remove("keep-alive");
                    return Response::from_parts(parts, Body::new(body));
                }
                Err(error) if error.is_connect() => lb.mark_down(i),
                Err(error) => {
                    return plain(
                        StatusCode::BAD_GATEWAY,
                        &format!("replica {} failed: {error}", lb.backends[i]),
                    );
                }
            }
        }
    }
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "no replica accepts connections",
    )
}

fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

fn plain(status: StatusCode, message: &str) -> Response {
    let mut response = Response::new(Body::from(message.to_string()));
    *response.status_mut() = status;
    response
}

/// A running balancer in the test process; see the module docs.
pub struct RoundRobinProxy {
    addr: SocketAddr,
    balancer: Arc<Balancer>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RoundRobinProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundRobinProxy")
            .field("addr", &self.addr)
            .field("backends", &self.balancer.backends)
            .finish()
    }
}

impl RoundRobinProxy {
    /// A balancer on a free 127.0.0.1 port over the loopback `ports`.
    pub fn start(ports: &[u16]) -> RoundRobinProxy {
        RoundRobinProxy::start_on(RoundRobinProxy::bind(), ports)
    }

    /// The balancer's listener, bound before its backends exist: they must be configured with
    /// the balancer's URL (`ADAPTER_RESOURCE_URL`) before they start and report their ports.
    /// Connections wait in the listen queue until [`RoundRobinProxy::start_on`].
    pub fn bind() -> std::net::TcpListener {
        std::net::TcpListener::bind(crate::ports::loopback(0)).expect("bind balancer port")
    }

    /// A balancer on `std_listener` (from [`RoundRobinProxy::bind`]) over the loopback `ports`.
    pub fn start_on(std_listener: std::net::TcpListener, ports: &[u16]) -> RoundRobinProxy {
        let backends = ports.iter().map(|p| crate::ports::loopback(*p)).collect();
        let balancer = Balancer::new(backends);
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("balancer addr");
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let router = balancer.router();
        let thread = std::thread::Builder::new()
            .name("round-robin".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("balancer runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                    // Dropped, not drained: open event streams end with the test.
                    tokio::select! {
                        _ = axum::serve(listener, router) => {}
                        _ = shutdown_rx => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn balancer thread");
        RoundRobinProxy {
            addr,
            balancer,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.url())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests each backend answered, in the order of the ports given to [`Self::start`].
    pub fn hits(&self) -> Vec<usize> {
        self.balancer.hits()
    }

    /// See [`Balancer::drain`].
    pub fn drain(&self, i: usize) {
        self.balancer.drain(i)
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
