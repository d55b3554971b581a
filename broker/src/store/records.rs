//! The records the store keeps, beside the store that keeps them: the credential engine and the
//! sessions layer build and read them, the stores persist them, and neither of those modules is
//! needed to name them (no module cycle through `store`).

use crate::hashing::CredentialId;
use crate::scope::Scope;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A credential is never handed out with less than this left: the caller needs time to use it.
pub const MIN_REMAINING: Duration = Duration::from_secs(60);

/// A stored STS credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialRecord {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expires_at_ms: i64,
    pub issued_at_ms: i64,
    /// When a refresh should start (expiry minus the jittered margin); the same on every replica.
    pub refresh_at_ms: i64,
    pub assumed_role_arn: String,
    pub role_session_name: String,
}

impl CredentialRecord {
    fn remaining_ms(&self, now: i64) -> i64 {
        self.expires_at_ms - now
    }

    /// Usable for a caller: more than [`MIN_REMAINING`] left. The one rule every cache layer
    /// (store, near cache) applies before serving.
    pub(crate) fn servable(&self, now: i64) -> bool {
        self.remaining_ms(now) > MIN_REMAINING.as_millis() as i64
    }

    /// Good enough that no STS call is needed: not yet due for refresh.
    pub(crate) fn fresh(&self, now: i64) -> bool {
        now < self.refresh_at_ms && self.servable(now)
    }
}

/// What the store keeps for a session. Holds no secret: the token is kept as a keyed
/// fingerprint and the credentials by their id.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    pub subject: String,
    pub issuer: String,
    pub scope: Scope,
    pub credential_id: CredentialId,
    pub token_fingerprint: String,
    /// The bound token's `exp`, seconds since the epoch.
    pub token_expires_at: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub revoked: bool,
    pub rebind_count: u32,
}
