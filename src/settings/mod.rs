//! Settings: read once from the compiled-in `config/default.toml`, an optional operator file
//! and the environment, then validated into typed values.
//!
//! The environment is passed in as a [`Env`] so tests hand over a map and never touch the
//! process environment. Raw values stay strings until [`validate`] turns each into a checked
//! type; a bad value becomes a [`SettingsError`] naming the variable, the value it got (never a
//! secret) and what is allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

/// The defaults, with their documentation. Compiled in so the binary needs no files.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "REDIS_";

/// Keys that are secrets: their values are never printed.
const SECRET_KEYS: &[&str] = &["password", "url"];

/// Every known setting key (lower case, without the `REDIS_` prefix).
pub const KNOWN_KEYS: &[&str] = &[
    "host",
    "port",
    "db",
    "username",
    "password",
    "url",
    "tls_ca_file",
    "connect_timeout",
    "command_timeout",
    "raw_data_queue",
    "processing_queue",
    "dead_letter_queue",
    "batch_size",
    "processing_timeout",
    "max_message_bytes",
    "prefetch",
    "poll_interval",
    "block_timeout",
    "key_prefix",
    "consumer_name",
    "lease_ttl",
    "retry_initial_delay",
    "retry_max_delay",
    "shutdown_grace",
    "schedule",
    "max_batches_per_tick",
    "stats_interval",
    "http_addr",
    "log_envelopes_per_second",
    "log_format",
];

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

/// Why settings could not be loaded. Displayed as the one line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value that does not fit its setting.
    #[error("invalid setting {variable}={value}: expected {expected}")]
    Invalid {
        /// Environment variable name, e.g. `REDIS_BATCH_SIZE`.
        variable: String,
        /// The value received, already redacted when secret.
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
    fn invalid(key_or_var: &str, value: &str, expected: impl Into<String>) -> Self {
        let variable = if key_or_var.starts_with(ENV_PREFIX) || key_or_var == "RUST_LOG" {
            key_or_var.to_string()
        } else {
            env_name(key_or_var)
        };
        let value = if SECRET_KEYS.iter().any(|s| env_name(s) == variable) {
            redact_value(&variable, value)
        } else {
            format!("{value:?}")
        };
        SettingsError::Invalid {
            variable,
            value,
            expected: expected.into(),
        }
    }
}

/// The environment variable for a settings key.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

fn redact_value(variable: &str, value: &str) -> String {
    if variable == "REDIS_URL" {
        format!("{:?}", redact_url(value))
    } else {
        "\"<redacted>\"".to_string()
    }
}

/// A URL with any password replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted>".to_string();
    };
    // The user information ends at the last '@' (a password may hold '/' or '@').
    match rest.rsplit_once('@') {
        Some((userinfo, host_and_path)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:<redacted>"),
                // `redis://secret@host` puts the password where a user name would be.
                None => "<redacted>".to_string(),
            };
            format!("{scheme}://{user}@{host_and_path}")
        }
        None => url.to_string(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line on stdout.
    Json,
    /// Human-readable, coloured when stdout is a terminal.
    Pretty,
}

/// When the mover takes batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Take batches as soon as they fill or time out.
    Continuous,
    /// Scheduled mode: at most `max_batches` batches once every `every`.
    Every {
        /// Period of the schedule.
        every: Duration,
        /// Most batches taken per period.
        max_batches: NonZeroUsize,
    },
}

/// Names of the three lists the daemon works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    /// Producers LPUSH here; the daemon takes from the tail.
    pub source: String,
    /// Envelopes are LPUSHed here.
    pub processing: String,
    /// Dead-letter records are LPUSHed here.
    pub dead_letter: String,
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Address, database and credentials.
    pub connection: ConnectionInfo,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for the reply to one non-blocking command or pipeline.
    pub command_timeout: Duration,
    /// How long one blocking wait on an empty source lasts on the server.
    pub block_timeout: Duration,
    /// PEM certificates to trust for `rediss://` instead of the public roots.
    pub tls_root_cert: Option<Vec<u8>>,
}

