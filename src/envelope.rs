//! The wire formats: checking a message, the `batch_processing` envelope and the dead-letter
//! record.
//!
//! Messages are never parsed into a value tree. [`check_message`] validates syntax and UTF-8
//! in one pass with `serde_json::value::RawValue`, and [`write_envelope`] splices the
//! producer's original bytes into the envelope, so key order, number spelling and escapes
//! stay exactly as pushed.

use chrono::{DateTime, Utc};
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

/// Write one envelope for `messages` (already checked, oldest first) to `out`.
///
/// Generic over the writer so the envelope can go straight into a Redis command's buffer.
pub fn write_envelope<'a, W, I>(
    out: &mut W,
    event_id: Uuid,
    timestamp: &str,
    messages: I,
) -> std::io::Result<()>
where
    W: std::io::Write + ?Sized,
    I: IntoIterator<Item = &'a [u8]>,
{
    out.write_all(b"{\"event_id\":\"")?;
    out.write_all(
        event_id
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    )?;
    out.write_all(b"\",\"event_type\":\"")?;
    out.write_all(EVENT_TYPE.as_bytes())?;
    out.write_all(b"\",\"payload\":{\"batch\":[")?;
    let mut size = 0usize;
    for m in messages {
        if size > 0 {
            out.write_all(b",")?;
        }
        out.write_all(m)?;
        size += 1;
    }
    out.write_all(b"],\"size\":")?;
    out.write_all(size.to_string().as_bytes())?;
    out.write_all(b"},\"timestamp\":\"")?;
    out.write_all(timestamp.as_bytes())?;
    out.write_all(b"\",\"service\":\"")?;
    out.write_all(SERVICE.as_bytes())?;
    out.write_all(b"\"}")
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
        write_envelope(&mut bytes, id, &ts, msgs).unwrap();
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
}
