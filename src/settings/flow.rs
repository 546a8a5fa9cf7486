//! Flow-control settings: the batch byte cap, the output rate limit and back-pressure on the
//! processing list, and their validation (each is off when its variable is empty).

use std::num::NonZeroUsize;

use super::raw::RawSettings;
use super::SettingsError;

/// Output limits for a slow, costly consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowSettings {
    /// A batch closes before its messages (plus one byte each) would pass this many bytes;
    /// a larger message travels alone. `None`: only the batch size and the value limit apply.
    pub max_batch_bytes: Option<NonZeroUsize>,
    /// Envelopes per second, on average, with a burst; `None`: unlimited.
    pub rate: Option<RateLimit>,
    /// No envelope is sent that would make the processing list longer than this.
    pub max_processing_len: Option<NonZeroUsize>,
}

/// A token bucket of envelopes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Envelopes per second (fractions allowed).
    pub per_second: f64,
    /// Envelopes that may leave at once after a quiet spell.
    pub burst: NonZeroUsize,
}

/// The batch byte cap and the output rate limit; both off when empty.
pub(super) fn validate(raw: &RawSettings) -> Result<FlowSettings, SettingsError> {
    let max_batch_bytes = match raw.get("max_batch_bytes") {
        None => None,
        Some(_) => NonZeroUsize::new(raw.int("max_batch_bytes", 1, 256 << 20)?),
    };
    let rate = match raw.get("max_batches_per_second") {
        None => {
            if let Some(burst) = raw.get("batch_burst") {
                return Err(SettingsError::invalid(
                    "batch_burst",
                    burst,
                    "to be set only with REDIS_MAX_BATCHES_PER_SECOND",
                ));
            }
            None
        }
        Some(value) => {
            let expected =
                "empty (no limit) or a number of batches per second from 0.000001 to 1000000, such as 0.5";
            let per_second: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r >= 1e-6 && *r <= 1_000_000.0)
                .ok_or_else(|| SettingsError::invalid("max_batches_per_second", value, expected))?;
            let burst = match raw.get("batch_burst") {
                Some(_) => raw.int("batch_burst", 1, 1_000_000)?,
                // The rate rounded up, at least 1. Bounded by the check above.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                None => (per_second.ceil() as usize).max(1),
            };
            Some(RateLimit {
                per_second,
                burst: NonZeroUsize::new(burst).unwrap_or(NonZeroUsize::MIN),
            })
        }
    };
    let max_processing_len = match raw.get("max_processing_queue_length") {
        None => None,
        Some(_) => NonZeroUsize::new(raw.int("max_processing_queue_length", 1, 1 << 40)?),
    };
    Ok(FlowSettings {
        max_batch_bytes,
        rate,
        max_processing_len,
    })
}
