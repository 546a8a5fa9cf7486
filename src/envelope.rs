//! The wire formats: checking a message, the `batch_processing` envelope and the dead-letter
//! record.
//!
//! Messages are never parsed into a value tree. [`check_message`] validates syntax and UTF-8
//! in one pass with `serde_json::value::RawValue`, and [`write_envelope`] splices the
//! producer's original bytes into the envelope, so key order, number spelling and escapes
//! stay exactly as pushed.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// `event_type` of every envelope.
pub const EVENT_TYPE: &str = "batch_processing";
/// `service` of every envelope.
pub const SERVICE: &str = "batch_processor";

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
}

/// Check one message. On success returns the JSON value's bytes (surrounding whitespace
/// removed), which is what goes into the envelope.
pub fn check_message(bytes: &[u8], max_bytes: usize) -> Result<&[u8], Rejection> {
    if bytes.len() > max_bytes {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    match serde_json::from_slice::<&RawValue>(bytes) {
        Ok(raw) => Ok(raw.get().as_bytes()),
        Err(e) => Err(classify(bytes, e)),
    }
}

fn classify(bytes: &[u8], e: serde_json::Error) -> Rejection {
    if std::str::from_utf8(bytes).is_err() {
        Rejection::NotUtf8
    } else {
        Rejection::NotJson(e.to_string())
    }
}

/// The envelope's timestamp format: RFC 3339, UTC, microseconds, `+00:00`.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Append one envelope for `messages` (already checked, oldest first) to `out`.
pub fn write_envelope<'a, I>(out: &mut Vec<u8>, event_id: Uuid, timestamp: &str, messages: I)
where
    I: IntoIterator<Item = &'a [u8]>,
{
    out.extend_from_slice(b"{\"event_id\":\"");
    out.extend_from_slice(
        event_id
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"event_type\":\"");
    out.extend_from_slice(EVENT_TYPE.as_bytes());
    out.extend_from_slice(b"\",\"payload\":{\"batch\":[");
    let mut size = 0usize;
    for m in messages {
        if size > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
        size += 1;
    }
    out.extend_from_slice(b"],\"size\":");
    out.extend_from_slice(size.to_string().as_bytes());
    out.extend_from_slice(b"},\"timestamp\":\"");
    out.extend_from_slice(timestamp.as_bytes());
    out.extend_from_slice(b"\",\"service\":\"");
    out.extend_from_slice(SERVICE.as_bytes());
    out.extend_from_slice(b"\"}");
}

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

    #[test]
    fn valid_messages_pass_unchanged() {
        for m in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"x":1.50e3,"u":"\u00e9\ud83d\ude00","s":"caf\u00e9 \"q\""}"#,
            "{\"raw\":\"é😀\"}".as_bytes(),
            b"[1,2,3]",
            b"42",
            b"\"str\"",
            b"null",
        ] {
            assert_eq!(check_message(m, 1 << 20).unwrap(), m);
        }
        assert_eq!(check_message(b"  {\"a\":1}\n", 100).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn bad_messages_are_rejected_with_a_reason() {
        assert!(matches!(
            check_message(b"{\"a\":", 100),
            Err(Rejection::NotJson(_))
        ));
        assert!(matches!(
            check_message(b"hello world", 100),
            Err(Rejection::NotJson(_))
        ));
        assert!(matches!(
            check_message(b"{\"a\":1} x", 100),
            Err(Rejection::NotJson(_))
        ));
        assert!(matches!(
            check_message(b"", 100),
            Err(Rejection::NotJson(_))
        ));
        assert_eq!(check_message(b"\xff\xfe{}", 100), Err(Rejection::NotUtf8));
        assert_eq!(check_message(b"\"\xc3\"", 100), Err(Rejection::NotUtf8));
        assert_eq!(
            check_message(b"[1,2,3]", 3),
            Err(Rejection::TooLarge { size: 7, limit: 3 })
        );
        // Validation skips values without recursion, so any depth of valid JSON passes and
        // no input can overflow the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(check_message(deep.as_bytes(), 1 << 20).is_ok());
        let unbalanced = format!("{}{}", "[".repeat(100_000), "]".repeat(99_999));
        assert!(matches!(
            check_message(unbalanced.as_bytes(), 1 << 20),
            Err(Rejection::NotJson(_))
        ));
    }

    #[test]
    fn envelope_has_the_contract_fields_and_spliced_messages() {
        let id = Uuid::new_v4();
        let ts = format_timestamp(Utc::now());
        let msgs: [&[u8]; 2] = [br#"{"b":1,"a":1.0}"#, br#""\u00e9""#];
        let mut bytes = Vec::new();
        write_envelope(&mut bytes, id, &ts, msgs);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(r#"[{"b":1,"a":1.0},"\u00e9"]"#), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["event_id"], id.to_string());
        assert_eq!(
            Uuid::parse_str(v["event_id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(v["event_type"], "batch_processing");
        assert_eq!(v["service"], "batch_processor");
        assert_eq!(v["payload"]["size"], 2);
        assert_eq!(v["timestamp"], ts);
        assert_eq!(v.as_object().unwrap().len(), 5);
        assert_eq!(v["payload"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456789Z").unwrap();
        assert_eq!(
            format_timestamp(t.with_timezone(&Utc)),
            "2026-11-23T10:00:00.123456+00:00"
        );
    }

    #[test]
    fn dead_letter_round_trips_exact_bytes() {
        for raw in [&b"not json"[..], b"\xff\x00binary", "{\"é\":".as_bytes()] {
            let reason = check_message(raw, 100).unwrap_err();
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
