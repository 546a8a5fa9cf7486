//! The names of the settings: keys as written in TOML, variables as set in the environment.

/// Prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "REDIS_";

/// Every known setting key (lower case, without the `REDIS_` prefix).
///
/// Only these are read from the file and the environment; `config/default.toml` documents
/// each of them (a test keeps the two in step).
pub const KNOWN_KEYS: &[&str] = &[
    "host",
    "port",
    "db",
    "username",
    "password",
    "password_file",
    "url",
    "tls",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "sentinels",
    "sentinel_master",
    "sentinel_username",
    "sentinel_password",
    "sentinel_password_file",
    "sentinel_tls",
    "min_replicas_ack",
    "min_replicas_timeout",
    "connect_timeout",
    "command_timeout",
    "raw_data_queue",
    "processing_queue",
    "dead_letter_queue",
    "batch_size",
    "processing_timeout",
    "max_message_bytes",
    "max_json_depth",
    "prefetch",
    "max_inflight_bytes",
    "poll_interval",
    "block_timeout",
    "proto_max_bulk_len",
    "key_prefix",
    "consumer_name",
    "lease_ttl",
    "retry_initial_delay",
    "retry_max_delay",
    "stuck_after",
    "shutdown_grace",
    "schedule",
    "max_batches_per_tick",
    "max_batch_bytes",
    "max_batches_per_second",
    "batch_burst",
    "max_processing_queue_length",
    "shards",
    "cluster",
    "batch_ledger",
    "batch_state_prefix",
    "batch_state_ttl",
    "max_deliveries",
    "batch_claim_timeout",
    "batch_recovery_interval",
    "stats_interval",
    "http_addr",
    "log_envelopes_per_second",
    "log_format",
];

/// The environment variable for a settings key.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::settings::DEFAULT_TOML;

    /// The keys a defaults file sets, and the keys it documents as optional.
    ///
    /// An optional key (one without a default) is documented by a commented-out assignment
    /// at the start of a line, `# key = ""`; prose comments never take that form.
    fn documented_keys(toml: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let set: BTreeSet<String> = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<config::Map<String, config::Value>>())
            .expect("the file is valid TOML")
            .into_keys()
            .collect();
        let optional = toml
            .lines()
            .filter_map(|line| line.strip_prefix("# ")?.split_once(" = "))
            .map(|(key, _)| key)
            .filter(|key| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .map(str::to_string)
            .collect();
        (set, optional)
    }

    /// Every way `toml` and [`KNOWN_KEYS`] disagree, one line each.
    fn mismatches(toml: &str) -> Vec<String> {
        let (set, optional) = documented_keys(toml);
        let known: BTreeSet<String> = KNOWN_KEYS.iter().map(|k| k.to_string()).collect();
        let mut problems = Vec::new();
        for key in set.iter().chain(&optional) {
            if !known.contains(key) {
                problems.push(format!("{key} is in the file but not a known setting"));
            }
        }
        for key in set.intersection(&optional) {
            problems.push(format!("{key} is both set and documented as optional"));
        }
        for key in &known {
            if !set.contains(key) && !optional.contains(key) {
                problems.push(format!("{key} is a known setting missing from the file"));
            }
        }
        problems
    }

    #[test]
    fn the_defaults_file_documents_exactly_the_known_keys() {
        assert_eq!(mismatches(DEFAULT_TOML), Vec::<String>::new());
        let (set, optional) = documented_keys(DEFAULT_TOML);
        assert_eq!(set.len() + optional.len(), KNOWN_KEYS.len());
        assert!(optional.contains("password") && set.contains("batch_size"));
    }

    #[test]
    fn the_file_check_catches_each_kind_of_drift() {
        let unknown = format!("{DEFAULT_TOML}\nbatch_sise = 3\n");
        assert_eq!(mismatches(&unknown).len(), 1, "{:?}", mismatches(&unknown));
        let unknown_optional = format!("{DEFAULT_TOML}\n# passwrd = \"\"\n");
        assert_eq!(mismatches(&unknown_optional).len(), 1);
        let missing = DEFAULT_TOML.replace("\nprefetch = 1000\n", "\n");
        assert_eq!(
            mismatches(&missing),
            ["prefetch is a known setting missing from the file"]
        );
        let missing_optional = DEFAULT_TOML.replace("# url = \"\"", "# url is optional");
        assert_eq!(
            mismatches(&missing_optional),
            ["url is a known setting missing from the file"]
        );
        let both = format!("{DEFAULT_TOML}\nurl = \"redis://h\"\n");
        assert_eq!(
            mismatches(&both),
            ["url is both set and documented as optional"]
        );
    }

    #[test]
    fn variable_names() {
        assert_eq!(env_name("batch_size"), "REDIS_BATCH_SIZE");
    }
}
