//! Free loopback ports.
//!
//! Every process a test starts listens on 127.0.0.1 only, on a port the kernel just handed out,
//! so tests can run in parallel (nextest runs each test in its own process) without colliding
//! with each other or with anything else on the machine.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The listener is dropped before the port is returned, so another process could in theory take
/// it in between; the kernel hands out ephemeral ports round-robin, which makes that rare enough
/// for tests.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A port `p` such that both `p` and `p + 10000` are free: Redis Cluster nodes also listen on
/// their "cluster bus" port, which is always the data port plus 10000.
pub fn free_port_with_bus() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port: u16 = rng.random_range(20000..45000);
        let data = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        let bus = TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000));
        if data.is_ok() && bus.is_ok() {
            return port;
        }
    }
    panic!("found no free port pair (p, p+10000) on 127.0.0.1 in 1000 tries");
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
