//! The dead-letter record: a message refused by [`crate::message::check_message`], kept with
//! its exact bytes (`raw` when UTF-8, `raw_b64` otherwise), a reason, the list it came from and
//! when it was refused. `dlq replay` turns a record back into the original bytes.
//!
//! A record that would be larger than Redis accepts for one value (`proto-max-bulk-len`;
//! JSON escaping grows control bytes six-fold) is written by reference instead: the message
//! is moved, byte for byte and without passing through the daemon, onto a list of its own
//! named in `raw_key`, and the record carries that name in place of `raw`/`raw_b64`.

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
    /// A list holding the original bytes as its one element, when the record would be too
    /// large to hold them itself.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw_key: Option<String>,
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
    /// The bytes are on the list named in `raw_key`, not in the record.
    #[error("dead-letter record keeps its message on the list {0}")]
    ByReference(String),
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
            raw_key: None,
            source_queue: source_queue.to_owned(),
            failed_at: failed_at.to_owned(),
        }
    }

    /// A record whose message is the one element of the list `raw_key`.
    pub fn by_reference(
        raw_key: &str,
        reason: &Rejection,
        source_queue: &str,
        failed_at: &str,
    ) -> Self {
        DeadLetter {
            reason: reason.to_string(),
            raw: None,
            raw_b64: None,
            raw_key: Some(raw_key.to_owned()),
            source_queue: source_queue.to_owned(),
            failed_at: failed_at.to_owned(),
        }
    }

    /// At least the size [`DeadLetter::new`] would store for `bytes`, without building it:
    /// the escaped text (a control byte takes six bytes, a quote or backslash two) or the
    /// base64, plus the other fields.
    pub fn stored_len(bytes: &[u8], reason: &str, source_queue: &str, failed_at: &str) -> usize {
        let raw = match std::str::from_utf8(bytes) {
            Ok(_) => escaped_len(bytes),
            Err(_) => bytes.len().div_ceil(3) * 4,
        };
        let fields = escaped_len(reason.as_bytes())
            + escaped_len(source_queue.as_bytes())
            + escaped_len(failed_at.as_bytes());
        raw + fields + RECORD_OVERHEAD
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
        match (&self.raw, &self.raw_b64, &self.raw_key) {
            (Some(s), _, _) => Ok(s.as_bytes().to_vec()),
            (None, Some(b), _) => Ok(base64::engine::general_purpose::STANDARD.decode(b)?),
            (None, None, Some(key)) => Err(DeadLetterError::ByReference(key.clone())),
            (None, None, None) => Err(DeadLetterError::MissingRaw),
        }
    }
}

/// The record's bytes besides its four values: keys, quotes, braces, commas.
const RECORD_OVERHEAD: usize = 64;

/// Bytes `text` takes as a JSON string's content, escapes included.
fn escaped_len(text: &[u8]) -> usize {
    text.iter()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
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

    #[test]
    fn stored_len_bounds_the_record_from_above() {
        for raw in [
            &b"plain"[..],
            b"\x01\x02 control \" quote \\ backslash \n",
            b"\xff\xfe binary",
            "caf\u{e9} \u{1f600}".as_bytes(),
        ] {
            let why = Rejection::NotJson("x".into());
            let stored = DeadLetter::new(raw, &why, "src", "2026-01-01T00:00:00.000000+00:00");
            let bound = DeadLetter::stored_len(
                raw,
                &why.to_string(),
                "src",
                "2026-01-01T00:00:00.000000+00:00",
            );
            let actual = stored.to_bytes().len();
            assert!(bound >= actual, "{bound} < {actual} for {raw:?}");
            assert!(
                bound <= actual + RECORD_OVERHEAD,
                "{bound} far above {actual}"
            );
        }
        // Control bytes grow six-fold.
        let control = vec![1u8; 1000];
        assert!(DeadLetter::stored_len(&control, "r", "s", "t") >= 6000);
    }

    #[test]
    fn a_record_by_reference_names_its_list_instead_of_the_bytes() {
        let why = Rejection::NotJson("x".into());
        let rec = DeadLetter::by_reference("dl:oversized:1", &why, "src", "t");
        let v: serde_json::Value = serde_json::from_slice(&rec.to_bytes()).unwrap();
        assert_eq!(v["raw_key"], "dl:oversized:1");
        assert!(v.get("raw").is_none() && v.get("raw_b64").is_none());
        let back = DeadLetter::parse(&rec.to_bytes()).unwrap();
        assert!(
            matches!(back.original_bytes(), Err(DeadLetterError::ByReference(k)) if k == "dl:oversized:1")
        );
    }

    /// The bound holds for the bytes serde_json might escape
    /// differently (U+2028/U+2029, DEL, every control byte, `/`), for every base64 padding
    /// length, and for long reasons and field values full of escapes.
    #[test]
    fn stored_len_bounds_every_record() {
        let mut raws: Vec<Vec<u8>> = vec![
            "\u{2028}\u{2029}\u{7f}/<>&'".as_bytes().to_vec(),
            (0u8..=0x7f).collect(),
            (0u8..=0xff).collect(),
            Vec::new(),
        ];
        for n in 0..7 {
            raws.push(vec![0xff; n]);
        }
        let reasons = [
            Rejection::NotJson("x".repeat(10_000)),
            Rejection::NotJson("\u{1}\"\\\u{2028}".repeat(1000)),
            Rejection::UnpairedSurrogate("\"\\ud83d\"".into()),
            Rejection::TooLargeToWrap {
                size: usize::MAX,
                limit: usize::MAX,
            },
        ];
        for raw in &raws {
            for why in &reasons {
                for (source, failed_at) in [("src", "t"), ("q\"\\\u{1}\u{7f}", "\u{2028}\n")] {
                    let actual = DeadLetter::new(raw, why, source, failed_at)
                        .to_bytes()
                        .len();
                    let bound = DeadLetter::stored_len(raw, &why.to_string(), source, failed_at);
                    assert!(bound >= actual, "{bound} < {actual} for {raw:?} / {why}");
                }
            }
        }
    }
}
