//! Settings as loading found them, before validation: strings, plus the contents of the files
//! they name. Holding file contents here, already read, keeps validation free of I/O.

use std::collections::{BTreeMap, BTreeSet};
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
    /// The contents of each file a setting names (`tls_ca_file`, `password_file`, ...; see
    /// `FILE_KEYS`), or why it could not be read. A key is absent when its setting is empty
    /// (loading reads every file that is named).
    pub(crate) files: BTreeMap<String, io::Result<Vec<u8>>>,
    /// The keys set by the operator (in the file or the environment), as opposed to the
    /// compiled-in defaults: some settings exclude others only when both were asked for.
    pub(crate) explicit: BTreeSet<String>,
}

impl RawSettings {
    /// The value of `key`; an empty value counts as unset.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// The contents of the file named by `key`: `None` when the setting is empty, otherwise
    /// the bytes or a bad-setting error naming the variable and why it could not be read.
    /// `what` names the kind of file in the error (`PEM file`).
    pub(crate) fn file(&self, key: &str, what: &str) -> Result<Option<&[u8]>, SettingsError> {
        let Some(path) = self.get(key) else {
            return Ok(None);
        };
        match self.files.get(key) {
            Some(Ok(bytes)) => Ok(Some(bytes)),
            Some(Err(e)) => Err(SettingsError::invalid(
                key,
                path,
                format!("a readable {what} ({e})"),
            )),
            // Loading reads every non-empty path; this is only reached by a hand-built input.
            None => Err(SettingsError::invalid(
                key,
                path,
                format!("a readable {what} (it was not read)"),
            )),
        }
    }

    /// Whether the operator set `key` (in the file or the environment) rather than the
    /// defaults.
    pub(crate) fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(key) && self.get(key).is_some()
    }

    /// `true` or `false`.
    pub(crate) fn flag(&self, key: &str) -> Result<bool, SettingsError> {
        match self.required(key)?.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(SettingsError::invalid(key, v, "true or false")),
        }
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
