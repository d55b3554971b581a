//! What both binaries (`credential-broker`, `mcp-adapter`) share, so each rule exists once and
//! the two cannot drift apart again:
//!
//! - [`signals`]: the shutdown signal (SIGTERM and SIGINT, registered before serving);
//! - [`logging`]: log setup, one function composing the layers, and [`logging::LogFormat`];
//! - [`telemetry`]: OpenTelemetry traces over OTLP, off unless an `OTEL_*` endpoint is set;
//! - [`metrics`]: the Prometheus exporter's installation;
//! - [`pem`]: [`pem::PemSource`], a PEM setting that is a file path or the PEM text itself;
//! - [`config`]: [`config::ConfigError`], a setting that cannot be used, named with its variable;
//! - [`s3`]: S3 bucket-name, object-key and `s3://` rules;
//! - [`listen`]: reporting the address a listener really bound (port 0 in tests and local stacks).

pub mod config;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod pem;
pub mod s3;
pub mod signals;
pub mod telemetry;
