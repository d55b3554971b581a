//! A proxy in front of STS that shortens the lifetime of the credentials it relays.
//!
//! The broker refreshes a credential from half its lifetime on (or `expiry − margin`, whichever
//! is later) and serves the last good one until 60 s before it expires. With STS's shortest
//! lifetime (15 minutes) that plays out over a quarter of an hour; this proxy rewrites the
//! `<Expiration>` of every `AssumeRole` answer to "now + `lifetime`", so the same logic plays out
//! in about two minutes — same broker code, same STS emulator, only the clock of the credential is
//! shorter.
//!
//! It speaks HTTP/1.1 (what the AWS SDK uses for an `http://` endpoint): reads one request, relays
//! it on its own upstream connection, reads the whole answer (Content-Length or chunked), rewrites
//! it, fixes `Content-Length`, answers. When upstream closes without an answer (the
//! [`crate::sts_proxy::StsProxy`] behind it is `Down`), the client's connection is closed too.
//! It also records when each request arrived, so a test can show how retries were spaced.
//!
//! Chain it as broker → `ExpiryProxy` → `StsProxy` (counts, fails on demand) → moto.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::background::BackgroundServer;

#[derive(Debug)]
struct Shared {
    /// Seconds of lifetime written into answers; 0: relay unchanged.
    lifetime_secs: AtomicU64,
    requests: Mutex<Vec<Instant>>,
    rewritten: AtomicU64,
}

/// A running expiry-rewriting proxy; see the module docs.
#[derive(Debug)]
pub struct ExpiryProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The listener's thread, kept for its drop (which stops it).
    _server: BackgroundServer,
}

impl ExpiryProxy {
    /// Relays to `upstream` (an `http://127.0.0.1:PORT` STS endpoint's address), rewriting
    /// expirations to now + `lifetime` (`Duration::ZERO`: unchanged).
    pub fn start(upstream: SocketAddr, lifetime: Duration) -> ExpiryProxy {
        let shared = Arc::new(Shared {
            lifetime_secs: AtomicU64::new(lifetime.as_secs()),
            requests: Mutex::new(Vec::new()),
            rewritten: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let server = BackgroundServer::start("sts-expiry-proxy", move |listener| {
            accept_loop(listener, upstream, thread_shared)
        });
        let addr = server.addr();
        ExpiryProxy {
            addr,
            shared,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`: the broker's `BROKER_STS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// When each request arrived (in order).
    pub fn request_times(&self) -> Vec<Instant> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// How many answers had their expiration rewritten.
    pub fn rewritten(&self) -> u64 {
        self.shared.rewritten.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve(client, upstream, &shared).await;
        });
    }
}

/// One HTTP/1.1 message read off a stream: head (through the blank line) and body.
struct Message {
    head: String,
    body: Vec<u8>,
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: &Shared) -> Option<()> {
    let mut client_buf = Vec::new();
    let mut server: Option<(TcpStream, Vec<u8>)> = None;
    loop {
        let request = read_message(&mut client, &mut client_buf).await?;
        shared.requests.lock().expect("lock").push(Instant::now());
        if server.is_none() {
            server = Some((TcpStream::connect(upstream).await.ok()?, Vec::new()));
        }
        let (stream, buf) = server.as_mut()?;
        stream.write_all(request.head.as_bytes()).await.ok()?;
        stream.write_all(&request.body).await.ok()?;
        let mut response = read_message(stream, buf).await?;
        let lifetime = shared.lifetime_secs.load(Ordering::SeqCst);
        if lifetime > 0
            && let Some(body) = rewrite_expiration(&response.body, lifetime)
        {
            response.body = body;
            shared.rewritten.fetch_add(1, Ordering::SeqCst);
        }
        let head = with_content_length(&response.head, response.body.len());
        client.write_all(head.as_bytes()).await.ok()?;
        client.write_all(&response.body).await.ok()?;
        if response
            .head
            .to_ascii_lowercase()
            .contains("connection: close")
        {
            return Some(());
        }
    }
}

/// Reads one message (`Content-Length` or chunked body; none for neither). `None` when the peer
/// closes first.
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Message> {
    let mut chunk = vec![0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            while buf.len() < line_end + 2 + size + 2 {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
        body
    } else {
        let length = length.unwrap_or(0);
        while buf.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..length).collect()
    };
    let head = if chunked {
        head.lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("transfer-encoding:"))
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n"
    } else {
        head
    };
    Some(Message { head, body })
}

/// `head` with its `Content-Length` set to `len` (added when missing).
fn with_content_length(head: &str, len: usize) -> String {
    let mut lines: Vec<String> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:"))
        .map(str::to_string)
        .collect();
    lines.push(format!("Content-Length: {len}"));
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// The body with every `<Expiration>…</Expiration>` set to now + `lifetime` seconds; `None` when
/// it has none.
pub fn rewrite_expiration(body: &[u8], lifetime: u64) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("<Expiration>") {
        return None;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let stamp = iso8601(now + lifetime);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<Expiration>") {
        let open_end = start + "<Expiration>".len();
        let close = rest[open_end..].find("</Expiration>")? + open_end;
        out.push_str(&rest[..open_end]);
        out.push_str(&stamp);
        rest = &rest[close..];
    }
    out.push_str(rest);
    Some(out.into_bytes())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC).
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::{iso8601, rewrite_expiration};

    #[test]
    fn formats_utc_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_795_601_018), "2026-11-25T10:03:38Z");
    }

    #[test]
    fn rewrites_every_expiration_and_nothing_else() {
        let body = b"<A><Expiration>2030-01-01T00:00:00.000Z</Expiration><B>x</B></A>";
        let out = String::from_utf8(rewrite_expiration(body, 100).unwrap()).unwrap();
        assert!(out.starts_with("<A><Expiration>20") && out.ends_with("</Expiration><B>x</B></A>"));
        assert!(!out.contains("2030-01-01"));
        assert_eq!(rewrite_expiration(b"<A/>", 100), None);
    }
}
