//! One batch's ledger hash, read back for the operator views.

use std::collections::HashMap;

use serde::Serialize;

/// Where a batch is in its life: `queued` → `processing` → `completed` /
/// `completed_with_failures` / `dead`, and back to `queued` when its worker dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// On the processing queue, not claimed.
    Queued,
    /// Claimed by a worker.
    Processing,
    /// Every item completed.
    Completed,
    /// Every item reported, some failed.
    CompletedWithFailures,
    /// Delivered `REDIS_MAX_DELIVERIES` times without completion; dead-lettered.
    Dead,
    /// A value this version does not know.
    #[serde(untagged)]
    Other(String),
}

impl Status {
    /// Parse the hash's `status` field.
    pub fn parse(s: &str) -> Self {
        match s {
            "queued" => Status::Queued,
            "processing" => Status::Processing,
            "completed" => Status::Completed,
            "completed_with_failures" => Status::CompletedWithFailures,
            "dead" => Status::Dead,
            other => Status::Other(other.to_owned()),
        }
    }

    /// The field's text.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::CompletedWithFailures => "completed_with_failures",
            Status::Dead => "dead",
            Status::Other(s) => s,
        }
    }

    /// Whether the batch is done with (completed either way, or dead).
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            Status::Completed | Status::CompletedWithFailures | Status::Dead
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One batch's entry. Times are ms since the epoch, as Redis `TIME` gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The envelope's `event_id`.
    pub event_id: String,
    /// Its state.
    pub status: Status,
    /// Items in the batch.
    pub total: u64,
    /// Items reported completed under the current delivery.
    pub completed: u64,
    /// Items reported failed under the current delivery.
    pub failed: u64,
    /// Times the batch was claimed (since it was last replayed from the dead-letter list);
    /// drives `REDIS_MAX_DELIVERIES`.
    pub deliveries: u64,
    /// The current (or last) claim's delivery number, which an ack must carry.
    pub delivery: Option<u64>,
    /// When the daemon committed it.
    pub created_at: Option<i64>,
    /// The source list(s) its messages came from.
    pub source: String,
    /// The worker holding it, or that held it last.
    pub worker: Option<String>,
    /// When it was last claimed.
    pub claimed_at: Option<i64>,
    /// When it finished.
    pub finished_at: Option<i64>,
    /// Seconds the entry lives after its last change.
    pub ttl: Option<u64>,
}

impl Entry {
    /// Parse `HGETALL`'s fields; `None` for an empty hash (no such batch).
    pub fn from_fields(event_id: &str, fields: &HashMap<String, String>) -> Option<Self> {
        if fields.is_empty() {
            return None;
        }
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        let time = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
        Some(Entry {
            event_id: event_id.to_owned(),
            status: Status::parse(fields.get("status").map_or("", String::as_str)),
            total: num("total").unwrap_or(0),
            completed: num("completed").unwrap_or(0),
            failed: num("failed").unwrap_or(0),
            deliveries: num("deliveries").unwrap_or(0),
            delivery: num("delivery"),
            created_at: time("created_at"),
            source: fields.get("source").cloned().unwrap_or_default(),
            worker: fields.get("worker").cloned(),
            claimed_at: time("claimed_at"),
            finished_at: time("finished_at"),
            ttl: num("ttl"),
        })
    }

    /// Items reported, as a percentage of the total (0 for an empty batch).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let reported = (self.completed + self.failed) as f64;
        (reported * 1000.0 / self.total as f64).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_the_percentage_rounds() {
        let fields: HashMap<String, String> = [
            ("status", "processing"),
            ("total", "3"),
            ("completed", "1"),
            ("failed", "0"),
            ("deliveries", "2"),
            ("delivery", "17"),
            ("created_at", "1700000000000"),
            ("source", "raw"),
            ("worker", "w1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = Entry::from_fields("id", &fields).unwrap();
        assert_eq!(e.status, Status::Processing);
        assert_eq!((e.total, e.completed, e.deliveries), (3, 1, 2));
        assert_eq!(e.delivery, Some(17));
        assert_eq!(e.percent(), 33.3);
        assert_eq!(e.worker.as_deref(), Some("w1"));
        assert!(Entry::from_fields("id", &HashMap::new()).is_none());
        assert_eq!(
            Status::parse("completed_with_failures").as_str(),
            "completed_with_failures"
        );
        assert!(Status::Dead.is_finished() && !Status::Queued.is_finished());
    }
}
