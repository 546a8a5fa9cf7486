//! Validation: raw strings in, typed [`Settings`] out, or the first bad value as a
//! [`SettingsError`]. Pure: files were already read by loading.
//!
//! Groups are checked in a fixed order (connection, queues, batch, replica, retry, schedule,
//! HTTP and logging, then the scalar settings) so that with several bad values the same one
//! is always reported.

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use super::raw::RawSettings;
use super::{
    BatchSettings, LogFormat, Queues, ReplicaSettings, RetrySettings, Schedule, Settings,
    SettingsError,
};
use crate::message::{Profile, MAX_DEPTH_LIMIT};

/// Turn raw strings into checked settings.
pub(crate) fn validate(raw: &RawSettings) -> Result<Settings, SettingsError> {
    let redis = super::connection::validate(raw)?;
    let queues = queues(raw)?;
    let batch = batch(raw)?;
    let replica = replica(raw)?;
    let retry = retry(raw)?;
    let schedule = schedule(raw)?;
    let flow = super::flow::validate(raw)?;
    let ledger = super::ledger::validate(raw)?;
    super::ledger::check_queues(&ledger, &queues)?;
    let scale = super::scale::validate(raw, &queues, &replica.key_prefix, &ledger)?;
    let http_addr = http_addr(raw)?;
    let log_format = log_format(raw)?;
    let log_filter = log_filter(raw)?;
    Ok(Settings {
        redis,
        queues,
        batch,
        replica,
        retry,
        shutdown_grace: raw.seconds("shutdown_grace", 0.0, 4.5)?,
        schedule,
        flow,
        scale,
        ledger,
        stats_interval: raw.seconds("stats_interval", 0.1, 86_400.0)?,
        http_addr,
        log_envelopes_per_second: raw.int("log_envelopes_per_second", 0, 1_000_000)?,
        log_format,
        log_filter,
    })
}

/// Most source lists one deployment takes from (each one costs a lease and a read per round
/// trip).
const MAX_SOURCES: usize = 16;

/// The lists; no source may be a destination, or the daemon would feed itself.
fn queues(raw: &RawSettings) -> Result<Queues, SettingsError> {
    let queues = Queues {
        sources: sources(raw)?,
        processing: raw.name("processing_queue")?,
        dead_letter: raw.name("dead_letter_queue")?,
    };
    for source in &queues.sources {
        if *source == queues.processing || *source == queues.dead_letter {
            return Err(SettingsError::invalid(
                "raw_data_queue",
                &queues.sources_label(),
                "lists different from REDIS_PROCESSING_QUEUE and REDIS_DEAD_LETTER_QUEUE",
            ));
        }
    }
    Ok(queues)
}

/// `REDIS_RAW_DATA_QUEUE`: one list, or several separated by commas, highest priority first.
fn sources(raw: &RawSettings) -> Result<Vec<String>, SettingsError> {
    let value = raw.name("raw_data_queue")?;
    let expected = "list names separated by commas (highest priority first), each non-empty \
                    and without spaces around it, no name twice, at most 16";
    let sources: Vec<String> = value.split(',').map(str::to_owned).collect();
    let malformed = sources.len() > MAX_SOURCES
        || sources.iter().any(|s| s.is_empty() || s.trim() != s)
        || sources
            .iter()
            .enumerate()
            .any(|(i, s)| sources[..i].contains(s));
    if malformed {
        return Err(SettingsError::invalid("raw_data_queue", &value, expected));
    }
    Ok(sources)
}

/// Batch shape and timing; prefetch is rounded up to whole batches.
fn batch(raw: &RawSettings) -> Result<BatchSettings, SettingsError> {
    let size: usize = raw.int("batch_size", 1, 100_000)?;
    let size = NonZeroUsize::new(size).ok_or_else(|| {
        SettingsError::invalid("batch_size", "0", "a whole number from 1 to 100000")
    })?;
    let prefetch: usize = raw.int("prefetch", 1, 1_000_000)?;
    let message = Profile {
        max_bytes: raw.int("max_message_bytes", 1, 512 * 1024 * 1024)?,
        max_depth: raw.int("max_json_depth", 0, MAX_DEPTH_LIMIT)?,
    };
    Ok(BatchSettings {
        size,
        timeout: raw.seconds("processing_timeout", 0.0, 31_536_000.0)?,
        message,
        prefetch: prefetch.div_ceil(size.get()) * size.get(),
        poll_interval: raw.seconds("poll_interval", 0.001, 60.0)?,
        max_inflight_bytes: max_inflight_bytes(raw, message.max_bytes)?,
    })
}

/// `max_inflight_bytes`: room for two messages of the largest size, one per request in flight,
/// so a read always has room for the next message.
fn max_inflight_bytes(raw: &RawSettings, max_message: usize) -> Result<usize, SettingsError> {
    let bound: usize = raw.int("max_inflight_bytes", 1 << 20, 1 << 40)?;
    if bound < 2 * max_message {
        return Err(SettingsError::invalid(
            "max_inflight_bytes",
            &bound.to_string(),
            format!(
                "at least twice REDIS_MAX_MESSAGE_BYTES ({max_message}), i.e. {}",
                2 * max_message
            ),
        ));
    }
    Ok(bound)
}

