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

/// A clap error as one line naming the environment variable of the argument it is about
/// (`BROKER_JWT_LEEWAY: invalid value 'soon' for '--jwt-leeway <JWT_LEEWAY>': …`), looked up in
/// `command` (the binary's `CommandFactory::command()`); `command line` when no variable applies.
pub fn describe_clap_error(error: &clap::Error, command: &clap::Command) -> ConfigError {
    use clap::error::{ContextKind, ContextValue};
    let rendered = error.render().to_string();
    let first_line = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid configuration")
        .trim_start_matches("error: ")
        .to_string();
    let variable = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => env_for_arg(arg, command),
        _ => None,
    }
    .unwrap_or_else(|| "command line".into());
    ConfigError::new(variable, first_line)
}

/// `--jwt-leeway <JWT_LEEWAY>` → the variable of `--jwt-leeway` in `command`.
fn env_for_arg(rendered_arg: &str, command: &clap::Command) -> Option<String> {
    let long = rendered_arg
        .split_whitespace()
        .next()?
        .trim_start_matches("--");
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}
