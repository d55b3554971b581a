//! A counting STS proxy that shortens credential lifetimes: it rewrites the `<Expiration>` of
//! every STS answer to "now + `lifetime`".
//!
//! Why: STS never issues credentials for less than 15 minutes, and the broker refreshes a
//! credential at `max(expiry − margin − jitter, issue + lifetime / 2)` — so a real refresh window
//! is at least 7.5 minutes, too long to observe several of them in a benchmark. The broker takes
//! the lifetime from STS's answer, so a proxy that shortens the `Expiration` it reports (to, say,
//! 150 s) runs the broker's unmodified refresh logic on a compressed clock. moto's credentials
//! stay valid for their real 15 minutes, so every request still succeeds.
//!
//! The rewritten timestamp has exactly the length of the original (moto 5.2 writes
//! `2026-11-25T10:15:00.123456Z`; milliseconds and seconds-only forms are kept as they are), so
//! `Content-Length` stays right and the bytes can be rewritten in flight without parsing HTTP.
//! Requests are counted like the harness's proxy does (`e2e::sts_proxy::ActionScanner`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use e2e::sts_proxy::ActionScanner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const OPEN: &[u8] = b"<Expiration>";
const CLOSE: &[u8] = b"</Expiration>";

#[derive(Debug, Default)]
struct Counters {
    assume_role: AtomicUsize,
    rewritten: AtomicUsize,
    unrewritable: AtomicUsize,
}

/// A running proxy; stops (and joins its thread) on drop.
#[derive(Debug)]
pub struct ShortLivedSts {
    addr: SocketAddr,
    counters: Arc<Counters>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ShortLivedSts {
    /// Relays to 127.0.0.1:`upstream_port`, reporting credentials that live `lifetime`.
    pub fn start(upstream_port: u16, lifetime: Duration) -> ShortLivedSts {
        let upstream = e2e::ports::loopback(upstream_port);
        let std_listener =
            std::net::TcpListener::bind(e2e::ports::loopback(0)).expect("bind proxy port");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy addr");
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("short-sts".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, upstream, lifetime, thread_counters) => {}
                        _ = shutdown_rx => {}
                    }
                });
            })
            .expect("spawn proxy thread");
        ShortLivedSts {
            addr,
            counters,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `BROKER_STS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `AssumeRole` requests relayed so far.
    pub fn assume_role_count(&self) -> usize {
        self.counters.assume_role.load(Ordering::SeqCst)
    }

    /// `<Expiration>` values rewritten so far.
    pub fn rewritten(&self) -> usize {
        self.counters.rewritten.load(Ordering::SeqCst)
    }

    /// `<Expiration>` values left alone because their format was not recognised.
    pub fn unrewritable(&self) -> usize {
        self.counters.unrewritable.load(Ordering::SeqCst)
    }
}

impl Drop for ShortLivedSts {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    lifetime: Duration,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let counters = counters.clone();
        tokio::spawn(async move { relay(client, upstream, lifetime, &counters).await });
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, lifetime: Duration, counters: &Counters) {
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
            let (assume, _) = scanner.feed(&buf[..n]);
            counters.assume_role.fetch_add(assume, Ordering::SeqCst);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream_dir = async {
        let mut rewriter = ExpirationRewriter::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let out = rewriter.feed(&buf[..n], |old| {
                let new = shortened(old, SystemTime::now() + lifetime);
                match &new {
                    Some(_) => counters.rewritten.fetch_add(1, Ordering::SeqCst),
                    None => counters.unrewritable.fetch_add(1, Ordering::SeqCst),
                };
                new.unwrap_or_else(|| old.to_vec())
            });
            if client_write.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = client_write.write_all(&rewriter.finish()).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream_dir, downstream_dir);
}

/// Rewrites the contents of `<Expiration>…</Expiration>` in a byte stream that arrives in chunks.
///
/// Bytes are held back only while they may be the start of an element not yet complete, so a
/// response that contains none is relayed as it comes.
#[derive(Debug, Default)]
pub struct ExpirationRewriter {
    pending: Vec<u8>,
}

impl ExpirationRewriter {
    /// Feeds one chunk; returns the bytes that can be sent on.
    pub fn feed(&mut self, chunk: &[u8], mut rewrite: impl FnMut(&[u8]) -> Vec<u8>) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        loop {
            match find(&self.pending, OPEN) {
                Some(start) => {
                    let content = start + OPEN.len();
                    match find(&self.pending[content..], CLOSE) {
                        Some(len) => {
                            out.extend_from_slice(&self.pending[..content]);
                            out.extend(rewrite(&self.pending[content..content + len]));
                            self.pending.drain(..content + len);
                        }
                        None => {
                            out.extend(self.pending.drain(..start));
                            return out;
                        }
                    }
                }
                None => {
                    let keep = partial_prefix_len(&self.pending, OPEN);
                    let send = self.pending.len() - keep;
                    out.extend(self.pending.drain(..send));
                    return out;
                }
            }
        }
    }

    /// What is still held back when the stream ends.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest suffix of `data` that is a proper prefix of `pattern`.
fn partial_prefix_len(data: &[u8], pattern: &[u8]) -> usize {
    (1..pattern.len())
        .rev()
        .find(|&n| data.len() >= n && data[data.len() - n..] == pattern[..n])
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `at` in the format (and so the length) of `old`: RFC 3339 UTC with microseconds (moto 5.2),
/// milliseconds or seconds.
fn shortened(old: &[u8], at: SystemTime) -> Option<Vec<u8>> {
    let micros = humantime::format_rfc3339_micros(at).to_string();
    let millis = humantime::format_rfc3339_millis(at).to_string();
    let seconds = humantime::format_rfc3339_seconds(at).to_string();
    [micros, millis, seconds]
        .into_iter()
        .find(|new| new.len() == old.len() && old.ends_with(b"Z"))
        .map(String::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n<AssumeRoleResponse><Credentials>\
        <Expiration>2026-11-25T10:15:00.123Z</Expiration></Credentials></AssumeRoleResponse>";

    #[test]
    fn rewrites_an_element_split_anywhere_and_keeps_the_length() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for split in 0..BODY.len() {
            let mut r = ExpirationRewriter::default();
            let mut out = r.feed(&BODY[..split], |old| shortened(old, at).unwrap());
            out.extend(r.feed(&BODY[split..], |old| shortened(old, at).unwrap()));
            out.extend(r.finish());
            assert_eq!(out.len(), BODY.len(), "split at {split}");
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("<Expiration>2027-01-15T08:00:00.000Z</Expiration>"),
                "split at {split}: {text}"
            );
        }
    }

    #[test]
    fn relays_other_bytes_at_once() {
        let mut r = ExpirationRewriter::default();
        assert_eq!(r.feed(b"hello <Exp", |o| o.to_vec()), b"hello ".to_vec());
        assert_eq!(r.feed(b"ort>", |o| o.to_vec()), b"<Export>".to_vec());
        assert!(r.finish().is_empty());
    }

    #[test]
    fn keeps_the_format_of_the_original() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            shortened(b"2026-11-25T10:15:00Z", at).unwrap(),
            b"2027-01-15T08:00:00Z".to_vec()
        );
        assert_eq!(
            shortened(b"2026-11-25T10:15:00.123456Z", at).unwrap(),
            b"2027-01-15T08:00:00.000000Z".to_vec()
        );
        assert!(shortened(b"2026-11-25T10:15:00+00:00", at).is_none());
    }
}
