//! Free loopback ports.
//!
//! Every process a test starts listens on 127.0.0.1 only, on a port that was free a moment before,
//! so tests can run in parallel (nextest runs each test in its own process) without colliding
//! with each other or with anything else on the machine.
//!
//! Ports are drawn at random from BELOW the kernel's ephemeral range (usually 32768–60999):
//! a port the kernel hands out for `bind(0)` can be handed out again for the next outgoing
//! connection before our child binds it — and the tests make hundreds of connections — while a
//! port below that range is only ever taken by someone who asks for it by number.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use rand::Rng;

/// Lowest port handed out.
const LOW: u16 = 15000;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .filter(|p: &u16| *p > LOW + 2000)
        .unwrap_or(32768)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let high = ephemeral_start();
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(LOW..high);
        if bindable(port) {
            return port;
        }
    }
    panic!("found no free port in 127.0.0.1:{LOW}..{high} in 1000 tries");
}

/// A port `p` such that both `p` and `p + 10000` are free: Redis Cluster nodes also listen on
/// their "cluster bus" port, which is always the data port plus 10000.
pub fn free_port_with_bus() -> u16 {
    let high = ephemeral_start() - 10000;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(LOW..high);
        if bindable(port) && bindable(port + 10000) {
            return port;
        }
    }
    panic!("found no free port pair (p, p+10000) on 127.0.0.1 in 1000 tries");
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
