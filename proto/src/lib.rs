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

/// Fully-qualified name of the operator service (describe, list, revoke), authorized apart from
/// the credential plane.
pub const ADMIN_SERVICE_NAME: &str = "credbroker.v1.SessionAdmin";

/// The canonical name of a gRPC status code (`INVALID_ARGUMENT`), as grpcurl and the gRPC
/// documentation spell it: the label value of the broker's and the adapter's error metrics.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::code_name;
    use tonic::Code;

    #[test]
    fn every_code_has_its_own_canonical_name() {
        let names: std::collections::HashSet<&str> =
            (0..=16).map(|i| code_name(Code::from(i))).collect();
        assert_eq!(names.len(), 17);
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
