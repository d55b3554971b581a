//! A TCP relay that holds every new connection until the test releases it: a slow S3 whose
//! slowness the test controls.
//!
//! Attacks on requests in flight (issue 12: another client opening the victim's event stream, or
//! cancelling her call, while her tool call waits for S3) need a window that is open for sure
//! while the attacker acts, and closes when the test says so — not a fixed delay that is too
//! short on a loaded machine and needlessly long on an idle one. Put [`HeldProxy`] between the
//! adapter and moto's S3: each connection is accepted and counted ([`HeldProxy::held`]), then
//! waits until [`HeldProxy::release`], and only then relays bytes both ways untouched (the `Host`
//! header included, so SigV4 signatures stay valid). moto closes every connection after one
//! answer, so one S3 request is one connection.
//!
//! The relay runs on its own thread and runtime, and stops (and joins) on drop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::background::BackgroundServer;
use tokio::sync::watch;

/// A running relay; see the module docs.
#[derive(Debug)]
pub struct HeldProxy {
    addr: SocketAddr,
    held: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
    /// The listener's thread, kept for its drop (which stops it).
    _server: BackgroundServer,
}

impl HeldProxy {
    /// A relay on a free 127.0.0.1 port to `upstream_port` on 127.0.0.1, holding connections.
    pub fn start(upstream_port: u16) -> HeldProxy {
        let upstream = crate::ports::loopback(upstream_port);
        let held = Arc::new(AtomicUsize::new(0));
        let (open, open_rx) = watch::channel(false);
        let thread_held = held.clone();
        let server = BackgroundServer::start("held-proxy", move |listener| {
            accept_loop(listener, upstream, thread_held, open_rx)
        });
        let addr = server.addr();
        HeldProxy {
            addr,
            held,
            open,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`: give this to the adapter as `ADAPTER_S3_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far (held or relayed).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.held() < n {
            assert!(
                Instant::now() < deadline,
                "only {} connections reached the held proxy within {timeout:?}, expected {n}",
                self.held()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets every held connection (and every later one) through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    held: Arc<AtomicUsize>,
    open: watch::Receiver<bool>,
) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        held.fetch_add(1, Ordering::SeqCst);
        let mut open = open.clone();
        tokio::spawn(async move {
            if open.wait_for(|open| *open).await.is_err() {
                return;
            }
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
