//! What makes a message good: JSON that every mainstream parser accepts.
//!
//! The profile is I-JSON (RFC 7493) less its rule on duplicate names: valid UTF-8, no
//! unpaired surrogate escapes (`"\ud83d"`), every number finite as an IEEE 754 double
//! (`1e999999999` is not), and nesting at most `max_depth` levels. Duplicate member names
//! stay allowed, since every mainstream parser accepts them (the last one wins). A message
//! outside the profile would make orjson, serde_json, jq or Python's `json` refuse the whole
//! envelope, and with it every good message inside.
//!
//! Two implementations decide the same thing:
//!
//! - `scan`: a single pass over the bytes that only answers yes or no, as fast as
//!   serde_json's plain syntax check (`from_slice::<&RawValue>`) or faster. It decides every
//!   message that passes.
//! - `reference`: serde_json's own parser with a visitor that keeps nothing. It decides
//!   every message the scan refuses, and names the reason; it is also what the tests check
//!   the scan against ([`check_message_reference`]).
//!
//! Either way no value tree is built: the message's own bytes go into the envelope.

mod reference;
mod scan;
mod stops;
#[cfg(test)]
mod tests;

/// Deepest nesting a message may have, whatever `REDIS_MAX_JSON_DEPTH` says. The envelope
/// adds three levels (envelope, payload, batch), and serde_json by default refuses a
/// document whose nesting reaches 128, so 124 + 3 = 127 is the most it parses.
pub const MAX_DEPTH_LIMIT: usize = 124;

/// Why a message was refused. Its `Display` is the dead-letter `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Larger than `max_message_bytes`.
    #[error("message is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Not valid UTF-8.
    #[error("message is not valid UTF-8")]
    NotUtf8,
    /// Not valid JSON; carries serde_json's description (position included).
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but a string holds an escaped UTF-16 surrogate without its partner.
    #[error("message is not interoperable JSON: unpaired surrogate escape ({0})")]
    UnpairedSurrogate(String),
    /// Valid JSON, but a number is beyond the range of a double.
    #[error("message is not interoperable JSON: number out of double range ({0})")]
    NumberOutOfRange(String),
    /// Valid JSON, but nested deeper than allowed.
    #[error("message is not interoperable JSON: nested deeper than {limit} levels")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// A good message too large to wrap: its envelope would pass the largest value the
    /// Redis server accepts (`proto-max-bulk-len`). Decided when planning, not by
    /// [`check_message`].
    #[error("message is {size} bytes: its envelope would pass the server's value limit of {limit} bytes")]
    TooLargeToWrap {
        /// Size of the message.
        size: usize,
        /// The server's limit for one value.
        limit: usize,
    },
}

impl Rejection {
    /// Every [`Rejection::class`], for metrics that start at zero.
    pub const CLASSES: [&'static str; 7] = [
        "too_large",
        "too_large_to_wrap",
        "not_utf8",
        "not_json",
        "unpaired_surrogate",
        "number_out_of_range",
        "too_deep",
    ];

    /// A short, stable name for the rule the message broke: the `reason` label of the
    /// dead-letter metric.
    pub fn class(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::NotUtf8 => "not_utf8",
            Rejection::NotJson(_) => "not_json",
            Rejection::UnpairedSurrogate(_) => "unpaired_surrogate",
            Rejection::NumberOutOfRange(_) => "number_out_of_range",
            Rejection::TooDeep { .. } => "too_deep",
            Rejection::TooLargeToWrap { .. } => "too_large_to_wrap",
        }
    }
}

/// Limits a message must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Largest message, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects; a scalar has depth 0, `[1]` depth 1.
    pub max_depth: usize,
}

impl Default for Profile {
    /// The documented defaults: `REDIS_MAX_MESSAGE_BYTES=1048576`, `REDIS_MAX_JSON_DEPTH=64`.
    fn default() -> Self {
        Profile {
            max_bytes: 1 << 20,
            max_depth: 64,
        }
    }
}

/// Check one message. On success returns the JSON value's bytes (surrounding whitespace
/// removed), which is what goes into the envelope.
pub fn check_message(bytes: &[u8], profile: Profile) -> Result<&[u8], Rejection> {
    check_size(bytes, profile)?;
    match scan::scan(bytes, profile.max_depth) {
        Some((start, end)) => Ok(&bytes[start..end]),
        // Refused: the reference decides again and names the reason.
        None => reference::check(bytes, profile),
    }
}

/// [`check_message`] by serde_json's parser alone: the same answers, about twice the time.
/// For tests and benchmarks.
pub fn check_message_reference(bytes: &[u8], profile: Profile) -> Result<&[u8], Rejection> {
    check_size(bytes, profile)?;
    reference::check(bytes, profile)
}

fn check_size(bytes: &[u8], profile: Profile) -> Result<(), Rejection> {
    if bytes.len() > profile.max_bytes {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            limit: profile.max_bytes,
        });
    }
    Ok(())
}

/// `bytes` without JSON whitespace around the value.
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}
