//! Which dead letters `dlq replay` takes: by source queue, reason text and age.
//!
//! Ages are measured from the replay's cutoff (Redis `TIME` when the run starts), not from
//! the local clock, so every run and every age filter use the one clock the runs share.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::record::View;
use super::DlqError;

/// The filters of one `dlq replay`; the default takes everything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayFilter {
    /// Only records whose `source_queue` is exactly this.
    pub source: Option<String>,
    /// Only records whose `reason` contains this text (case-sensitive).
    pub reason: Option<String>,
    /// Only records whose `failed_at` is at least this long before the cutoff.
    pub older_than: Option<Duration>,
    /// Only records whose `failed_at` is less than this long before the cutoff.
    pub newer_than: Option<Duration>,
}

impl ReplayFilter {
    /// Refuse filters that can match nothing (`--older-than 2h --newer-than 1h`), so a typo
    /// does not look like an empty dead-letter list.
    pub fn validate(&self) -> Result<(), DlqError> {
        if let (Some(older), Some(newer)) = (self.older_than, self.newer_than) {
            if older >= newer {
                return Err(DlqError::Usage(format!(
                    "--older-than {}s and --newer-than {}s match nothing: the first must be \
                     shorter than the second",
                    older.as_secs(),
                    newer.as_secs()
                )));
            }
        }
        Ok(())
    }

    /// Whether any filter is set.
    pub(super) fn is_active(&self) -> bool {
        self != &ReplayFilter::default()
    }

    /// Whether the record passes every filter. A record whose `failed_at` cannot be read has
    /// no age, so it never passes an age filter.
    pub(super) fn matches(&self, view: &View, cutoff: DateTime<Utc>) -> bool {
        if let Some(source) = &self.source {
            if view.source_queue.as_deref() != Some(source.as_str()) {
                return false;
            }
        }
        if let Some(text) = &self.reason {
            if !view
                .reason
                .as_deref()
                .is_some_and(|r| r.contains(text.as_str()))
            {
                return false;
            }
        }
        if self.older_than.is_none() && self.newer_than.is_none() {
            return true;
        }
        let Some(age) = view.failed_at().map(|t| cutoff - t) else {
            return false;
        };
        let older = self.older_than.is_none_or(|d| age >= delta(d));
        let newer = self.newer_than.is_none_or(|d| age < delta(d));
        older && newer
    }
}

/// A std duration as a chrono one; ages are capped well inside chrono's range.
fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(source: &str, reason: &str, failed_at: &str) -> View {
        View {
            reason: Some(reason.into()),
            raw: Some("x".into()),
            raw_b64: None,
            raw_key: None,
            source_queue: Some(source.into()),
            failed_at: Some(failed_at.into()),
        }
    }

    #[test]
    fn filters_combine() {
        let cutoff = DateTime::parse_from_rfc3339("2026-11-30T12:00:00.000000+00:00")
            .unwrap()
            .with_timezone(&Utc);
        let two_hours_ago = view(
            "a",
            "message is not valid JSON: x",
            "2026-11-30T10:00:00+00:00",
        );
        let just_now = view(
            "b",
            "message is not valid UTF-8",
            "2026-11-30T11:59:30+00:00",
        );
        let undated = view("a", "message is not valid UTF-8", "soon");
        let all = ReplayFilter::default();
        assert!(!all.is_active());
        assert!([&two_hours_ago, &just_now, &undated]
            .iter()
            .all(|v| all.matches(v, cutoff)));

        let f = ReplayFilter {
            source: Some("a".into()),
            ..Default::default()
        };
        assert!(f.is_active());
        assert!(f.matches(&two_hours_ago, cutoff) && f.matches(&undated, cutoff));
        assert!(!f.matches(&just_now, cutoff));

        let f = ReplayFilter {
            reason: Some("UTF-8".into()),
            ..Default::default()
        };
        assert!(!f.matches(&two_hours_ago, cutoff) && f.matches(&just_now, cutoff));

        let hour = Duration::from_secs(3600);
        let f = ReplayFilter {
            older_than: Some(hour),
            ..Default::default()
        };
        assert!(f.matches(&two_hours_ago, cutoff));
        assert!(!f.matches(&just_now, cutoff) && !f.matches(&undated, cutoff));
        let f = ReplayFilter {
            newer_than: Some(hour),
            ..Default::default()
        };
        assert!(!f.matches(&two_hours_ago, cutoff) && f.matches(&just_now, cutoff));
        assert!(!f.matches(&undated, cutoff), "no age, no match");

        let f = ReplayFilter {
            older_than: Some(Duration::from_secs(7200)),
            newer_than: Some(Duration::from_secs(7201)),
            ..Default::default()
        };
        assert!(f.validate().is_ok());
        assert!(
            f.matches(&two_hours_ago, cutoff),
            "exactly 2h old is older than 2h"
        );
    }

    #[test]
    fn empty_age_windows_are_refused() {
        let f = ReplayFilter {
            older_than: Some(Duration::from_secs(7200)),
            newer_than: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        assert!(matches!(f.validate(), Err(DlqError::Usage(_))));
    }
}
