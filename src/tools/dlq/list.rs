//! `dlq list`: the oldest dead letters, as one line each or as JSON.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::value::RawValue;

use super::{dead_letters, DlqError, Session};
use crate::dead_letter::DeadLetter;
use crate::settings::Settings;

/// Longest preview of a record's message in `dlq list`, in characters.
const PREVIEW_CHARS: usize = 80;

/// Render up to `limit` dead letters (all when `None`), oldest first: a header line and one
/// line per record as text, or `{"total":N,"records":[...]}` with `json`.
pub async fn list(s: &Settings, limit: Option<usize>, json: bool) -> Result<String, DlqError> {
    let mut session = Session::open(s).await?;
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("LLEN").arg(&session.list);
    // LRANGE -0 -1 would be the whole list, so a limit of 0 reads nothing.
    let start = match limit {
        Some(0) => None,
        Some(n) => Some(-i64::try_from(n).unwrap_or(i64::MAX)),
        None => Some(0),
    };
    if let Some(start) = start {
        pipe.cmd("LRANGE").arg(&session.list).arg(start).arg(-1);
    }
    let (total, mut records): (u64, Vec<Vec<u8>>) = if start.is_some() {
        pipe.query_async(&mut session.conn)
            .await
            .map_err(session.error("read", "MULTI/EXEC LLEN, LRANGE"))?
    } else {
        let (total,): (u64,) = pipe
            .query_async(&mut session.conn)
            .await
            .map_err(session.error("read", "MULTI/EXEC LLEN"))?;
        (total, Vec::new())
    };
    records.reverse();
    if json {
        Ok(render_json(total, &records))
    } else {
        Ok(render_text(&session.list, total, &records))
    }
}

/// `{"total":N,"records":[...]}` with each record exactly as stored; a record that is not
/// JSON is shown as `{"invalid_record": <its text>, "error": <why>}`.
fn render_json(total: u64, records: &[Vec<u8>]) -> String {
    #[derive(serde::Serialize)]
    struct Doc {
        total: u64,
        records: Vec<Box<RawValue>>,
    }
    let records = records
        .iter()
        .filter_map(|r| {
            let verbatim = std::str::from_utf8(r)
                .ok()
                .and_then(|text| RawValue::from_string(text.to_string()).ok());
            verbatim.or_else(|| {
                let error = serde_json::from_slice::<&RawValue>(r)
                    .err()
                    .map_or_else(|| "not UTF-8".to_string(), |e| e.to_string());
                serde_json::value::to_raw_value(&serde_json::json!({
                    "invalid_record": String::from_utf8_lossy(r),
                    "error": error,
                }))
                .ok()
            })
        })
        .collect();
    // Strings, numbers and already valid raw JSON always serialise.
    serde_json::to_string_pretty(&Doc { total, records }).unwrap_or_default()
}

fn render_text(list: &str, total: u64, records: &[Vec<u8>]) -> String {
    let mut out = if total == 0 {
        format!("{list}: no dead letters")
    } else if (records.len() as u64) < total {
        format!(
            "{list}: {}, showing the oldest {}",
            dead_letters(total),
            records.len()
        )
    } else {
        format!("{list}: {}", dead_letters(total))
    };
    for record in records {
        // Writing into a String cannot fail.
        let _ = write!(out, "\n{}", record_line(record));
    }
    out
}

/// `failed_at  source_queue  reason  preview`, one line whatever the record holds.
fn record_line(record: &[u8]) -> String {
    match DeadLetter::parse(record) {
        Ok(rec) => {
            let preview = match (&rec.raw, &rec.raw_b64) {
                (Some(raw), _) => preview(raw),
                (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(bytes) => format!("<{} bytes binary>", bytes.len()),
                    Err(_) => "<invalid raw_b64>".to_string(),
                },
                (None, None) => "<no raw>".to_string(),
            };
            format!(
                "{}  {}  {}  {}",
                rec.failed_at,
                rec.source_queue,
                one_line(&rec.reason),
                preview
            )
        }
        Err(e) => format!(
            "<unreadable record: {}>  {}",
            one_line(&e.to_string()),
            preview(&String::from_utf8_lossy(record))
        ),
    }
}

/// The text quoted and escaped (so it stays on one line), cut to [`PREVIEW_CHARS`].
fn preview(text: &str) -> String {
    let mut cut: String = text.chars().take(PREVIEW_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::dlq::tests::record;

    #[test]
    fn record_lines_preview_text_and_describe_binary() {
        let long = "y".repeat(200);
        let line = record_line(&record(long.as_bytes(), "raw"));
        assert!(
            line.starts_with("2026-01-01T00:00:00.000000+00:00  raw  message is not valid JSON")
        );
        assert!(
            line.ends_with(&format!("\"{}…\"", "y".repeat(80))),
            "{line}"
        );
        let line = record_line(&record(b"\xff\xfe\x00", "raw"));
        assert!(line.ends_with("<3 bytes binary>"), "{line}");
        let line = record_line(&record(b"a\nb", "raw"));
        assert!(
            !line.contains('\n') && line.ends_with(r#""a\nb""#),
            "{line}"
        );
        assert!(record_line(b"garbage").starts_with("<unreadable record:"));
    }
}
