//! MCP sessions with ids that carry 256 random bits.
//!
//! A session id is a bearer secret of its own: whoever holds it can speak in that session (with a
//! token of the same subject; see `auth`). rmcp's [`LocalSessionManager`] mints UUID v4 ids —
//! 122 random bits — and has no hook for another generator, so [`Sessions`] wraps it and replaces
//! only `create_session`: the id is `mcps_` and 32 bytes from the operating system's CSPRNG
//! (aws-lc's `SystemRandom`) in base64url without padding — 48 visible ASCII characters, as the
//! MCP spec requires. The prefix lets the log writer find and redact ids exactly (`logging`).
//! Every other operation is the local manager's own.

use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::WorkerTransport;
use rmcp::transport::common::server_side_http::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker, SessionConfig,
    create_local_session,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, SessionManager,
};

/// Random bytes in a session id: 256 bits, well above the 128 a guessing attack must face.
const SESSION_ID_BYTES: usize = 32;

/// What every session id starts with, so that logs can redact ids without guessing.
pub(crate) const SESSION_ID_PREFIX: &str = "mcps_";

/// Characters after the prefix: base64url of [`SESSION_ID_BYTES`] without padding.
pub(crate) const SESSION_ID_RANDOM_CHARS: usize = 43;

/// rmcp's in-process session manager, minting 256-bit session ids.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    inner: LocalSessionManager,
}

impl Sessions {
    /// Sessions closed after `keep_alive` without a request (rmcp's idle timeout).
    pub(crate) fn new(keep_alive: std::time::Duration) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(keep_alive);
        Self { inner }
    }

    fn config(&self) -> SessionConfig {
        self.inner.session_config.clone()
    }
}

/// A fresh session id: the prefix, then [`SESSION_ID_BYTES`] from the system CSPRNG in base64url
/// (no padding).
///
/// Panics only if the operating system cannot supply randomness, in which case no id would be
/// safe to hand out (fail closed).
pub(crate) fn new_session_id() -> SessionId {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source failed");
    let mut id = String::with_capacity(SESSION_ID_PREFIX.len() + SESSION_ID_RANDOM_CHARS);
    id.push_str(SESSION_ID_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut id);
    Arc::from(id)
}

impl SessionManager for Sessions {
    type Error = LocalSessionManagerError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let id = new_session_id();
        let (handle, worker) = create_local_session(id.clone(), self.config());
        self.inner.sessions.write().await.insert(id.clone(), handle);
        Ok((id, WorkerTransport::spawn(worker)))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    /// Never restores: ids are only ever minted here, so an id this process does not hold is
    /// unknown (404), never re-created from what the client sent.
    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(RestoreOutcome::NotSupported)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_the_prefix_and_43_url_safe_characters_decoding_to_32_bytes() {
        let id = new_session_id();
        let random = id.strip_prefix(SESSION_ID_PREFIX).expect("prefix");
        assert_eq!(random.len(), SESSION_ID_RANDOM_CHARS);
        assert!(
            random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(random).unwrap().len(), 32);
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: HashSet<SessionId> = (0..10_000).map(|_| new_session_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[tokio::test]
    async fn created_sessions_are_known_and_closed_ones_are_not() {
        let sessions = Sessions::new(std::time::Duration::from_secs(60));
        let (id, _transport) = sessions.create_session().await.unwrap();
        assert!(id.starts_with(SESSION_ID_PREFIX));
        assert!(sessions.has_session(&id).await.unwrap());
        sessions.close_session(&id).await.unwrap();
        assert!(!sessions.has_session(&id).await.unwrap());
        assert!(
            matches!(
                sessions.restore_session(id).await.unwrap(),
                RestoreOutcome::NotSupported
            ),
            "a closed id is never restored"
        );
    }
}
