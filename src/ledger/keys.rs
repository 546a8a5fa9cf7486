//! Names of the ledger's keys. The function library derives the same names from the same
//! prefix (see the header of `ledger.lua`); both sides are tested against each other.

/// Key names under one ledger prefix (`REDIS_BATCH_STATE_PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerKeys {
    prefix: String,
}

impl LedgerKeys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        LedgerKeys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix itself, as the functions take it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One batch's hash.
    pub fn batch(&self, event_id: &str) -> String {
        format!("{}{event_id}", self.prefix)
    }

    /// Hash of the ack ids applied to one batch (with their answers); it expires with the
    /// batch's hash.
    pub fn acks(&self, event_id: &str) -> String {
        format!("{}{event_id}:acks", self.prefix)
    }

    /// The list of envelopes `worker` holds.
    pub fn inflight(&self, worker: &str) -> String {
        format!("{}inflight:{worker}", self.prefix)
    }

    /// Sorted set: worker → last claim or heartbeat, ms since the epoch.
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// Sorted set: event_id → claimed_at (ms) of every batch being processed.
    pub fn claims(&self) -> String {
        format!("{}claims", self.prefix)
    }

    /// List of the ids of the last batches that finished, newest first.
    pub fn finished(&self) -> String {
        format!("{}finished", self.prefix)
    }

    /// Hash of protocol totals (claimed, completed, ... items_failed).
    pub fn totals(&self) -> String {
        format!("{}totals", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let k = LedgerKeys::new("batch:state:");
        assert_eq!(k.batch("abc"), "batch:state:abc");
        assert_eq!(k.acks("abc"), "batch:state:abc:acks");
        assert_eq!(k.inflight("w1"), "batch:state:inflight:w1");
        assert_eq!(k.workers(), "batch:state:workers");
        assert_eq!(k.claims(), "batch:state:claims");
        assert_eq!(k.finished(), "batch:state:finished");
        assert_eq!(k.totals(), "batch:state:totals");
    }
}
