//! Loading: layer the compiled-in defaults, an optional operator file and the environment,
//! read the files the settings name, then hand the raw result to validation.
//!
//! Every read from disk happens here, so validation stays a pure function of its input.

use std::collections::BTreeSet;
use std::path::Path;

use super::keys::{ENV_PREFIX, KNOWN_KEYS};
use super::raw::RawSettings;
use super::report::{typo_warning, Effective};
use super::validate::validate;
use super::{Env, Loaded, Settings, SettingsError, DEFAULT_TOML};

/// Load settings from the defaults, an optional file and the given environment.
pub fn load(env: &dyn Env, file: Option<&Path>) -> Result<Settings, SettingsError> {
    load_with_report(env, file).map(|loaded| loaded.settings)
}

/// Like [`load`], and also return what the operator should hear about: typo warnings and the
/// effective values for `check-config`.
pub fn load_with_report(env: &dyn Env, file: Option<&Path>) -> Result<Loaded, SettingsError> {
    let vars = env.vars()?;
    let (overrides, warnings) = environment_overrides(&vars);
    let mut explicit: BTreeSet<String> = overrides.keys().cloned().collect();
    let layered = layer(file, overrides)?;
    explicit.extend(file_keys(file));
    let mut raw = read_raw(&layered, &vars);
    raw.explicit = explicit;
    let settings = validate(&raw)?;
    let effective = Effective::new(&raw, &settings);
    Ok(Loaded {
        settings,
        warnings,
        effective,
    })
}

/// The `REDIS_*` variables that name known settings, keyed by setting, and a warning for each
/// other one that looks like a typo of a known setting. Other `REDIS_*` variables belong to
/// other programs sharing the environment and are ignored silently.
fn environment_overrides(vars: &[(String, String)]) -> (config::Map<String, String>, Vec<String>) {
    let mut overrides = config::Map::new();
    let mut warnings = Vec::new();
    for (name, value) in vars {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if KNOWN_KEYS.contains(&key.as_str()) {
            overrides.insert(key, value.clone());
        } else if let Some(warning) = typo_warning(name, &key) {
            warnings.push(warning);
        }
    }
    (overrides, warnings)
}

/// Defaults, then the file (which must exist when given), then the environment overrides.
fn layer(
    file: Option<&Path>,
    overrides: config::Map<String, String>,
) -> Result<config::Config, SettingsError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(path) = file {
        // TOML whatever the extension, and exactly this path: `File::from` would guess the
        // format from the extension and try `<path>.toml` when `path` does not exist.
        if !path.exists() {
            return Err(SettingsError::Source {
                origin: path.display().to_string(),
                problem: "no such file",
            });
        }
        let name = path.to_string_lossy();
        builder =
            builder.add_source(config::File::new(&name, config::FileFormat::Toml).required(true));
    }
    builder
        .add_source(
            config::Environment::default()
                .source(Some(overrides))
                .try_parsing(false),
        )
        .build()
        .map_err(|e| SettingsError::Source {
            origin: file.map_or("defaults".into(), |p| p.display().to_string()),
            problem: match e {
                config::ConfigError::NotFound(_) => "no such file",
                config::ConfigError::Foreign(_) => "it cannot be read, or is not valid TOML",
                _ => "it is not valid TOML for these settings",
            },
        })
}

/// The settings that name a file whose contents validation needs.
const FILE_KEYS: [&str; 5] = [
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "password_file",
    "sentinel_password_file",
];

