//! What a tool tells the user while it runs: `notifications/progress` when the request carried a
//! `progressToken`, and `notifications/message` at or above the session's `logging/setLevel`.
//!
//! rmcp marks MCP logging deprecated (SEP-2577 removes it in a later revision); the revisions this
//! adapter serves still have it, hence the `allow(deprecated)` here and nowhere else.
#![allow(deprecated)]

use std::sync::{Arc, Mutex};

use rmcp::{
    Peer, RoleServer,
    model::{
        LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken,
        RequestMetaObject,
    },
};
use serde_json::Value;

/// The lowest level a session wants to see (`logging/setLevel`); `info` until the client sets
/// one. Shared by all clones of one session's handler.
#[derive(Debug, Clone)]
pub(crate) struct LogLevel(Arc<Mutex<LoggingLevel>>);

impl Default for LogLevel {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(LoggingLevel::Info)))
    }
}

impl LogLevel {
    pub(crate) fn set(&self, level: LoggingLevel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = level;
    }

    fn allows(&self, level: LoggingLevel) -> bool {
        rank(level) >= rank(*self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// RFC 5424 order, lowest first.
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// One tool call's channel to the user.
pub(crate) struct Reporter {
    peer: Peer<RoleServer>,
    progress: Option<ProgressToken>,
    level: LogLevel,
}

impl Reporter {
    pub(crate) fn new(peer: Peer<RoleServer>, meta: &RequestMetaObject, level: LogLevel) -> Self {
        Self {
            peer,
            progress: meta.get_progress_token(),
            level,
        }
    }

    /// `notifications/progress` (only when the request asked for it). A client that went away
    /// does not fail the tool.
    pub(crate) async fn progress(&self, done: f64, total: Option<f64>, message: String) {
        let Some(token) = &self.progress else {
            return;
        };
        let mut param = ProgressNotificationParam::new(token.clone(), done);
        param.total = total;
        param.message = Some(message);
        let _ = self.peer.notify_progress(param).await;
    }

    /// `notifications/message` from logger `mcp-adapter` at `warning` (a problem) or `info`, if
    /// the session's level allows it.
    pub(crate) async fn log(&self, problem: bool, data: Value) {
        let level = if problem {
            LoggingLevel::Warning
        } else {
            LoggingLevel::Info
        };
        if !self.level.allows(level) {
            return;
        }
        let mut param = LoggingMessageNotificationParam::new(level, data);
        param.logger = Some("mcp-adapter".into());
        let _ = self.peer.notify_logging_message(param).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_filters_lower_messages() {
        let level = LogLevel::default();
        assert!(level.allows(LoggingLevel::Info));
        assert!(!level.allows(LoggingLevel::Debug));
        level.set(LoggingLevel::Error);
        assert!(!level.allows(LoggingLevel::Warning));
        assert!(level.allows(LoggingLevel::Critical));
    }
}
