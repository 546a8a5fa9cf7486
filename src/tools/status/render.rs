//! The human-readable `status` table (the `--json` document is [`super::Status`] itself).

use std::fmt::Write as _;

use super::Status;

/// "3.2 s ago" for a millisecond age; "in the future" for clock skew.
fn ago(age_ms: i64) -> String {
    if age_ms < 0 {
        format!(
            "{:.1} s in the future (clock skew)",
            -age_ms as f64 / 1000.0
        )
    } else {
        format!("{:.1} s ago", age_ms as f64 / 1000.0)
    }
}

/// The human-readable table.
pub fn render_text(s: &Status) -> String {
    let mut out = String::new();
    let q = &s.queues;
    let width = [&q.source.name, &q.processing.name, &q.dead_letter.name]
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    // Writing into a String cannot fail.
    let _ = writeln!(out, "redis          {}", s.redis);
    let _ = writeln!(out, "{:<14} {:<width$}  {:>10}", "queue", "name", "length");
    for (label, queue) in [
        ("source", &q.source),
        ("processing", &q.processing),
        ("dead letters", &q.dead_letter),
    ] {
        let _ = writeln!(
            out,
            "{label:<14} {:<width$}  {:>10}",
            queue.name, queue.length
        );
    }
    let _ = writeln!(
        out,
        "totals         messages {}  batches {}  dead letters {}",
        s.totals.messages, s.totals.batches, s.totals.dead_letters
    );
    let last = match (&s.last_envelope_at, s.last_envelope_age_ms) {
        (Some(at), Some(age)) => format!("{at} ({})", ago(age)),
        _ => "never".to_string(),
    };
    let _ = writeln!(out, "last envelope  {last}");
    let lease = match &s.lease {
        Some(l) if l.ttl_ms >= 0 => format!("held by {} (expires in {} ms)", l.holder, l.ttl_ms),
        Some(l) => format!("held by {} (no expiry)", l.holder),
        None => "free (no replica holds it)".to_string(),
    };
    let _ = writeln!(out, "lease          {lease}");
    let _ = writeln!(out, "rate           {:.1} messages/s", s.rate_per_s);
    let _ = write!(out, "replicas       {} alive", s.replicas.len());
    for r in &s.replicas {
        let pid = r.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
        let heartbeat = r
            .heartbeat_age_ms
            .map_or_else(|| "unknown".to_string(), ago);
        let _ = write!(
            out,
            "\n  {}{}  host {} pid {}  started {}  heartbeat {}  messages {} batches {} dead letters {}  rate {:.1}/s",
            r.consumer,
            match (r.holds_lease, r.paused) {
                (true, true) => " [lease, paused: processing list full]",
                (true, false) => " [lease]",
                (false, _) => "",
            },
            r.host,
            pid,
            r.started_at,
            heartbeat,
            r.messages,
            r.batches,
            r.dead_letters,
            r.rate_per_s
        );
    }
    if let Some(ledger) = &s.ledger {
        let _ = write!(out, "\n{}", crate::tools::batch::status_section(ledger));
    }
    out
}
