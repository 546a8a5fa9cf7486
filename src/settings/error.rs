//! The settings error: one line for stderr that names the variable and never a secret.

use super::keys::{env_name, ENV_PREFIX};
use super::redact::redact;

/// Why settings could not be loaded. Displayed as the one line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value that does not fit its setting.
    #[error("invalid setting {variable}={value}: expected {expected}")]
    Invalid {
        /// Environment variable name, e.g. `REDIS_BATCH_SIZE`.
        variable: String,
        /// The value received, quoted, already redacted when secret.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// The configuration file could not be read or parsed. The parser's own message is kept
    /// out of the display: it quotes the offending line, which may hold a password.
    #[error("cannot read configuration {origin}: {problem}")]
    Source {
        /// Which file.
        origin: String,
        /// What went wrong, without quoting the file.
        problem: &'static str,
    },
}

impl SettingsError {
    /// A bad value for `key_or_var`: a settings key (`batch_size`) or a variable name
    /// (`REDIS_BATCH_SIZE`, `RUST_LOG`). The value is redacted here, so no caller can forget.
    pub(crate) fn invalid(key_or_var: &str, value: &str, expected: impl Into<String>) -> Self {
        let variable = if key_or_var.starts_with(ENV_PREFIX) || key_or_var == "RUST_LOG" {
            key_or_var.to_string()
        } else {
            env_name(key_or_var)
        };
        let value = format!("{:?}", redact(&variable, value));
        SettingsError::Invalid {
            variable,
            value,
            expected: expected.into(),
        }
    }
}
