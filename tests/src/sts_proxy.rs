//! A counting TCP proxy in front of moto's STS.
//!
//! The broker's promises about STS — one `AssumeRole` per credential key, one for 50 concurrent
//! cold requests, none for a role outside the allowlist — are proven by counting the calls that
//! really leave the broker. The proxy relays raw bytes (the `Host` header and everything else
//! untouched, so SigV4 signatures stay valid) and scans the client→server direction for
//! `Action=AssumeRole&` and `Action=AssumeRoleWithWebIdentity` in the form bodies the AWS SDK
//! sends, with an overlap window so a pattern split across two reads is still seen once.
//! A request is counted before any of its bytes reach moto, so when a response has arrived the
//! count already includes its request.
//!
//! [`ProxyMode`] simulates failures: `Down` closes every connection at once (STS unreachable),
//! `Throttle` answers every request with STS's `Throttling` error (HTTP 400). Switching mode closes
//! the connections that are open, so pooled keep-alive connections see the new mode at once.
//!
//! The proxy runs on its own thread and runtime, so it keeps relaying whatever the test's own
//! runtime is doing, and stops (and joins) on drop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::background::BackgroundServer;
use tokio::sync::watch;

const ASSUME_ROLE: &[u8] = b"Action=AssumeRole&";
const WEB_IDENTITY: &[u8] = b"Action=AssumeRoleWithWebIdentity";

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Relay to moto (and count).
    Pass,
    /// Close every connection as soon as it is accepted: STS is unreachable.
    Down,
    /// Answer every request with `400 Throttling` without asking moto (still counted).
    Throttle,
}

#[derive(Debug, Default)]
struct Counters {
    assume_role: AtomicUsize,
    web_identity: AtomicUsize,
    connections: AtomicUsize,
}

/// A running proxy; see the module docs.
#[derive(Debug)]
pub struct StsProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
    mode: watch::Sender<ProxyMode>,
    /// The listener's thread, kept for its drop (which stops it).
    _server: BackgroundServer,
}

impl StsProxy {
    /// Starts a proxy on a free 127.0.0.1 port that relays to `upstream_port` on 127.0.0.1.
    pub fn start(upstream_port: u16) -> StsProxy {
        let upstream = crate::ports::loopback(upstream_port);
        let counters = Arc::new(Counters::default());
        let (mode, mode_rx) = watch::channel(ProxyMode::Pass);
        let thread_counters = counters.clone();
        let server = BackgroundServer::start("sts-proxy", move |listener| {
            accept_loop(listener, upstream, thread_counters, mode_rx)
        });
        let addr = server.addr();
        StsProxy {
            addr,
            counters,
            mode,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`: give this to the broker as `BROKER_STS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `AssumeRole` plus `AssumeRoleWithWebIdentity` calls seen so far.
    pub fn count(&self) -> usize {
        self.assume_role_count() + self.web_identity_count()
    }

    pub fn assume_role_count(&self) -> usize {
        self.counters.assume_role.load(Ordering::SeqCst)
    }

    pub fn web_identity_count(&self) -> usize {
        self.counters.web_identity.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (in any mode).
    pub fn connection_count(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Switches mode; open connections are closed so the new mode applies at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// `Down` when `down`, else `Pass`.
    pub fn set_down(&self, down: bool) {
        self.set_mode(if down {
            ProxyMode::Down
        } else {
            ProxyMode::Pass
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    counters: Arc<Counters>,
    mode: watch::Receiver<ProxyMode>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::SeqCst);
        let mut mode = mode.clone();
        let current = *mode.borrow_and_update();
        let counters = counters.clone();
        tokio::spawn(async move {
            match current {
                ProxyMode::Down => drop(client),
                ProxyMode::Pass => {
                    tokio::select! {
                        _ = relay(client, upstream, &counters) => {}
                        _ = mode.changed() => {}
                    }
                }
                ProxyMode::Throttle => {
                    tokio::select! {
                        _ = throttle(client, &counters) => {}
                        _ = mode.changed() => {}
                    }
                }
            }
        });
    }
}

/// Counts the patterns in a byte stream that arrives in chunks.
#[derive(Debug, Default)]
pub struct ActionScanner {
    window: Vec<u8>,
}

impl ActionScanner {
    /// Feeds one chunk; returns `(assume_role, web_identity)` matches that end inside it.
    pub fn feed(&mut self, chunk: &[u8]) -> (usize, usize) {
        let carried = self.window.len();
        self.window.extend_from_slice(chunk);
        let count = |pattern: &[u8]| {
            self.window
                .windows(pattern.len())
                .enumerate()
                .filter(|(start, w)| *w == pattern && start + pattern.len() > carried)
                .count()
        };
        let found = (count(ASSUME_ROLE), count(WEB_IDENTITY));
        let keep = ASSUME_ROLE.len().max(WEB_IDENTITY.len()) - 1;
        let drop_to = self.window.len().saturating_sub(keep);
        self.window.drain(..drop_to);
        found
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, counters: &Counters) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream_dir = async {
        let mut scanner = ActionScanner::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (assume, web) = scanner.feed(&buf[..n]);
            counters.assume_role.fetch_add(assume, Ordering::SeqCst);
            counters.web_identity.fetch_add(web, Ordering::SeqCst);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream_dir = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream_dir, downstream_dir);
}

/// STS's throttling answer, as the query protocol sends it.
fn throttling_response() -> Vec<u8> {
    let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
                <RequestId>e2e-throttled</RequestId></ErrorResponse>";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
         x-amzn-RequestId: e2e-throttled\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads HTTP/1.1 requests (Content-Length bodies) and answers each with `Throttling`.
async fn throttle(mut client: TcpStream, counters: &Counters) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let request_len = loop {
            if let Some(end) = find(&pending, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                let body_len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if pending.len() >= end + 4 + body_len {
                    break end + 4 + body_len;
                }
            }
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let request: Vec<u8> = pending.drain(..request_len).collect();
        let (assume, web) = ActionScanner::default().feed(&request);
        counters.assume_role.fetch_add(assume, Ordering::SeqCst);
        counters.web_identity.fetch_add(web, Ordering::SeqCst);
        if client.write_all(&throttling_response()).await.is_err() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::ActionScanner;

    #[test]
    fn counts_a_pattern_split_across_chunks_once() {
        let body = b"POST / HTTP/1.1\r\n\r\nAction=AssumeRole&Version=2011-06-15";
        for split in 0..body.len() {
            let mut scanner = ActionScanner::default();
            let (a1, w1) = scanner.feed(&body[..split]);
            let (a2, w2) = scanner.feed(&body[split..]);
            assert_eq!((a1 + a2, w1 + w2), (1, 0), "split at {split}");
        }
    }

    #[test]
    fn tells_web_identity_from_assume_role() {
        let mut scanner = ActionScanner::default();
        assert_eq!(
            scanner.feed(b"Action=AssumeRoleWithWebIdentity&RoleArn=x"),
            (0, 1)
        );
        assert_eq!(
            scanner.feed(b"Action=AssumeRole&RoleArn=x Action=AssumeRole&"),
            (2, 0)
        );
        assert_eq!(scanner.feed(b"Action=GetCallerIdentity&"), (0, 0));
    }
}
