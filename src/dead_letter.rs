//! The dead-letter record: a message refused by [`crate::message::check_message`], kept with
//! its exact bytes (`raw` when UTF-8, `raw_b64` otherwise), a reason, the list it came from and
//! when it was refused. `dlq replay` turns a record back into the original bytes.

use base64::Engine as _;
use serde::Serialize;

use crate::message::Rejection;

/// One dead-letter record, as stored in the dead-letter list.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why the message was refused.
    pub reason: String,
    /// The original text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw: Option<String>,
    /// Base64 of the original bytes, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw_b64: Option<String>,
    /// The list the message was taken from.
    pub source_queue: String,
    /// When it was refused (RFC 3339).
    pub failed_at: String,
}

/// Why a stored dead-letter record cannot be turned back into the original bytes.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The record is not the JSON object this daemon writes.
    #[error("dead-letter record is not valid: {0}")]
    Malformed(#[from] serde_json::Error),
    /// `raw_b64` is not valid base64.
    #[error("dead-letter record has invalid raw_b64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Neither `raw` nor `raw_b64` is present.
    #[error("dead-letter record has neither raw nor raw_b64")]
    MissingRaw,
}

impl DeadLetter {
    /// A record for `bytes`, refused for `reason`.
    pub fn new(bytes: &[u8], reason: &Rejection, source_queue: &str, failed_at: &str) -> Self {
        let (raw, raw_b64) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        DeadLetter {
            reason: reason.to_string(),
            raw,
            raw_b64,
            source_queue: source_queue.to_owned(),
            failed_at: failed_at.to_owned(),
        }
    }

    /// The record as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse a stored record.
    pub fn parse(bytes: &[u8]) -> Result<Self, DeadLetterError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The original message bytes.
    pub fn original_bytes(&self) -> Result<Vec<u8>, DeadLetterError> {
        match (&self.raw, &self.raw_b64) {
            (Some(s), _) => Ok(s.as_bytes().to_vec()),
            (None, Some(b)) => Ok(base64::engine::general_purpose::STANDARD.decode(b)?),
            (None, None) => Err(DeadLetterError::MissingRaw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{check_message, Profile};

    #[test]
    fn dead_letter_round_trips_exact_bytes() {
        for raw in [&b"not json"[..], b"\xff\x00binary", "{\"é\":".as_bytes()] {
            let reason = check_message(
                raw,
                Profile {
                    max_bytes: 100,
                    ..Profile::default()
                },
            )
            .unwrap_err();
            let rec = DeadLetter::new(raw, &reason, "src", "2026-01-01T00:00:00.000000+00:00");
            let stored = rec.to_bytes();
            let back = DeadLetter::parse(&stored).unwrap();
            assert_eq!(back.original_bytes().unwrap(), raw);
            assert_eq!(back.source_queue, "src");
            let v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
            assert_eq!(v.get("raw").is_some(), std::str::from_utf8(raw).is_ok());
            assert_eq!(
                v.get("raw_b64").is_some(),
                std::str::from_utf8(raw).is_err()
            );
        }
    }
}