/// The keys the operator's file sets (it was already read and parsed by [`layer`]).
fn file_keys(file: Option<&Path>) -> Vec<String> {
    let Some(path) = file else {
        return Vec::new();
    };
    let name = path.to_string_lossy();
    config::Config::builder()
        .add_source(config::File::new(&name, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<config::Map<String, config::Value>>())
        .map(|map| map.into_keys().collect())
        .unwrap_or_default()
}

/// The layered values as strings, `RUST_LOG`, and the contents of every file a setting
/// names (TLS material, `_FILE` secrets). A read error is kept, not raised: validation
/// reports it in order with the other settings.
fn read_raw(layered: &config::Config, vars: &[(String, String)]) -> RawSettings {
    let mut raw = RawSettings::default();
    for key in KNOWN_KEYS {
        if let Ok(v) = layered.get_string(key) {
            raw.values.insert((*key).to_string(), v);
        }
    }
    raw.rust_log = vars
        .iter()
        .find(|(k, _)| k == "RUST_LOG")
        .map(|(_, v)| v.clone());
    for key in FILE_KEYS {
        if let Some(path) = raw.get(key) {
            let contents = std::fs::read(path);
            raw.files.insert(key.to_owned(), contents);
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use super::*;
    use crate::settings::{LogFormat, Schedule};

    fn load_with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        load(&vars.to_vec(), None)
    }

    fn report_with(vars: &[(&str, &str)]) -> Result<Loaded, SettingsError> {
        load_with_report(&vars.to_vec(), None)
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load_with(&[]).unwrap();
        assert_eq!(s.queues.sources, ["raw_data_queue"]);
        assert_eq!(s.queues.processing, "processing_queue");
        assert_eq!(s.queues.dead_letter, "dead_letter_queue");
        assert_eq!(s.batch.size.get(), 10);
        assert_eq!(s.batch.timeout, Duration::from_secs(300));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_filter, "info");
        assert_eq!(s.redis.display_addr(), "127.0.0.1:6379");
        assert_eq!(s.schedule, Schedule::Continuous);
        assert_eq!(s.batch.prefetch, 1000);
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = load_with(&[
            ("REDIS_BATCH_SIZE", "7"),
            ("REDIS_PROCESSING_TIMEOUT", "0.5"),
            ("REDIS_RAW_DATA_QUEUE", "in"),
            ("REDIS_LOG_FORMAT", "pretty"),
            ("REDIS_PORT", "6380"),
            ("RUST_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(s.batch.size.get(), 7);
        assert_eq!(s.batch.timeout, Duration::from_millis(500));
        assert_eq!(s.queues.sources, ["in"]);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert_eq!(s.redis.display_addr(), "127.0.0.1:6380");
        assert_eq!(s.log_filter, "debug");
        // prefetch is rounded up to whole batches
        assert_eq!(s.batch.prefetch, 1001);
    }

    #[test]
    fn bad_values_name_the_variable_and_what_is_allowed() {
        for (var, value) in [
            ("REDIS_BATCH_SIZE", "abc"),
            ("REDIS_BATCH_SIZE", "0"),
            ("REDIS_PORT", "70000"),
            ("REDIS_PROCESSING_TIMEOUT", "-1"),
            ("REDIS_PROCESSING_TIMEOUT", "NaN"),
            ("REDIS_LOG_FORMAT", "xml"),
            ("REDIS_DB", "x"),
            ("REDIS_HTTP_ADDR", "nowhere"),
            ("REDIS_SCHEDULE", "every minute"),
            ("REDIS_CONSUMER_NAME", "a/b"),
        ] {
            let err = load_with(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
            assert!(err.contains(value), "{err}");
            assert!(err.contains("expected"), "{err}");
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let err = load_with(&[("REDIS_URL", "http://u:hunter2@h:1/0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("REDIS_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for url in ["redis://hunter2@h:1/0", "ftp://u:pa/hunter2@h:1/0"] {
            let err = load_with(&[("REDIS_URL", url)]).unwrap_err().to_string();
            assert!(err.contains("REDIS_URL"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "password = hunter2\n").unwrap();
        let err = load(&Vec::<(&str, &str)>::new(), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let loaded = report_with(&[("REDIS_PASSWORD", "hunter2")]).unwrap();
        let shown = format!("{:?}\n{}", loaded.effective, loaded.effective.render());
        assert!(shown.contains("REDIS_PASSWORD"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let loaded = report_with(&[("REDIS_URL", "redis://u:hunter2@h:1/3")]).unwrap();
        let shown = format!("{:?}\n{}", loaded.effective, loaded.effective.render());
        assert!(
            shown.contains("REDIS_URL=redis://u:<redacted>@h:1/3"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(loaded.settings.redis.connection.redis_settings().db(), 3);
    }

    #[test]
    fn unknown_variables_are_ignored_with_a_typo_warning() {
        let loaded =
            report_with(&[("REDIS_BATCH_SIZ", "5"), ("REDIS_SOMETHING_ELSE", "x")]).unwrap();
        assert_eq!(loaded.settings.batch.size.get(), 10);
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("REDIS_BATCH_SIZE"));
    }

    #[test]
    fn a_config_file_sits_between_the_defaults_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bp.toml");
        std::fs::write(&path, "batch_size = 50\nprocessing_queue = \"from_file\"\n").unwrap();
        let env = vec![("REDIS_BATCH_SIZE", "7")];
        let s = load(&env, Some(&path)).unwrap();
        assert_eq!(s.batch.size.get(), 7);
        assert_eq!(s.queues.processing, "from_file");
        assert_eq!(s.queues.sources, ["raw_data_queue"]);
        let missing = load(&env, Some(&dir.path().join("nope.toml"))).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"), "{missing}");
    }

    #[test]
    fn the_tls_ca_file_is_read_by_loading_and_judged_by_validation() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();
        let err = load_with(&[
            ("REDIS_URL", "rediss://h:6380/0"),
            ("REDIS_TLS_CA_FILE", missing),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("REDIS_TLS_CA_FILE"), "{err}");
        assert!(err.contains("a readable PEM file"), "{err}");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let err = load_with(&[
            ("REDIS_URL", "rediss://h:6380/0"),
            ("REDIS_TLS_CA_FILE", not_pem.to_str().unwrap()),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("a PEM file of CA certificates"), "{err}");
        // Without TLS the file is refused before its contents matter.
        let err = load_with(&[("REDIS_TLS_CA_FILE", missing)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("only with a rediss://"), "{err}");
    }

    #[test]
    fn beat_mode() {
        let s = load_with(&[
            ("REDIS_SCHEDULE", "60"),
            ("REDIS_MAX_BATCHES_PER_TICK", "3"),
        ])
        .unwrap();
        assert_eq!(
            s.schedule,
            Schedule::Every {
                every: Duration::from_secs(60),
                max_batches: NonZeroUsize::new(3).unwrap()
            }
        );
        assert!(load_with(&[("REDIS_HTTP_ADDR", "off")])
            .unwrap()
            .http_addr
            .is_none());
    }

    /// `--config FILE` takes a TOML file whatever its name (a `.conf` file is not refused
    /// for its extension).
    #[test]
    fn a_config_file_is_toml_whatever_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("batch-processor.conf");
        std::fs::write(&conf, "batch_size = 7\n").unwrap();
        let loaded = load(&Vec::<(&str, &str)>::new(), Some(&conf));
        assert_eq!(
            loaded
                .as_ref()
                .map(|s| s.batch.size.get())
                .map_err(ToString::to_string),
            Ok(7),
            "an existing TOML file named .conf"
        );
    }

    /// A path without an extension names that file, not a sibling with `.toml` added.
    #[test]
    fn a_missing_config_file_is_not_replaced_by_a_sibling() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bp");
        std::fs::write(dir.path().join("bp.toml"), "batch_size = 9\n").unwrap();
        let err = load(&Vec::<(&str, &str)>::new(), Some(&bare));
        assert!(
            err.is_err(),
            "--config {} does not exist, yet loading read bp.toml (batch_size {:?})",
            bare.display(),
            err.map(|s| s.batch.size.get())
        );
    }

    /// Review: negative zero is within "from 0" and must not panic `Duration::from_secs_f64`.
    #[test]
    fn negative_zero_seconds_load() {
        for v in ["-0", "-0.0", "0e5", "-0e-5"] {
            let s = load_with(&[("REDIS_PROCESSING_TIMEOUT", v)]).unwrap();
            assert_eq!(s.batch.timeout, Duration::ZERO, "{v}");
        }
    }
}
