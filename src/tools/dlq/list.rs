//! `dlq list`: the oldest dead letters, as one line each or as JSON, and how many there are
//! per reason class and per source queue.
//!
//! The list can be huge (a producer bug dead-letters everything), so it is read in pages of
//! [`PAGE`] records from the tail (`LRANGE`), keeping only the counts and the records to
//! show; the scan stops after `--scan-limit` records (default [`DEFAULT_SCAN_LIMIT`]) and
//! says so. Pages are read one after the other while daemons and replays change the list:
//! daemons push at the head, which does not move the tail pages, and a replay removes
//! records, which shifts later records towards the tail. So a record is never counted twice,
//! but one may be missed while a replay runs; the counts are exact on a list nobody removes
//! from.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::value::RawValue;

use super::record::{reason_class, View};
use super::{dead_letters, DlqError, Session};
use crate::dead_letter::DeadLetter;
use crate::settings::Settings;

/// Longest preview of a record's message in `dlq list`, in characters.
const PREVIEW_CHARS: usize = 80;

/// Records per `LRANGE` page.
const PAGE: usize = 500;

/// Records counted by default: enough for any list an operator reads through, small enough
/// that the scan takes a few seconds and bounded memory.
pub const DEFAULT_SCAN_LIMIT: usize = 100_000;

/// What `dlq list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOptions {
    /// Records shown, oldest first; every scanned one when `None`.
    pub limit: Option<usize>,
    /// One JSON document instead of text.
    pub json: bool,
    /// Records counted at most (more when `limit` asks to show more).
    pub scan_limit: usize,
}

/// The counts over the scanned records.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    /// The list's length when the scan started.
    total: u64,
    /// Records read and counted.
    scanned: u64,
    /// Records per reason class (see [`reason_class`]).
    by_reason: BTreeMap<String, u64>,
    /// Records per `source_queue`.
    by_source: BTreeMap<String, u64>,
    /// Records that are not a JSON object of strings, counted in neither map.
    unreadable: u64,
}

impl Summary {
    fn count(&mut self, record: &[u8]) {
        self.scanned += 1;
        match View::parse(record) {
            Ok(view) => {
                let reason = reason_class(view.reason.as_deref().unwrap_or_default());
                *self.by_reason.entry(reason).or_default() += 1;
                let source = view.source_queue.unwrap_or_default();
                *self.by_source.entry(source).or_default() += 1;
            }
            Err(_) => self.unreadable += 1,
        }
    }
}

/// Render up to `limit` dead letters, oldest first, with the counts: a header line, one line
/// per record and the counts as text, or one JSON document with `json`.
pub async fn list(s: &Settings, opts: ListOptions) -> Result<String, DlqError> {
    let mut session = Session::open(s).await?;
    let show = opts.limit.unwrap_or(usize::MAX);
    let bound = opts.scan_limit.max(opts.limit.unwrap_or(0));
    let mut summary = Summary::default();
    // The records shown: kept verbatim for JSON, as preview lines for text.
    let mut shown = 0usize;
    let mut verbatim: Vec<Vec<u8>> = Vec::new();
    let mut lines = String::new();
    let mut offset = 0usize;
    loop {
        let want = PAGE.min(bound - offset);
        let page = read_page(&mut session, offset, want, offset == 0).await?;
        if let Some(total) = page.total {
            summary.total = total;
        }
        let end = usize::try_from(summary.total)
            .unwrap_or(usize::MAX)
            .min(bound);
        for record in page.records.into_iter().take(end.saturating_sub(offset)) {
            summary.count(&record);
            if shown < show {
                shown += 1;
                if opts.json {
                    verbatim.push(record);
                } else {
                    // Writing into a String cannot fail.
                    let _ = write!(lines, "\n{}", record_line(&record));
                }
            }
        }
        offset += want;
        if want == 0 || offset >= end {
            break;
        }
    }
    if opts.json {
        Ok(render_json(&summary, &verbatim))
    } else {
        Ok(render_text(&session.list, &summary, shown, &lines))
    }
}

/// One page of records, oldest first, and the list's length with the first page.
struct Page {
    total: Option<u64>,
    records: Vec<Vec<u8>>,
}

