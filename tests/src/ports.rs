//! Loopback ports for the processes tests start.
//!
//! Servers that can bind port 0 and say which port they got do so: the broker and the adapter
//! write their bound addresses to files (`BROKER_LISTEN_ADDR_FILE`, `ADAPTER_LISTEN_ADDR_FILE`,
//! and for their metrics listeners `BROKER_METRICS_ADDR_FILE`, `ADAPTER_METRICS_ADDR_FILE`),
//! moto prints ` * Running on http://127.0.0.1:PORT`. Nothing is probed and then handed over, so
//! there is no check-then-bind race between tests running in parallel.
//!
//! A port NOBODY listens on (a "dead broker" URL, an unreachable Redis, a failing health check)
//! is a [`ClosedPort`]: a socket bound to it without `listen`, held by the test, so a connection
//! is refused and no other process can take the port meanwhile.
//!
//! A server that must come back on the SAME port after a kill (redis-server, whose `--port 0`
//! disables TCP; a broker a fault test restarts behind a running adapter) draws one from
//! [`unassigned_port`], BELOW the kernel's ephemeral range (usually 32768–60999), because a port
//! the kernel hands out for `bind(0)` can be handed out again for an outgoing connection (or a
//! self-connect) while the server is down, and the restart could not bind it. The port is not
//! probed: the starter sees the child fail with "address in use" and draws again
//! (retry-on-conflict, see `redis.rs` and `broker.rs`).
//!
//! [`free_port`] (bound and released by us, so free a moment ago: a check-then-bind race) is left
//! only where a port must be named before the process that binds it exists, and that process
//! cannot report one it picked itself:
//! - `ecs_replay`: the rendered task definitions name the broker's and the adapter's ports (the
//!   adapter's resource URL, the broker URL the adapter dials, the container health checks)
//!   before either process starts, as ECS's would;
//! - `clients_js::page_ports` (both browser-frontend tests): the page's origin must be in the
//!   adapter's `ADAPTER_ALLOWED_ORIGINS` before the adapter starts, and the page servers (the
//!   page's and a foreign one) are started later by the Node driver;
//! - `local_stack` (`Up::start`, `local_up_refuses_a_taken_port_by_name`): moto and the broker
//!   bind port 0 (`LOCAL_MOTO_PORT=0`, `LOCAL_BROKER_PORT=0`; the script reports the ports in
//!   `stack.env`), but the adapter's port is named before it starts: the adapter's resource URL,
//!   the balancer's port and the replicas' consecutive ports are derived from it;
//! - `redis_store::rediss_verifies_the_server_certificate`: redis-server's `--tls-port 0`
//!   disables TLS instead of picking a port;
//! - the benchmark (`bench/src/setup.rs` floor server, `bench/src/scenarios/adapter.rs` Python
//!   MCP server): its own helper servers take `--listen` / a port and do not report one.
//!
//! A child that then cannot bind such a port fails its start loudly rather than talking to
//! someone else.

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

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0 and released): only for a
/// port a configuration must name before its process starts (the uses are listed in the module
/// documentation). For an address nobody answers on, use [`closed_port`].
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A loopback port nobody listens on while this value lives: a TCP socket bound to it without
/// `listen`. Connecting is refused (the kernel answers RST), and no other process can bind the
/// port meanwhile, so the address stays dead for the whole test.
#[derive(Debug)]
pub struct ClosedPort {
    _socket: socket2::Socket,
    port: u16,
}

impl ClosedPort {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }
}

/// A [`ClosedPort`] the kernel picks (bound to port 0, never listened on).
pub fn closed_port() -> ClosedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    socket.bind(&loopback(0).into()).expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("the bound address");
    ClosedPort {
        _socket: socket,
        port,
    }
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
