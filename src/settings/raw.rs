//! Settings as loading found them, before validation: strings, plus the contents of the files
//! they name. Holding file contents here, already read, keeps validation free of I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::Duration;

use super::SettingsError;

/// Raw settings: the layered values of every known key that has one, and what was read.
#[derive(Debug, Default)]
pub(crate) struct RawSettings {
    /// Key (lower case, no prefix) → value, as layered from the defaults, file and environment.
    pub(crate) values: BTreeMap<String, String>,
    /// `RUST_LOG`, when set.
    pub(crate) rust_log: Option<String>,
    /// The contents of `tls_ca_file`, or why it could not be read; `None` when the setting is
    /// empty (loading reads it whenever it is not).
    pub(crate) tls_ca: Option<io::Result<Vec<u8>>>,
}

impl RawSettings {
    /// The value of `key`; an empty value counts as unset.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// The value of `key`, which must not be empty.
    pub(crate) fn required(&self, key: &str) -> Result<&str, SettingsError> {
        self.get(key)
            .ok_or_else(|| SettingsError::invalid(key, "", "a non-empty value"))
    }

    /// A whole number from `min` to `max`.
    pub(crate) fn int<T>(&self, key: &str, min: T, max: T) -> Result<T, SettingsError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let v = self.required(key)?;
        let expected = || format!("a whole number from {min} to {max}");
        let n: T = v
            .trim()
            .parse()
            .map_err(|_| SettingsError::invalid(key, v, expected()))?;
        if n < min || n > max {
            return Err(SettingsError::invalid(key, v, expected()));
        }
        Ok(n)
    }

    /// A duration given in (possibly fractional) seconds, from `min` to `max`.
    pub(crate) fn seconds(&self, key: &str, min: f64, max: f64) -> Result<Duration, SettingsError> {
        let v = self.required(key)?;
        let expected = || format!("a number of seconds from {min} to {max}");
        let n: f64 = v
            .trim()
            .parse()
            .map_err(|_| SettingsError::invalid(key, v, expected()))?;
        if !n.is_finite() || n < min || n > max {
            return Err(SettingsError::invalid(key, v, expected()));
        }
        Ok(Duration::from_secs_f64(n))
    }

    /// A Redis key or host name: no surrounding spaces (a likely paste error), bounded length.
    pub(crate) fn name(&self, key: &str) -> Result<String, SettingsError> {
        let v = self.required(key)?;
        if v.trim() != v || v.len() > 512 {
            return Err(SettingsError::invalid(
                key,
                v,
                "a key name without surrounding spaces, at most 512 bytes",
            ));
        }
        Ok(v.to_string())
    }
}