impl RedisSettings {
    /// `host:port` (or the socket path) for log lines; never contains credentials.
    pub fn display_addr(&self) -> String {
        match self.connection.addr() {
            ConnectionAddr::Tcp(h, p) => format!("{h}:{p}"),
            ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}"),
            ConnectionAddr::Unix(path) => path.display().to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// Batch shape and timing.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Most messages in one envelope.
    pub size: NonZeroUsize,
    /// A partial batch is sent this long after its first message was seen.
    pub timeout: Duration,
    /// Larger messages are dead-lettered.
    pub max_message_bytes: usize,
    /// Most messages read per round trip; a whole number of batches.
    pub prefetch: usize,
    /// Interval between length checks while a partial batch waits.
    pub poll_interval: Duration,
}

/// Identity and lease of this replica.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// Prefix of the daemon's own keys.
    pub key_prefix: String,
    /// This replica's identity.
    pub consumer_name: String,
    /// Lease time to live; bounds takeover after a crash.
    pub lease_ttl: Duration,
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
}

/// Validated settings: every value checked and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connection.
    pub redis: RedisSettings,
    /// The three lists.
    pub queues: Queues,
    /// Batching.
    pub batch: BatchSettings,
    /// Replica identity and lease.
    pub replica: ReplicaSettings,
    /// Reconnect backoff.
    pub retry: RetrySettings,
    /// Graceful shutdown budget.
    pub shutdown_grace: Duration,
    /// Continuous or scheduled mode.
    pub schedule: Schedule,
    /// Period of the stats line.
    pub stats_interval: Duration,
    /// HTTP listen address, `None` when disabled.
    pub http_addr: Option<SocketAddr>,
    /// Per-envelope info lines allowed per second.
    pub log_envelopes_per_second: u32,
    /// Log line format.
    pub log_format: LogFormat,
    /// `RUST_LOG` filter.
    pub log_filter: String,
    /// Warnings found while loading (likely typos), logged once logging is up.
    pub warnings: Vec<String>,
    /// The effective raw values, for `check-config`; secrets already redacted.
    pub effective: BTreeMap<String, String>,
}

/// Load settings from the defaults, an optional file and the given environment.
pub fn load(env: &dyn Env, file: Option<&Path>) -> Result<Settings, SettingsError> {
    let vars = env.vars()?;
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).required(true));
    }
    let mut overrides = config::Map::new();
    let mut warnings = Vec::new();
    for (name, value) in &vars {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if KNOWN_KEYS.contains(&key.as_str()) {
            overrides.insert(key, value.clone());
        } else if let Some(near) = nearest_key(&key) {
            warnings.push(format!(
                "ignoring unknown variable {name}; did you mean {}?",
                env_name(near)
            ));
        }
    }
    let builder = builder
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
        })?;
    let mut raw = RawSettings::default();
    for key in KNOWN_KEYS {
        if let Ok(v) = builder.get_string(key) {
            raw.values.insert((*key).to_string(), v);
        }
    }
    let rust_log = vars
        .iter()
        .find(|(k, _)| k == "RUST_LOG")
        .map(|(_, v)| v.clone());
    let mut settings = validate(&raw, rust_log)?;
    settings.warnings = warnings;
    Ok(settings)
}

/// A known key within edit distance 2 of `key`, for typo warnings.
fn nearest_key(key: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(k, key), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

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

/// Settings as strings, keyed without prefix, before validation.
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    /// Key → value.
    pub values: BTreeMap<String, String>,
}

impl RawSettings {
    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    fn required(&self, key: &str) -> Result<&str, SettingsError> {
        self.get(key)
            .ok_or_else(|| SettingsError::invalid(key, "", "a non-empty value"))
    }

    fn int<T>(&self, key: &str, min: T, max: T) -> Result<T, SettingsError>
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

