//! Loopback ports for the processes tests start.
//!
//! Servers that can bind port 0 and say which port they got do so: the broker and the adapter
//! write their bound address to a file (`BROKER_LISTEN_ADDR_FILE`, `ADAPTER_LISTEN_ADDR_FILE`),
//! moto prints ` * Running on http://127.0.0.1:PORT`. Nothing is probed and then handed over, so
//! there is no check-then-bind race between tests running in parallel.
//!
//! Two cases still need a port number before the process starts, and draw one here:
//! - a server that must come back on the SAME port after a kill (redis-server, whose `--port 0`
//!   disables TCP; a broker a fault test restarts behind a running adapter): [`unassigned_port`]
//!   draws at random from BELOW the kernel's ephemeral range (usually 32768–60999), because a port
//!   the kernel hands out for `bind(0)` can be handed out again for an outgoing connection (or a
//!   self-connect) while the server is down, and the restart could not bind it. The port is not
//!   probed: the starter sees the child fail with "address in use" and draws again
//!   (retry-on-conflict, see `redis.rs` and `broker.rs`);
//! - a port nobody listens on (a "dead broker" URL) or one a rendered configuration names before
//!   the process exists (the ECS replay's task definitions, metrics listeners): [`free_port`],
//!   bound and released by us, so it was free a moment ago; a child that then cannot bind it
//!   fails its start loudly rather than talking to someone else.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use rand::Rng;

/// Lowest port handed out.
const LOW: u16 = 15000;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .filter(|p: &u16| *p > LOW + 12000)
        .unwrap_or(32768)
}

/// A random port below the kernel's ephemeral range, NOT checked: the caller starts its server
/// on it and draws again if that fails with "address in use".
pub fn unassigned_port() -> u16 {
    rand::rng().random_range(LOW..ephemeral_start())
}

/// Like [`unassigned_port`], for a Redis Cluster node, which also listens on its "cluster bus"
/// port, the data port plus 10000: both stay below the ephemeral range.
pub fn unassigned_port_with_bus() -> u16 {
    rand::rng().random_range(LOW..ephemeral_start() - 10000)
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0 and released): for an address
/// nobody should answer on, or one a configuration must name before its process starts.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
