//! A TCP relay that adds `Authorization: Bearer <token>` to every HTTP request it passes on: the
//! MCP conformance suite has no option to send a token, and the adapter requires one.
//!
//! Each request's head is read up to the blank line, any `Authorization` and `Connection` lines
//! the client sent are dropped, the token and `Connection: close` are added, and from then on bytes
//! flow both ways untouched (bodies, event streams). `Connection: close` makes every request its
//! own connection, so no later request on a kept-alive connection could pass without the header.
//! The relay runs on its own thread and runtime, and stops on drop.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::background::BackgroundServer;

/// Largest request head the relay reads (the suite's are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// A running relay; see the module docs.
#[derive(Debug)]
pub struct AuthProxy {
    addr: SocketAddr,
    /// Where requests go; unset until [`AuthProxy::forward_to`] (connections are closed meanwhile).
    upstream: Arc<OnceLock<SocketAddr>>,
    /// The listener's thread, kept for its drop (which stops it).
    _server: BackgroundServer,
}

impl AuthProxy {
    /// A relay on a free 127.0.0.1 port to `upstream_port` on 127.0.0.1, adding `token`.
    pub fn start(upstream_port: u16, token: &str) -> AuthProxy {
        let proxy = AuthProxy::bind(token);
        proxy.forward_to(upstream_port);
        proxy
    }

    /// A relay on a free 127.0.0.1 port that forwards nowhere yet: for an upstream that must know
    /// the relay's port before it starts (an adapter's allowed origins).
    pub fn bind(token: &str) -> AuthProxy {
        let upstream = Arc::new(OnceLock::new());
        let header = format!("Authorization: Bearer {token}\r\nConnection: close\r\n");
        let routes = Arc::clone(&upstream);
        let server = BackgroundServer::start("auth-proxy", move |listener| {
            accept_loop(listener, routes, header)
        });
        let addr = server.addr();
        AuthProxy {
            addr,
            upstream,
            _server: server,
        }
    }

    /// Sends every later request to `port` on 127.0.0.1 (once; later calls are ignored).
    pub fn forward_to(&self, port: u16) {
        let _ = self.upstream.set(crate::ports::loopback(port));
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn accept_loop(listener: TcpListener, upstream: Arc<OnceLock<SocketAddr>>, header: String) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let Some(&upstream) = upstream.get() else {
            continue;
        };
        let header = header.clone();
        tokio::spawn(async move {
            let _ = relay(client, upstream, &header).await;
        });
    }
}

/// One connection: the rewritten head, then both directions untouched.
async fn relay(mut client: TcpStream, upstream: SocketAddr, header: &str) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 2;
        }
        if head.len() > MAX_HEAD {
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut rewritten = String::with_capacity(text.len() + header.len());
    for line in text.split_inclusive("\r\n") {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "authorization" || name == "connection" {
            continue;
        }
        rewritten.push_str(line);
    }
    rewritten.push_str(header);
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(rewritten.as_bytes()).await?;
    // The blank line and whatever body bytes came with the head.
    server.write_all(&head[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
