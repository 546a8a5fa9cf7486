//! Text rendering of ledger entries and of the ledger's status section.

use std::fmt::Write as _;

use super::view::LedgerStatus;
use crate::ledger::Entry;

/// An RFC 3339 time for a ms timestamp.
fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".to_owned(), crate::envelope::format_timestamp)
}

/// Every field of one entry, one per line.
pub(super) fn entry_detail(e: &Entry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(out, "batch        {}", e.event_id);
    let _ = writeln!(out, "status       {}", e.status);
    let _ = writeln!(
        out,
        "progress     {} completed, {} failed of {} ({}%)",
        e.completed,
        e.failed,
        e.total,
        e.percent()
    );
    let _ = writeln!(out, "deliveries   {}", e.deliveries);
    if let Some(delivery) = e.delivery {
        let _ = writeln!(out, "delivery     {delivery}");
    }
    let _ = writeln!(out, "source       {}", e.source);
    let _ = writeln!(out, "created_at   {}", time(e.created_at));
    if let Some(worker) = &e.worker {
        let _ = writeln!(out, "worker       {worker}");
    }
    if e.claimed_at.is_some() {
        let _ = writeln!(out, "claimed_at   {}", time(e.claimed_at));
    }
    if e.finished_at.is_some() {
        let _ = writeln!(out, "finished_at  {}", time(e.finished_at));
    }
    out.trim_end().to_owned()
}

/// One line for an entry.
pub(super) fn entry_line(e: &Entry) -> String {
    let mut line = format!(
        "{}  {:<23}  {}/{} ({}%)  failed {}  deliveries {}",
        e.event_id,
        e.status.as_str(),
        e.completed + e.failed,
        e.total,
        e.percent(),
        e.failed,
        e.deliveries
    );
    if let Some(worker) = &e.worker {
        let _ = write!(line, "  worker {worker}");
    }
    line
}

/// `batch list`'s lines, stalled workers marked.
pub(super) fn entry_lines(batches: &[Entry], status: &LedgerStatus) -> String {
    if batches.is_empty() {
        return "no batches".to_owned();
    }
    let stalled = |e: &Entry| {
        status
            .in_flight
            .iter()
            .any(|w| w.stalled && e.worker.as_deref() == Some(w.worker.as_str()))
    };
    batches
        .iter()
        .map(|e| {
            let mut line = entry_line(e);
            if e.status == crate::ledger::Status::Processing && stalled(e) {
                line.push_str("  [stalled]");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ledger section of `status`.
pub fn status_section(s: &LedgerStatus) -> String {
    let mut out = String::new();
    let total = |k: &str| s.totals.get(k).copied().unwrap_or(0);
    let in_flight: usize = s.in_flight.iter().map(|w| w.batches.len()).sum();
    let _ = writeln!(
        out,
        "ledger         {in_flight} in flight ({} redelivered), oldest {}",
        s.redelivered_in_flight,
        s.oldest_in_flight_age_ms.map_or_else(
            || "-".to_owned(),
            |ms| format!("{:.1} s", ms as f64 / 1000.0)
        )
    );
    let _ = writeln!(
        out,
        "  totals       claimed {}  completed {}  with failures {}  redelivered {}  dead {}  items {} completed {} failed",
        total("claimed"),
        total("completed"),
        total("completed_with_failures"),
        total("redelivered"),
        total("dead"),
        total("items_completed"),
        total("items_failed")
    );
    for w in &s.in_flight {
        let age = w.heartbeat_age_ms.map_or_else(
            || "never".to_owned(),
            |ms| format!("{:.1} s ago", ms as f64 / 1000.0),
        );
        let mark = if w.stalled { "  [stalled]" } else { "" };
        let _ = writeln!(out, "  worker {}  heartbeat {age}{mark}", w.worker);
        for e in &w.batches {
            let _ = writeln!(out, "    {}", entry_line(e));
        }
    }
    if !s.recent.is_empty() {
        let _ = writeln!(out, "  recent");
        for e in &s.recent {
            let _ = writeln!(out, "    {}", entry_line(e));
        }
    }
    out.trim_end().to_owned()
}