/// The `count` records after the oldest `offset` (none when `count` is 0: `LRANGE 0 -1`
/// would be the whole list); the first page is read in one transaction with `LLEN`, so the
/// total and the first page agree.
async fn read_page(
    session: &mut Session,
    offset: usize,
    count: usize,
    first: bool,
) -> Result<Page, DlqError> {
    let from_tail = |n: usize| -i64::try_from(n).unwrap_or(i64::MAX);
    let mut pipe = redis::pipe();
    pipe.atomic();
    if first {
        pipe.cmd("LLEN").arg(&session.list);
    }
    if count == 0 {
        if !first {
            return Ok(Page {
                total: None,
                records: Vec::new(),
            });
        }
        let (total,): (u64,) = pipe
            .query_async(&mut session.conn)
            .await
            .map_err(session.error("read", "MULTI/EXEC LLEN"))?;
        return Ok(Page {
            total: Some(total),
            records: Vec::new(),
        });
    }
    pipe.cmd("LRANGE")
        .arg(&session.list)
        .arg(from_tail(offset + count))
        .arg(from_tail(offset + 1));
    let (total, mut records) = if first {
        let (total, records): (u64, Vec<Vec<u8>>) = pipe
            .query_async(&mut session.conn)
            .await
            .map_err(session.error("read", "MULTI/EXEC LLEN, LRANGE"))?;
        (Some(total), records)
    } else {
        let (records,): (Vec<Vec<u8>>,) = pipe
            .query_async(&mut session.conn)
            .await
            .map_err(session.error("read", "MULTI/EXEC LRANGE"))?;
        (None, records)
    };
    records.reverse();
    Ok(Page { total, records })
}

/// `{"total":N,"scanned":M,"by_reason":{..},"by_source":{..},"unreadable":U,"records":[...]}`
/// with each record exactly as stored; a record that is not JSON is shown as
/// `{"invalid_record": <its text>, "error": <why>}`.
fn render_json(summary: &Summary, records: &[Vec<u8>]) -> String {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        #[serde(flatten)]
        summary: &'a Summary,
        records: Vec<Box<RawValue>>,
    }
    let records = records.iter().filter_map(|r| as_json(r)).collect();
    // Strings, numbers, maps of them and already valid raw JSON always serialise.
    serde_json::to_string_pretty(&Doc { summary, records }).unwrap_or_default()
}

/// The record verbatim when it is JSON, else a description of it.
fn as_json(r: &[u8]) -> Option<Box<RawValue>> {
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
}

/// The header, the record lines, then the counts (largest first), so they stay on screen.
fn render_text(list: &str, summary: &Summary, shown: usize, lines: &str) -> String {
    let total = summary.total;
    if total == 0 {
        return format!("{list}: no dead letters");
    }
    let mut out = if (shown as u64) < total {
        format!(
            "{list}: {}, showing the oldest {shown}",
            dead_letters(total)
        )
    } else {
        format!("{list}: {}", dead_letters(total))
    };
    out.push_str(lines);
    let over = if summary.scanned < total {
        format!(
            " (the oldest {} of {total}; see --scan-limit)",
            summary.scanned
        )
    } else {
        String::new()
    };
    // Writing into a String cannot fail.
    let _ = write!(out, "\nby reason{over}:");
    counts(&mut out, &summary.by_reason);
    let _ = write!(out, "\nby source{over}:");
    counts(&mut out, &summary.by_source);
    if summary.unreadable > 0 {
        let _ = write!(out, "\nunreadable records: {}", summary.unreadable);
    }
    out
}

/// `  <count>  <name>` lines, largest count first, then by name.
fn counts(out: &mut String, by: &BTreeMap<String, u64>) {
    let mut rows: Vec<(&String, &u64)> = by.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for (name, n) in rows {
        let name = if name.is_empty() { "<none>" } else { name };
        let _ = write!(out, "\n{n:>8}  {}", one_line(name));
    }
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
                (None, None) => match &rec.raw_key {
                    Some(key) => format!("<kept on the list {key}>"),
                    None => "<no raw>".to_string(),
                },
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
