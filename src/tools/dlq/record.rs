//! A lenient view of a stored dead-letter record, shared by `list` and `replay`.
//!
//! The daemon always writes every field, but records also come from older versions, other
//! tools and hand repairs. Reading every field as optional lets `list` count such records and
//! lets `replay` decide for itself which fields it really needs (the original bytes and the
//! source queue; a missing `failed_at` does not stop a replay, see [`super::replay`]).

use chrono::{DateTime, Utc};

use crate::dead_letter::{DeadLetter, DeadLetterError};

/// Every field of a record, each optional.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct View {
    /// Why the message was refused.
    #[serde(default)]
    pub(super) reason: Option<String>,
    /// The original text, when it was UTF-8.
    #[serde(default)]
    pub(super) raw: Option<String>,
    /// Base64 of the original bytes otherwise.
    #[serde(default)]
    pub(super) raw_b64: Option<String>,
    /// A list holding the original bytes, for a record written by reference.
    #[serde(default)]
    pub(super) raw_key: Option<String>,
    /// The list the message came from.
    #[serde(default)]
    pub(super) source_queue: Option<String>,
    /// When the daemon refused it (RFC 3339, the daemon host's clock).
    #[serde(default)]
    pub(super) failed_at: Option<String>,
}

impl View {
    /// Parse a stored record; fails only when it is not a JSON object of strings.
    pub(super) fn parse(record: &[u8]) -> Result<Self, DeadLetterError> {
        Ok(serde_json::from_slice(record)?)
    }

    /// `failed_at` as an instant; `None` when missing or not RFC 3339.
    pub(super) fn failed_at(&self) -> Option<DateTime<Utc>> {
        let text = self.failed_at.as_deref()?;
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The original message bytes (the same rules as [`DeadLetter::original_bytes`]).
    pub(super) fn original_bytes(&self) -> Result<Vec<u8>, DeadLetterError> {
        DeadLetter {
            reason: String::new(),
            raw: self.raw.clone(),
            raw_b64: self.raw_b64.clone(),
            raw_key: self.raw_key.clone(),
            source_queue: String::new(),
            failed_at: String::new(),
        }
        .original_bytes()
    }
}

/// Prefix of the daemon's reasons for a message outside the interoperable JSON profile.
const INTEROPERABLE: &str = "message is not interoperable JSON: ";

/// The class a reason is counted under in `dlq list`: the reason without the parts that
/// differ from message to message (positions, sizes, offending values), so that one bug in a
/// producer shows up as one line, not one line per message.
pub(super) fn reason_class(reason: &str) -> String {
    let reason = reason.trim();
    if reason.is_empty() {
        return "<no reason>".to_string();
    }
    if let Some(rule) = reason.strip_prefix(INTEROPERABLE) {
        // "unpaired surrogate escape (\"\\ud83d\")" and "nested deeper than 64 levels": the
        // rule, without the value in parentheses and with numbers generalised.
        let rule = rule.split(" (").next().unwrap_or(rule);
        return format!("{INTEROPERABLE}{}", generalise_numbers(rule));
    }
    if reason.starts_with("message is ") && reason.contains(" bytes, larger than") {
        return "message is larger than the limit".to_string();
    }
    // "message is not valid JSON: expected value at line 1 column 2" and any other
    // "<what>: <detail>" reason: the part before the detail.
    let head = reason.split(':').next().unwrap_or(reason).trim_end();
    generalise_numbers(head)
}

/// Every word that is a whole number replaced by `N` ("UTF-8" and "v2" stay as they are).
fn generalise_numbers(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
                "N"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_grouped_by_class() {
        for (reason, class) in [
            (
                "message is not valid JSON: expected value at line 1 column 1",
                "message is not valid JSON",
            ),
            ("message is not valid UTF-8", "message is not valid UTF-8"),
            (
                "message is 2000000 bytes, larger than the limit of 1048576 bytes",
                "message is larger than the limit",
            ),
            (
                "message is not interoperable JSON: unpaired surrogate escape (\"\\ud83d\")",
                "message is not interoperable JSON: unpaired surrogate escape",
            ),
            (
                "message is not interoperable JSON: number out of double range (1e999)",
                "message is not interoperable JSON: number out of double range",
            ),
            (
                "message is not interoperable JSON: nested deeper than 64 levels",
                "message is not interoperable JSON: nested deeper than N levels",
            ),
            ("schema v2: field x missing", "schema v2"),
            ("retry 3 of 5 failed", "retry N of N failed"),
            ("", "<no reason>"),
        ] {
            assert_eq!(reason_class(reason), class, "{reason}");
        }
    }

    #[test]
    fn view_reads_partial_records() {
        let v = View::parse(br#"{"raw":"x","source_queue":"q"}"#).unwrap();
        assert_eq!(v.failed_at(), None);
        assert_eq!(v.original_bytes().unwrap(), b"x");
        let v =
            View::parse(br#"{"raw_b64":"/w==","failed_at":"2026-11-30T10:00:00.123456+00:00"}"#)
                .unwrap();
        assert_eq!(v.original_bytes().unwrap(), b"\xff");
        let t = v.failed_at().unwrap();
        assert_eq!(t.timestamp_subsec_micros(), 123_456);
        let v = View::parse(br#"{"failed_at":"yesterday"}"#).unwrap();
        assert_eq!(v.failed_at(), None);
        assert!(v.original_bytes().is_err());
        assert!(View::parse(b"junk").is_err());
        assert!(View::parse(br#"{"raw":1}"#).is_err());
    }
}
