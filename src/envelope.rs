//! The `batch_processing` envelope: the record the transformer reads.
//!
//! Messages are never parsed into a value tree. [`write_envelope`] splices each message's
//! original bytes (checked by [`crate::message::check_message`]) into the envelope, so key
//! order, number spelling and escapes stay exactly as pushed.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// `event_type` of every envelope.
pub const EVENT_TYPE: &str = "batch_processing";
/// `service` of every envelope.
pub const SERVICE: &str = "batch_processor";

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

/// The `event_id` of an envelope this daemon wrote: it starts `{"event_id":"` followed by the
/// 36-character id and a quote, so the id is found without parsing (the ledger's functions
/// rely on the same fixed place). `None` for anything else.
pub fn event_id_of(envelope: &[u8]) -> Option<&str> {
    const PREFIX: &[u8] = b"{\"event_id\":\"";
    let rest = envelope.strip_prefix(PREFIX)?;
    if rest.get(36) != Some(&b'"') {
        return None;
    }
    std::str::from_utf8(rest.get(..36)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(event_id_of(&bytes), Some(id.to_string().as_str()));
        assert_eq!(event_id_of(br#"{"event_id":"short"}"#), None);
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
