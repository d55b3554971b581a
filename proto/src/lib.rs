//! The credential broker's gRPC contract, `credbroker.v1`.
//!
//! Shared by the broker (server), the MCP adapter (client), the end-to-end tests and the
//! benchmarks, so that all of them speak exactly the same messages.

/// Generated messages, client and server for `credbroker.v1`.
pub mod v1 {
    tonic::include_proto!("credbroker.v1");
}

/// Encoded `FileDescriptorSet` of the contract (and its imports), for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/credbroker_descriptor.bin"));

/// Fully-qualified service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "credbroker.v1.CredentialBroker";
