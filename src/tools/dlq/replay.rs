//! `dlq replay`: put dead letters back on their source queues, oldest first, each exactly
//! once, taking only records that were on the list when this run started.
//!
//! A message that is still bad comes straight back: the daemon reads it again and LPUSHes a
//! new record for it. A run must not chase those, and two runs at once must not together
//! replay more than was there. So each run starts with one `MULTI TIME LLEN EXEC`:
//!
//! - the **cutoff**, Redis `TIME`: the one clock every run shares. A record whose
//!   `failed_at` is at or after the cutoff was dead-lettered after the run started; it is left
//!   in place (counted as "after the start") and never replayed by this run.
//! - the **budget**, `LLEN`: the run deals with at most that many records (replayed, left in
//!   place, or seen taken by another run), so it ends even when clocks disagree. A record
//!   whose `failed_at` is missing or unreadable counts as present at the start, and is
//!   replayable, only while the budget lasts.
//!
//! The cutoff is checked in the caller, on the exact bytes read; `replay.lua` moves a record
//! only if those same bytes are still at that index, so the check holds at the moment of the
//! move just as if the script had made it. Daemons write `failed_at` from their own clock
//! when they plan a commit, so the cutoff assumes the daemon hosts' clocks agree with Redis's:
//! a daemon running behind stamps records that look older than they are.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::walk::{Walk, Walked};
use super::{dead_letters, DlqError, ReplayFilter, Session};
use crate::envelope::format_timestamp;
use crate::settings::Settings;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records put back on their source queue.
    pub replayed: u64,
    /// Records that could not be decoded and were left in place.
    pub skipped: u64,
    /// Records the filters left out (left in place).
    pub filtered: u64,
    /// Records dead-lettered at or after the cutoff, left in place.
    pub after_start: u64,
    /// Whether filters were given (the filtered count is then always shown).
    pub filtering: bool,
    /// Records put back, by the queue they went to.
    pub queues: BTreeMap<String, u64>,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replayed {}", dead_letters(self.replayed))?;
        if !self.queues.is_empty() {
            let per: Vec<String> = self
                .queues
                .iter()
                .map(|(q, n)| format!("{q}: {n}"))
                .collect();
            write!(f, " ({})", per.join(", "))?;
        }
        if self.filtering || self.filtered > 0 {
            write!(
                f,
                "; skipped {} not matching the filters, left in place",
                self.filtered
            )?;
        }
        if self.after_start > 0 {
            write!(
                f,
                "; left {} dead-lettered after the replay started in place",
                self.after_start
            )?;
        }
        if self.skipped > 0 {
            write!(
                f,
                "; skipped {} undecodable records, left in place (see dlq list)",
                self.skipped
            )?;
        }
        Ok(())
    }
}

/// Put up to `limit` dead letters (all when `None`) that pass `filter` back on their source
/// queues, oldest first, taking only records present when the run starts (see the header).
pub async fn replay(
    s: &Settings,
    limit: Option<usize>,
    filter: &ReplayFilter,
) -> Result<ReplayReport, DlqError> {
    filter.validate()?;
    let mut session = Session::open(s).await?;
    let (cutoff, present) = start(&mut session).await?;
    tracing::info!(
        list = %session.list,
        cutoff = %format_timestamp(cutoff),
        present,
        "replay started"
    );
    let limit = limit.map_or(u64::MAX, |n| u64::try_from(n).unwrap_or(u64::MAX));
    let mut report = ReplayReport {
        filtering: filter.is_active(),
        ..ReplayReport::default()
    };
    let walked: Walked = Walk::new(&mut session, filter, cutoff)
        .run(present, limit, &mut report)
        .await
        .map_err(|failure| DlqError::Replay {
            replayed: report.replayed,
            failure,
        })?;
    walked.log(&session.list);
    report.skipped = walked.undecodable;
    report.filtered = walked.filtered;
    report.after_start = walked.after_start;
    tracing::info!(
        list = %session.list,
        replayed = report.replayed,
        filtered = report.filtered,
        after_start = report.after_start,
        skipped = report.skipped,
        "dead letters replayed"
    );
    Ok(report)
}

/// The run's cutoff (Redis `TIME`) and budget (`LLEN`), read in one transaction so that
/// exactly the records on the list at the cutoff are counted in the budget.
async fn start(session: &mut Session) -> Result<(DateTime<Utc>, u64), DlqError> {
    let ((secs, micros), present): ((i64, u32), u64) = redis::pipe()
        .atomic()
        .cmd("TIME")
        .cmd("LLEN")
        .arg(&session.list)
        .query_async(&mut session.conn)
        .await
        .map_err(session.error("read the time and the length of", "MULTI/EXEC TIME, LLEN"))?;
    // TIME's microseconds are below 1_000_000, so this is always a valid instant.
    let cutoff = DateTime::from_timestamp(secs, micros.saturating_mul(1000)).unwrap_or_default();
    Ok((cutoff, present))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_summary_names_queues_and_skips() {
        let mut r = ReplayReport::default();
        assert_eq!(r.to_string(), "replayed 0 dead letters");
        r.replayed = 3;
        r.queues.insert("a".into(), 2);
        r.queues.insert("b".into(), 1);
        r.skipped = 1;
        assert_eq!(
            r.to_string(),
            "replayed 3 dead letters (a: 2, b: 1); skipped 1 undecodable records, left in place (see dlq list)"
        );
        r.filtering = true;
        r.after_start = 2;
        assert_eq!(
            r.to_string(),
            "replayed 3 dead letters (a: 2, b: 1); skipped 0 not matching the filters, left in \
             place; left 2 dead-lettered after the replay started in place; skipped 1 \
             undecodable records, left in place (see dlq list)"
        );
    }
}
