//! Where environment variables come from.
//!
//! Loading reads the environment through the small [`Env`] trait, so tests pass a map or a
//! vector of pairs instead of calling `set_var` on the shared process environment.

use std::collections::BTreeMap;

use super::keys::ENV_PREFIX;
use super::SettingsError;

/// A source of environment variables.
pub trait Env {
    /// All variables as `(name, value)`; a value that is not UTF-8 is reported as an error.
    fn vars(&self) -> Result<Vec<(String, String)>, SettingsError>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn vars(&self) -> Result<Vec<(String, String)>, SettingsError> {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                Some(match v.into_string() {
                    Ok(v) => Ok((k, v)),
                    // Only our own variables matter; anyone else's odd bytes are not our
                    // business.
                    Err(_) if k.starts_with(ENV_PREFIX) || k == "RUST_LOG" => {
                        Err(SettingsError::invalid(&k, "(not UTF-8)", "a UTF-8 string"))
                    }
                    Err(_) => return None,
                })
            })
            .collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn vars(&self) -> Result<Vec<(String, String)>, SettingsError> {
        Ok(self.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl Env for Vec<(&str, &str)> {
    fn vars(&self) -> Result<Vec<(String, String)>, SettingsError> {
        Ok(self
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}