/// Key prefix, identity (defaulting to `<hostname>-<pid>`) and lease.
fn replica(raw: &RawSettings) -> Result<ReplicaSettings, SettingsError> {
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
        Some(_) => raw.name("consumer_name")?,
        None => default_consumer_name(),
    };
    Ok(ReplicaSettings {
        key_prefix: raw.name("key_prefix")?,
        consumer_name,
        lease_ttl: raw.seconds("lease_ttl", 0.5, 3600.0)?,
    })
}

/// Unique per host and process, and stable enough to read in `status`.
fn default_consumer_name() -> String {
    let host = gethostname::gethostname();
    format!("{}-{}", host.to_string_lossy(), std::process::id())
}

/// Reconnect backoff; the cap may not be below the first delay.
fn retry(raw: &RawSettings) -> Result<RetrySettings, SettingsError> {
    let retry = RetrySettings {
        initial_delay: raw.seconds("retry_initial_delay", 0.001, 3600.0)?,
        max_delay: raw.seconds("retry_max_delay", 0.001, 3600.0)?,
        stuck_after: raw.seconds("stuck_after", 1.0, 86_400.0)?,
    };
    if retry.max_delay < retry.initial_delay {
        return Err(SettingsError::invalid(
            "retry_max_delay",
            raw.get("retry_max_delay").unwrap_or_default(),
            "a delay not below REDIS_RETRY_INITIAL_DELAY",
        ));
    }
    Ok(retry)
}

/// Continuous when `schedule` is empty; otherwise a period and a batch allowance per period.
fn schedule(raw: &RawSettings) -> Result<Schedule, SettingsError> {
    let Some(value) = raw.get("schedule") else {
        return Ok(Schedule::Continuous);
    };
    let every = raw.seconds("schedule", 0.001, 31_536_000.0).map_err(|_| {
        SettingsError::invalid(
            "schedule",
            value,
            "empty (run continuously) or a number of seconds above 0",
        )
    })?;
    let n: usize = raw.int("max_batches_per_tick", 1, 1_000_000)?;
    Ok(Schedule::Every {
        every,
        max_batches: NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
    })
}

/// The HTTP listen address, or `None` for "off".
fn http_addr(raw: &RawSettings) -> Result<Option<SocketAddr>, SettingsError> {
    match raw.required("http_addr")? {
        "off" => Ok(None),
        v => v.parse::<SocketAddr>().map(Some).map_err(|_| {
            SettingsError::invalid("http_addr", v, "\"off\" or an address such as 0.0.0.0:9464")
        }),
    }
}

/// JSON or pretty log lines.
fn log_format(raw: &RawSettings) -> Result<LogFormat, SettingsError> {
    match raw.required("log_format")? {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        v => Err(SettingsError::invalid(
            "log_format",
            v,
            "\"json\" or \"pretty\"",
        )),
    }
}

/// `RUST_LOG`, `info` when unset; checked here so a bad filter is a settings error, not a
/// silently ignored one once logging starts.
fn log_filter(raw: &RawSettings) -> Result<String, SettingsError> {
    let filter = raw.rust_log.clone().unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&filter).is_err() {
        return Err(SettingsError::invalid(
            "RUST_LOG",
            &filter,
            "a tracing filter such as info or batch_processor=debug",
        ));
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        let mut raw = RawSettings::default();
        // The defaults file's own assignments, then the test's.
        for line in crate::settings::DEFAULT_TOML.lines() {
            if let Some((key, value)) = line.split_once(" = ") {
                if !key.starts_with('#') {
                    raw.values
                        .insert(key.to_string(), value.trim_matches('"').to_string());
                }
            }
        }
        for (key, value) in pairs {
            raw.values.insert(key.to_string(), value.to_string());
        }
        raw
    }

    #[test]
    fn validation_reads_no_files() {
        // The path does not exist; validation judges only the contents it is handed.
        let mut input = raw(&[
            ("url", "rediss://h:6380/0"),
            ("tls_ca_file", "/nonexistent/ca.pem"),
        ]);
        let ca = |r: &mut RawSettings, v| {
            r.files.insert("tls_ca_file".into(), v);
        };
        ca(&mut input, Ok(b"not a certificate".to_vec()));
        let err = validate(&input).unwrap_err().to_string();
        assert!(err.contains("a PEM file of CA certificates"), "{err}");
        ca(&mut input, Err(std::io::Error::other("gone")));
        let err = validate(&input).unwrap_err().to_string();
        assert!(err.contains("a readable PEM file (gone)"), "{err}");
        input.files.clear();
        assert!(validate(&input).is_err());
    }

    #[test]
    fn the_first_bad_group_is_reported() {
        let input = raw(&[("batch_size", "0"), ("log_format", "xml"), ("port", "0")]);
        let err = validate(&input).unwrap_err().to_string();
        assert!(err.contains("REDIS_PORT"), "{err}");
        let input = raw(&[("batch_size", "0"), ("log_format", "xml")]);
        let err = validate(&input).unwrap_err().to_string();
        assert!(err.contains("REDIS_BATCH_SIZE"), "{err}");
    }

    #[test]
    fn queues_must_not_feed_themselves() {
        let input = raw(&[("processing_queue", "raw_data_queue")]);
        let err = validate(&input).unwrap_err().to_string();
        assert!(err.contains("REDIS_RAW_DATA_QUEUE"), "{err}");
    }
}
