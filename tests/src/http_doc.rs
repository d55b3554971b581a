//! A tiny HTTP server that serves one document (a JWKS) on loopback and counts fetches.
//!
//! The broker's `BROKER_JWKS_URL` key source is tested against it: keys rotate by replacing the
//! document, and the fetch count shows that an unknown `kid` triggers a refetch and that refetches
//! are rate-limited. Runs on its own thread like the STS proxy; stops on drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

#[derive(Debug)]
struct Shared {
    body: Mutex<String>,
    /// Documents served at one path instead of `body` (e.g. an OIDC discovery document).
    paths: Mutex<std::collections::HashMap<String, String>>,
    fetches: AtomicUsize,
}

/// A running document server.
#[derive(Debug)]
pub struct HttpDoc {
    port: u16,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpDoc {
    /// Serves `body` as `application/json` at every path.
    pub fn start(body: &str) -> HttpDoc {
        let listener = std::net::TcpListener::bind(crate::ports::loopback(0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            body: Mutex::new(body.to_string()),
            paths: Mutex::new(std::collections::HashMap::new()),
            fetches: AtomicUsize::new(0),
        });
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let serve = async {
                    loop {
                        let Ok((mut stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let shared = thread_shared.clone();
                        tokio::spawn(async move {
                            let mut request = Vec::new();
                            let mut buf = [0u8; 4096];
                            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => request.extend_from_slice(&buf[..n]),
                                }
                            }
                            shared.fetches.fetch_add(1, Ordering::SeqCst);
                            let path = String::from_utf8_lossy(&request)
                                .split(' ')
                                .nth(1)
                                .unwrap_or("/")
                                .to_string();
                            let body = match shared.paths.lock().expect("paths lock").get(&path) {
                                Some(doc) => doc.clone(),
                                None => shared.body.lock().expect("body lock").clone(),
                            };
                            let response = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                                 Connection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = shutdown_rx => {}
                }
            });
        });
        HttpDoc {
            port,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/jwks.json`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks.json", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serves `body` at `path` (instead of the main document).
    pub fn set_path(&self, path: &str, body: &str) {
        self.shared
            .paths
            .lock()
            .expect("paths lock")
            .insert(path.to_string(), body.to_string());
    }

    /// Replaces the document.
    pub fn set_body(&self, body: &str) {
        *self.shared.body.lock().expect("body lock") = body.to_string();
    }

    /// How many requests were answered.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for HttpDoc {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
