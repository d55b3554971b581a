//! The usual test setup in one call: seeded moto, a counting STS proxy in front of it, and a
//! broker that signs in to STS as the seeded `broker` user, validates HS256 tokens (with issuer
//! and audience checks on) and allows the `demo-*` roles.
//!
//! Tests that need something different change the [`BrokerBuilder`] in
//! [`BrokerStack::start_with`], or build their own from the parts.

use crate::adapter::{Adapter, AdapterBuilder};
use crate::broker::{Broker, BrokerBuilder};
use crate::moto::{ACCOUNT_ID, Moto, MotoSeed};
use crate::sts_proxy::StsProxy;
use crate::tokens::{Claims, TokenMinter, random_string};

/// `iss` of the test tokens, checked by the broker (`BROKER_JWT_ISSUER`).
pub const ISSUER: &str = "https://auth.e2e.test/";
/// `aud` of the test tokens, checked by the broker (`BROKER_JWT_AUDIENCE`).
pub const AUDIENCE: &str = "credential-broker";

/// The allowlist glob of the standard broker.
pub fn demo_roles_glob() -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:role/demo-*")
}

/// moto + STS proxy + broker + a minter whose tokens the broker accepts.
#[derive(Debug)]
pub struct BrokerStack {
    // Field order is drop order: the broker goes first, moto last.
    pub broker: Broker,
    pub proxy: StsProxy,
    pub moto: Moto,
    pub minter: TokenMinter,
    pub secret: String,
}

impl BrokerStack {
    /// The standard stack.
    pub async fn start() -> BrokerStack {
        BrokerStack::start_with(|b| b).await
    }

    /// The standard stack with a changed broker configuration.
    pub async fn start_with(configure: impl FnOnce(BrokerBuilder) -> BrokerBuilder) -> BrokerStack {
        let moto = Moto::start().await;
        let proxy = StsProxy::start(moto.port());
        let secret = random_string(48);
        let builder = configure(standard_broker(moto.seed(), &proxy.endpoint(), &secret));
        let broker = builder.start().await;
        BrokerStack {
            broker,
            proxy,
            moto,
            minter: standard_minter(&secret),
            secret,
        }
    }

    pub fn seed(&self) -> &MotoSeed {
        self.moto.seed()
    }

    /// moto's own endpoint (not the proxy): for S3 and GetCallerIdentity checks.
    pub fn aws_endpoint(&self) -> String {
        self.moto.endpoint()
    }

    /// A token for `sub` granting the read-write role.
    pub fn rw_token(&self, sub: &str) -> String {
        self.minter.for_role(sub, &self.seed().roles.read_write)
    }

    /// A token for `sub` granting the read-only role.
    pub fn ro_token(&self, sub: &str) -> String {
        self.minter.for_role(sub, &self.seed().roles.read_only)
    }

    /// Signs `claims` with the broker's secret (default iss/aud added).
    pub fn token(&self, claims: &Claims) -> String {
        self.minter.mint(claims)
    }

    /// A token of the harness's operator ([`crate::broker::OPERATOR`]): no role needed.
    pub fn operator_token(&self) -> String {
        self.minter.mint(&Claims::new(crate::broker::OPERATOR))
    }

    /// The operator plane of the broker, called as the configured operator.
    pub async fn admin(&self) -> crate::rpc::Admin {
        self.broker.admin(Some(&self.operator_token())).await
    }

    /// Writes `text` at `key` in the seeded demo bucket straight to moto, with the credentials
    /// the broker gives `token` (the owner's own object, put without the adapter); returns its
    /// `s3://` URI.
    pub async fn put_own_object(&self, token: &str, key: &str, text: &str) -> String {
        let bucket = &self.seed().buckets.demo;
        let mut c = self.broker.client().await;
        let creds = crate::rpc::exchange(&mut c, token, "")
            .await
            .expect("the owner's credentials")
            .credentials
            .expect("credentials in the answer");
        crate::aws::put_object(
            &crate::aws::s3(&self.aws_endpoint(), &creds),
            bucket,
            key,
            text.as_bytes(),
        )
        .await
        .expect("put the owner's object");
        format!("s3://{bucket}/{key}")
    }
}

/// The standard broker configuration against `seed`, with STS at `sts_endpoint`.
///
/// It serves `McpSessionWithoutToken` (BROKER_MCP_TOKENLESS_SESSIONS=true, off by default) because
/// the stacks serve adapters in both `ADAPTER_REQUIRE_AUTH` modes; the default's refusal is tested
/// in `adapter_replicas::a_default_broker_records_no_session_without_a_token`.
pub fn standard_broker(seed: &MotoSeed, sts_endpoint: &str, secret: &str) -> BrokerBuilder {
    BrokerBuilder::new()
        .env("BROKER_MCP_TOKENLESS_SESSIONS", "true")
        .hs256_secret(secret)
        .env("BROKER_JWT_ISSUER", ISSUER)
        .env("BROKER_JWT_AUDIENCE", AUDIENCE)
        .env("BROKER_ROLE_ACCOUNT_ID", ACCOUNT_ID)
        .allowed_roles(&[&demo_roles_glob()])
        .sts_endpoint(sts_endpoint)
        .aws_identity(
            &seed.users.broker.access_key_id,
            &seed.users.broker.secret_access_key,
        )
}

