//! What loading tells the operator besides the settings: warnings about likely typos, and the
//! effective values that `check-config` prints. Kept apart from [`Settings`] because the
//! daemon never needs them after start-up.

use std::collections::BTreeMap;

use super::keys::{env_name, KNOWN_KEYS};
use super::raw::RawSettings;
use super::redact::redact;
use super::Settings;

/// The warning for `REDIS_*` variable `name` (setting `key` unknown), when it is within edit
/// distance 2 of a known setting. Farther names are taken to belong to other programs.
pub(crate) fn typo_warning(name: &str, key: &str) -> Option<String> {
    let near = KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(k, key), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)?;
    Some(format!(
        "ignoring unknown variable {name}; did you mean {}?",
        env_name(near)
    ))
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The effective settings as an operator would set them, secrets redacted: what
/// `check-config` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Variable name → shown value, for every setting that has a value.
    values: BTreeMap<String, String>,
    /// The `RUST_LOG` filter in use (it has no `REDIS_` variable).
    log_filter: String,
    /// The consumer name in use, which may be derived rather than set.
    consumer_name: String,
}

impl Effective {
    /// The listing for `raw`, which validated into `settings`.
    pub(crate) fn new(raw: &RawSettings, settings: &Settings) -> Self {
        let values = raw
            .values
            .iter()
            .map(|(key, value)| {
                let variable = env_name(key);
                let shown = redact(&variable, value).into_owned();
                (variable, shown)
            })
            .collect();
        Effective {
            values,
            log_filter: settings.log_filter.clone(),
            consumer_name: settings.replica.consumer_name.clone(),
        }
    }

    /// The shown (redacted) value of environment variable `variable`.
    pub fn get(&self, variable: &str) -> Option<&str> {
        self.values.get(variable).map(String::as_str)
    }

    /// One `VARIABLE=value` line per setting, then `RUST_LOG`, then the consumer name in use.
    pub fn render(&self) -> String {
        let mut lines: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(format!("RUST_LOG={}", self.log_filter));
        lines.push(format!("# consumer name in use: {}", self.consumer_name));
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_near_known_keys_only() {
        let warning = typo_warning("REDIS_BATCH_SIZ", "batch_siz").unwrap();
        assert!(warning.contains("REDIS_BATCH_SIZ;"), "{warning}");
        assert!(warning.contains("REDIS_BATCH_SIZE?"), "{warning}");
        assert_eq!(typo_warning("REDIS_SOMETHING_ELSE", "something_else"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_listing_ends_with_the_filter_and_consumer_name() {
        let loaded =
            crate::settings::load_with_report(&vec![("REDIS_CONSUMER_NAME", "c1")], None).unwrap();
        let text = loaded.effective.render();
        let lines: Vec<&str> = text.lines().collect();
        // One line per setting that has a value, then the filter and the consumer name.
        let settings = &lines[..lines.len() - 2];
        assert!(settings.len() > 20, "{text}");
        assert!(settings.iter().all(|l| l.starts_with("REDIS_")), "{text}");
        assert!(lines.contains(&"REDIS_BATCH_SIZE=10"), "{text}");
        assert_eq!(lines[lines.len() - 2], "RUST_LOG=info");
        assert_eq!(lines[lines.len() - 1], "# consumer name in use: c1");
        assert_eq!(loaded.effective.get("REDIS_CONSUMER_NAME"), Some("c1"));
    }
}
