//! The human-readable `status` table (the `--json` document is [`super::Status`] itself).

use std::fmt::Write as _;

use super::{LeaseHolder, Status};

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

/// "held by X (expires in N ms)", or "free".
fn lease_text(lease: Option<&LeaseHolder>) -> String {
    match lease {
        Some(l) if l.ttl_ms >= 0 => format!("held by {} (expires in {} ms)", l.holder, l.ttl_ms),
        Some(l) => format!("held by {} (no expiry)", l.holder),
        None => "free (no replica holds it)".to_string(),
    }
}

/// The human-readable table.
pub fn render_text(s: &Status) -> String {
    let mut out = String::new();
    let q = &s.queues;
    let names = q.sources.iter().map(|l| &l.name);
    let width = names
        .chain([&q.processing.name, &q.dead_letter.name])
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    // Writing into a String cannot fail.
    let _ = writeln!(out, "redis          {}", s.redis);
    let _ = writeln!(out, "{:<14} {:<width$}  {:>10}", "queue", "name", "length");
    let several = q.sources.len() > 1;
    let mut rows: Vec<(String, &str, u64)> = q
        .sources
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let label = if several {
                format!("source {}", i + 1)
            } else {
                "source".to_string()
            };
            (label, l.name.as_str(), l.length)
        })
        .collect();
    rows.push(("processing".into(), &q.processing.name, q.processing.length));
    rows.push((
        "dead letters".into(),
        &q.dead_letter.name,
        q.dead_letter.length,
    ));
    for (label, name, length) in rows {
        let _ = writeln!(out, "{label:<14} {name:<width$}  {length:>10}");
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
    let _ = writeln!(out, "lease          {}", lease_text(s.lease.as_ref()));
    // With several sources, each has a lease; the line above is the first's. The others are
    // shown where they differ (another deployment holds one, or it lapsed).
    for (i, l) in q.sources.iter().enumerate().skip(1) {
        let other = l.lease.as_ref().map(|h| &h.holder) != s.lease.as_ref().map(|h| &h.holder);
        if other {
            let lease = lease_text(l.lease.as_ref());
            let _ = writeln!(out, "  source {} {} lease {lease}", i + 1, l.name);
        }
    }
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