/// A minter for the standard broker's secret, issuer and audience.
pub fn standard_minter(secret: &str) -> TokenMinter {
    TokenMinter::hs256(secret).issuer(ISSUER).audience(AUDIENCE)
}

/// A fresh session id, as long and random as an MCP session id.
pub fn new_session_id() -> String {
    format!("mcp-session-{}", random_string(32))
}

/// The standard [`BrokerStack`] plus an adapter pointed at it and at moto's S3.
#[derive(Debug)]
pub struct AdapterStack {
    // Field order is drop order: the adapter goes before the broker.
    pub adapter: crate::adapter::Adapter,
    pub stack: BrokerStack,
}

impl AdapterStack {
    /// The standard stack and adapter.
    pub async fn start() -> AdapterStack {
        AdapterStack::start_with(|b| b).await
    }

    /// The standard stack with a changed adapter configuration.
    pub async fn start_with(
        configure: impl FnOnce(crate::adapter::AdapterBuilder) -> crate::adapter::AdapterBuilder,
    ) -> AdapterStack {
        let stack = BrokerStack::start().await;
        let builder = crate::adapter::AdapterBuilder::new(&stack.broker.endpoint())
            .s3_endpoint(&stack.aws_endpoint());
        let adapter = configure(builder).start().await;
        AdapterStack { adapter, stack }
    }

    /// The seeded bucket both demo roles may use.
    pub fn bucket(&self) -> String {
        self.stack.seed().buckets.demo.clone()
    }

    /// The adapter's RFC 9728 metadata document for `/mcp`.
    pub fn metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            self.adapter.url()
        )
    }

    /// What the adapter's 401 answers carry in `WWW-Authenticate`.
    pub fn challenge(&self) -> String {
        format!(r#"Bearer resource_metadata="{}""#, self.metadata_url())
    }
}

/// A fresh `BROKER_CACHE_KEY`: base64 of 32 random bytes.
pub fn cache_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// moto + counting STS proxy + `n` standard broker replicas sharing one store URL, one JWT
/// secret and one cache key (the shape of a multi-replica deployment on Redis).
#[derive(Debug)]
pub struct Replicas {
    // Field order is drop order: the brokers go first, moto last.
    pub brokers: Vec<Broker>,
    pub proxy: StsProxy,
    pub moto: Moto,
    pub minter: TokenMinter,
    /// The HS256 secret every replica validates with.
    pub secret: String,
    /// The `BROKER_CACHE_KEY` every replica seals with.
    pub cache_key: String,
}

impl Replicas {
    /// Starts `n` replicas (`broker-1` …) on `cache_url`, at the same time.
    pub async fn start(cache_url: &str, n: usize) -> Replicas {
        Replicas::start_with(cache_url, n, |b| b).await
    }

    /// [`Replicas::start`], each replica's builder passed through `configure` first (limits,
    /// metrics, …).
    pub async fn start_with(
        cache_url: &str,
        n: usize,
        configure: impl Fn(BrokerBuilder) -> BrokerBuilder,
    ) -> Replicas {
        let moto = Moto::start().await;
        let proxy = StsProxy::start(moto.port());
        let secret = random_string(48);
        let cache_key = cache_key();
        let builders: Vec<BrokerBuilder> = (1..=n)
            .map(|i| {
                configure(
                    standard_broker(moto.seed(), &proxy.endpoint(), &secret)
                        .name(&format!("broker-{i}"))
                        .cache_url(cache_url)
                        .env("BROKER_CACHE_KEY", &cache_key),
                )
            })
            .collect();
        let brokers =
            futures::future::join_all(builders.into_iter().map(BrokerBuilder::start)).await;
        Replicas {
            brokers,
            proxy,
            minter: standard_minter(&secret),
            moto,
            secret,
            cache_key,
        }
    }

    /// One adapter per replica (`adapter-1` … in front of `broker-1` …), on moto's S3, each
    /// builder passed through `configure` first; started at the same time.
    pub async fn adapters(
        &self,
        configure: impl Fn(AdapterBuilder) -> AdapterBuilder,
    ) -> Vec<Adapter> {
        let builders: Vec<AdapterBuilder> = self
            .brokers
            .iter()
            .enumerate()
            .map(|(i, broker)| {
                configure(
                    AdapterBuilder::new(&broker.endpoint())
                        .name(&format!("adapter-{}", i + 1))
                        .s3_endpoint(&self.moto.endpoint()),
                )
            })
            .collect();
        futures::future::join_all(builders.into_iter().map(AdapterBuilder::start)).await
    }

    /// A token for the seeded read-write role.
    pub fn rw_token(&self, sub: &str) -> String {
        self.minter
            .for_role(sub, &self.moto.seed().roles.read_write)
    }

    /// A token for the seeded read-only role.
    pub fn ro_token(&self, sub: &str) -> String {
        self.minter.for_role(sub, &self.moto.seed().roles.read_only)
    }

    /// A token of the harness's operator ([`crate::broker::OPERATOR`]).
    pub fn operator_token(&self) -> String {
        self.minter.mint(&Claims::new(crate::broker::OPERATOR))
    }

    /// The operator plane of replica `i`, called as the configured operator.
    pub async fn admin(&self, i: usize) -> crate::rpc::Admin {
        self.brokers[i].admin(Some(&self.operator_token())).await
    }
}
