//! Names of the daemon's own Redis keys, derived in one place.
//!
//! Everything the daemon stores besides the three queues lives under `key_prefix`, and is
//! scoped by the source queue so that daemons for different sources can share one prefix.

/// Key names for one source queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    source: String,
}

impl Keys {
    /// Keys under `prefix` for the source list `source`.
    pub fn new(prefix: &str, source: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            source: source.to_owned(),
        }
    }

    /// The lease: a string `<consumer>/<token>.<seq>` with a TTL. Its holder alone takes from the
    /// source's tail.
    pub fn lease(&self) -> String {
        format!("{}:lease:{}", self.prefix, self.source)
    }

    /// Hash of running totals for this source: `messages`, `batches`, `dead_letters`,
    /// `last_envelope_at_ms`. Updated atomically with each commit.
    pub fn stats(&self) -> String {
        format!("{}:stats:{}", self.prefix, self.source)
    }

    /// Sorted set of replica names scored by their last heartbeat (ms since the epoch).
    pub fn replicas(&self) -> String {
        format!("{}:replicas:{}", self.prefix, self.source)
    }

    /// Hash describing one replica, written by its heartbeat; expires when it stops.
    pub fn replica(&self, name: &str) -> String {
        format!("{}:replica:{}:{}", self.prefix, self.source, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_by_prefix_and_source() {
        let k = Keys::new("bp", "raw");
        assert_eq!(k.lease(), "bp:lease:raw");
        assert_eq!(k.stats(), "bp:stats:raw");
        assert_eq!(k.replicas(), "bp:replicas:raw");
        assert_eq!(k.replica("host-1"), "bp:replica:raw:host-1");
    }
}
