//! `mcp-adapter healthcheck`: GET `/healthz` on the adapter, for container health checks (ECS
//! runs a command). A minimal HTTP/1.1 request over a TCP stream; no HTTP client dependency.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The address to dial for a listen address: the unspecified address becomes loopback.
pub fn dial_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok(())` when `GET /healthz` answers 200 within `timeout`; otherwise what went wrong.
pub async fn check(listen: SocketAddr, timeout: Duration) -> Result<(), String> {
    let address = dial_address(listen);
    match tokio::time::timeout(timeout, get_status(address)).await {
        Err(_) => Err(format!("no answer from {address} within {timeout:?}")),
        Ok(Err(error)) => Err(format!("{address}: {error}")),
        Ok(Ok(200)) => Ok(()),
        Ok(Ok(status)) => Err(format!("{address}: /healthz answered {status}")),
    }
}

async fn get_status(address: SocketAddr) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let host = match address {
        SocketAddr::V4(_) => address.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    };
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mcp-adapter-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    parse_status(&head).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP/1.x status line",
        )
    })
}

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_dialled_on_loopback() {
        assert_eq!(
            dial_address("0.0.0.0:8000".parse().unwrap()).to_string(),
            "127.0.0.1:8000"
        );
        assert_eq!(
            dial_address("[::]:8000".parse().unwrap()).to_string(),
            "[::1]:8000"
        );
        assert_eq!(
            dial_address("10.0.0.5:8000".parse().unwrap()).to_string(),
            "10.0.0.5:8000"
        );
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[tokio::test]
    async fn answers_and_silence() {
        // 200 → ok; another status → error; a listener that never answers → timeout.
        for (answer, ok) in [
            (Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), true),
            (Some("HTTP/1.1 503 Service Unavailable\r\n\r\n"), false),
            (None, false),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(5)).await,
                }
            });
            let result = check(address, Duration::from_millis(500)).await;
            assert_eq!(result.is_ok(), ok, "{answer:?}: {result:?}");
        }
        // Nothing listening.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = listener.local_addr().unwrap();
        drop(listener);
        assert!(check(dead, Duration::from_millis(500)).await.is_err());
    }
}
