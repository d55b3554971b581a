//! The one configuration error type: a setting that cannot be used, displayed as
//! `VARIABLE: what is wrong and how to fix it`, so a bad start is one line that names the
//! environment variable an operator sets (ECS passes every setting as one).

/// A setting that cannot be used; displayed as `VARIABLE: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable (or `command line` when no variable applies).
    pub variable: String,
    /// What is wrong, and the fix where there is one. Never a secret value.
    pub message: String,
}

impl ConfigError {
    /// `variable: message`.
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.into(),
            message: message.into(),
        }
    }
}
