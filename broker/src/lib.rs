//! `credential-broker`: validates JWTs and serves scoped, short-lived STS credentials over gRPC.
//!
//! The flow, one module per step:
//! [`config`] → [`token`] (is the token genuine and current?) → [`role`] (which allowlisted role?)
//! → [`scope`] (session name, source identity, tags, bucket policy, credential key) → [`issuer`]
//! (one STS call) → [`credentials`] (single flight, refresh ahead, last good, [`cooldown`] after STS failures) → [`store`] (memory or
//! Redis), with [`sessions`] binding tokens to session ids, [`broker`] tying them together and
//! [`service`] speaking gRPC; [`admin`] is the operator plane. [`ops`] holds health and reflection; [`server`] wires it; [`telemetry`] exports OpenTelemetry spans when the `OTEL_*` variables ask for it. What the broker shares with the adapter (signals, log setup, metrics, PEM, config errors, S3 names) lives in `credbroker_kit`.

pub mod admin;
pub mod audit;
pub mod broker;
pub mod clock;
pub mod config;
pub mod cooldown;
pub mod credentials;
pub mod hashing;
pub mod issuer;
pub mod mcp_sessions;
pub mod metrics;
pub mod mint;
pub mod operator;
pub mod ops;
pub mod quota;
pub mod role;
pub mod scope;
pub mod secret;
pub mod server;
pub mod service;
pub mod sessions;
pub mod store;
pub mod sts_budget;
pub mod telemetry;
pub mod token;