    fn seconds(&self, key: &str, min: f64, max: f64) -> Result<Duration, SettingsError> {
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

    fn name(&self, key: &str) -> Result<String, SettingsError> {
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

/// Turn raw strings into checked settings.
pub fn validate(raw: &RawSettings, rust_log: Option<String>) -> Result<Settings, SettingsError> {
    let connection = connection_info(raw)?;
    let tls_root_cert = match raw.get("tls_ca_file") {
        None => None,
        Some(path) => {
            if !matches!(connection.addr(), ConnectionAddr::TcpTls { .. }) {
                return Err(SettingsError::invalid(
                    "tls_ca_file",
                    path,
                    "to be set only with a rediss:// REDIS_URL",
                ));
            }
            let pem = std::fs::read(path).map_err(|e| {
                SettingsError::invalid("tls_ca_file", path, format!("a readable PEM file ({e})"))
            })?;
            check_trust_anchors(&pem).map_err(|why| {
                SettingsError::invalid(
                    "tls_ca_file",
                    path,
                    format!("a PEM file of CA certificates ({why})"),
                )
            })?;
            Some(pem)
        }
    };
    let redis = RedisSettings {
        connection,
        tls_root_cert,
        connect_timeout: raw.seconds("connect_timeout", 0.001, 3600.0)?,
        command_timeout: raw.seconds("command_timeout", 0.001, 3600.0)?,
        block_timeout: raw.seconds("block_timeout", 0.01, 3600.0)?,
    };
    let queues = Queues {
        source: raw.name("raw_data_queue")?,
        processing: raw.name("processing_queue")?,
        dead_letter: raw.name("dead_letter_queue")?,
    };
    if queues.source == queues.processing || queues.source == queues.dead_letter {
        return Err(SettingsError::invalid(
            "raw_data_queue",
            &queues.source,
            "a list different from REDIS_PROCESSING_QUEUE and REDIS_DEAD_LETTER_QUEUE",
        ));
    }
    let size: usize = raw.int("batch_size", 1, 100_000)?;
    let size = NonZeroUsize::new(size).ok_or_else(|| {
        SettingsError::invalid("batch_size", "0", "a whole number from 1 to 100000")
    })?;
    let prefetch: usize = raw.int("prefetch", 1, 1_000_000)?;
    let batch = BatchSettings {
        size,
        timeout: raw.seconds("processing_timeout", 0.0, 31_536_000.0)?,
        max_message_bytes: raw.int("max_message_bytes", 1, 512 * 1024 * 1024)?,
        prefetch: prefetch.div_ceil(size.get()) * size.get(),
        poll_interval: raw.seconds("poll_interval", 0.001, 60.0)?,
    };
    let consumer_name = match raw.get("consumer_name") {
        // `/` separates the name from the token in the lease value; a name containing it
        // could pass for another replica's.
        Some(name) if name.contains('/') || name.chars().any(char::is_whitespace) => {
            return Err(SettingsError::invalid(
                "consumer_name",
                name,
                "a name without '/' or spaces",
            ))
        }
        Some(name) => raw.name("consumer_name").map(|_| name.to_string())?,
        None => default_consumer_name(),
    };
    let replica = ReplicaSettings {
        key_prefix: raw.name("key_prefix")?,
        consumer_name,
        lease_ttl: raw.seconds("lease_ttl", 0.5, 3600.0)?,
    };
    let retry = RetrySettings {
        initial_delay: raw.seconds("retry_initial_delay", 0.001, 3600.0)?,
        max_delay: raw.seconds("retry_max_delay", 0.001, 3600.0)?,
    };
    if retry.max_delay < retry.initial_delay {
        return Err(SettingsError::invalid(
            "retry_max_delay",
            raw.get("retry_max_delay").unwrap_or_default(),
            "a delay not below REDIS_RETRY_INITIAL_DELAY",
        ));
    }
    let schedule = match raw.get("schedule") {
        None => Schedule::Continuous,
        Some(_) => {
            let every = raw.seconds("schedule", 0.001, 31_536_000.0).map_err(|_| {
                SettingsError::invalid(
                    "schedule",
                    raw.get("schedule").unwrap_or_default(),
                    "empty (run continuously) or a number of seconds above 0",
                )
            })?;
            let n: usize = raw.int("max_batches_per_tick", 1, 1_000_000)?;
            Schedule::Every {
                every,
                max_batches: NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
            }
        }
    };
    let http_addr = match raw.required("http_addr")? {
        "off" => None,
        v => Some(v.parse::<SocketAddr>().map_err(|_| {
            SettingsError::invalid("http_addr", v, "\"off\" or an address such as 0.0.0.0:9464")
        })?),
    };
    let log_format = match raw.required("log_format")? {
        "json" => LogFormat::Json,
        "pretty" => LogFormat::Pretty,
        v => {
            return Err(SettingsError::invalid(
                "log_format",
                v,
                "\"json\" or \"pretty\"",
            ))
        }
    };
    let log_filter = rust_log.unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
        return Err(SettingsError::invalid(
            "RUST_LOG",
            &log_filter,
            "a tracing filter such as info or batch_processor=debug",
        ));
    }
    let effective = raw
        .values
        .iter()
        .map(|(k, v)| {
            let shown = if SECRET_KEYS.contains(&k.as_str()) && k == "url" {
                redact_url(v)
            } else if SECRET_KEYS.contains(&k.as_str()) {
                "<redacted>".to_string()
            } else {
                v.clone()
            };
            (env_name(k), shown)
        })
        .collect();
    Ok(Settings {
        redis,
        queues,
        batch,
        replica,
        retry,
        shutdown_grace: raw.seconds("shutdown_grace", 0.0, 4.5)?,
        schedule,
        stats_interval: raw.seconds("stats_interval", 0.1, 86_400.0)?,
        http_addr,
        log_envelopes_per_second: raw.int("log_envelopes_per_second", 0, 1_000_000)?,
        log_format,
        log_filter,
        warnings: Vec::new(),
        effective,
    })
}

/// Parse `pem` as trust anchors the way the TLS client will, so a bad file is a bad setting.
fn check_trust_anchors(pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        store.add(cert).map_err(|e| e.to_string())?;
    }
    if store.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(())
}

fn default_consumer_name() -> String {
    let host = gethostname::gethostname();
    format!("{}-{}", host.to_string_lossy(), std::process::id())
}

fn connection_info(raw: &RawSettings) -> Result<ConnectionInfo, SettingsError> {
    if let Some(url) = raw.get("url") {
        let allowed = "a redis:// or rediss:// URL such as redis://user:pass@host:6379/0";
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(SettingsError::invalid("url", url, allowed));
        }
        let info = url
            .into_connection_info()
            .map_err(|_| SettingsError::invalid("url", url, allowed))?;
        // `redis://secret@host` reads as a user name without a password, and user names are
        // logged; insist on the unambiguous forms.
        let authority = url.split_once("://").map_or("", |(_, rest)| rest);
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if !userinfo.contains(':') {
                return Err(SettingsError::invalid(
                    "url",
                    url,
                    "a password as redis://:password@host or redis://user:password@host",
                ));
            }
        }
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP2);
        return Ok(info.set_redis_settings(redis));
    }
    let host = raw.name("host")?;
    let port: u16 = raw.int("port", 1, 65535)?;
    let db: i64 = raw.int("db", 0, 1_000_000)?;
    let mut redis = redis::RedisConnectionInfo::default()
        .set_db(db)
        .set_protocol(ProtocolVersion::RESP2);
    if let Some(user) = raw.get("username") {
        redis = redis.set_username(user);
    }
    if let Some(pass) = raw.get("password") {
        redis = redis.set_password(pass);
    }
    let info = ConnectionAddr::Tcp(host, port)
        .into_connection_info()
        .map_err(|_| {
            SettingsError::invalid(
                "host",
                raw.get("host").unwrap_or_default(),
                "a host name or address",
            )
        })?;
    Ok(info.set_redis_settings(redis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        load(&vars.to_vec(), None)
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load_with(&[]).unwrap();
        assert_eq!(s.queues.source, "raw_data_queue");
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
        assert_eq!(s.queues.source, "in");
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
        let s = load_with(&[("REDIS_PASSWORD", "hunter2")]).unwrap();
        let shown = format!("{:?}", s.effective);
        assert!(!shown.contains("hunter2"), "{shown}");
        let s = load_with(&[("REDIS_URL", "redis://u:hunter2@h:1/3")]).unwrap();
        assert!(!format!("{:?}", s.effective).contains("hunter2"));
        assert_eq!(s.redis.connection.redis_settings().db(), 3);
    }

    #[test]
    fn url_redaction() {
        assert_eq!(
            redact_url("redis://u:p@h:1/0"),
            "redis://u:<redacted>@h:1/0"
        );
        assert_eq!(redact_url("redis://p@h"), "redis://<redacted>@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn unknown_variables_are_ignored_with_a_typo_warning() {
        let s = load_with(&[("REDIS_BATCH_SIZ", "5"), ("REDIS_SOMETHING_ELSE", "x")]).unwrap();
        assert_eq!(s.batch.size.get(), 10);
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("REDIS_BATCH_SIZE"));
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
        assert_eq!(s.queues.source, "raw_data_queue");
        let missing = load(&env, Some(&dir.path().join("nope.toml"))).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"), "{missing}");
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
}
