//! Several adapters behind a round-robin balancer without stickiness, as an ECS service with
//! `--desired-count` > 1 behind an ALB: redis-server, two broker replicas sharing it (so the
//! shared sessions really cross processes at the broker too), `n` adapters (adapter `i` asks broker
//! `i % 2`), and a [`RoundRobinProxy`] in front of the adapters. Every adapter's
//! `ADAPTER_RESOURCE_URL` is the balancer's `/mcp`, the one URL clients know.

use crate::adapter::{Adapter, AdapterBuilder};
use crate::redis::RedisServer;
use crate::round_robin::RoundRobinProxy;
use crate::stack::Replicas;

/// Broker replicas in a fleet.
pub const BROKERS: usize = 2;

/// The running fleet.
#[derive(Debug)]
pub struct Fleet {
    // Field order is drop order: the balancer first, Redis last.
    pub balancer: RoundRobinProxy,
    pub adapters: Vec<Adapter>,
    pub brokers: Replicas,
    pub redis: RedisServer,
}

impl Fleet {
    /// `n` standard adapters behind the balancer; `configure` may change each adapter's settings.
    pub async fn start(n: usize, configure: impl Fn(AdapterBuilder) -> AdapterBuilder) -> Fleet {
        let redis = RedisServer::start().await;
        let brokers = Replicas::start(&redis.url(), BROKERS).await;
        let builders: Vec<AdapterBuilder> = (0..n)
            .map(|i| {
                AdapterBuilder::new(&brokers.brokers[i % BROKERS].endpoint())
                    .name(&format!("mcp-adapter-{}", i + 1))
                    .s3_endpoint(&brokers.moto.endpoint())
            })
            .collect();
        // The balancer's port first: the adapters name it as their resource URL.
        let listener = RoundRobinProxy::bind();
        let resource = format!(
            "http://{}/mcp",
            listener.local_addr().expect("balancer addr")
        );
        let adapters = futures::future::join_all(
            builders
                .into_iter()
                .map(|b| configure(b.env("ADAPTER_RESOURCE_URL", &resource)).start()),
        )
        .await;
        let ports: Vec<u16> = adapters.iter().map(Adapter::port).collect();
        let balancer = RoundRobinProxy::start_on(listener, &ports);
        Fleet {
            balancer,
            adapters,
            brokers,
            redis,
        }
    }

    /// The seeded bucket both demo roles may use.
    pub fn bucket(&self) -> String {
        self.brokers.moto.seed().buckets.demo.clone()
    }

    /// A token for `sub` granting the read-write role.
    pub fn rw_token(&self, sub: &str) -> String {
        self.brokers.rw_token(sub)
    }

    /// What the adapters' 401 answers carry in `WWW-Authenticate` (the balancer's metadata URL).
    pub fn challenge(&self) -> String {
        format!(
            r#"Bearer resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#,
            self.balancer.url()
        )
    }

    /// All adapters' logs, one after the other.
    pub fn logs(&self) -> String {
        self.adapters
            .iter()
            .map(|a| a.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
