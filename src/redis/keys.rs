//! Names of the daemon's own Redis keys, derived in one place.
//!
//! The lease that owns a source derives from the source list's name alone, so every
//! deployment that moves the list excludes every other, whatever `REDIS_KEY_PREFIX` each
//! uses (a blue/green rollout runs two). Everything else the daemon stores lives under
//! `key_prefix`, scoped by the source queue so that daemons for different sources can share
//! one prefix.

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

    /// The source's lease: a string `<consumer>/<token>.<seq>` with a TTL. Its holder alone
    /// takes from the source's tail. Named after the source only (not the prefix), and it
    /// carries the source's `{hash tag}` if the name has one.
    pub fn lease(&self) -> String {
        source_lease(&self.source)
    }

    /// The lease key of releases before the source lease existed: `<prefix>:lease:<source>`.
    /// Holders take it too, so that during a rolling upgrade a replica of the earlier release
    /// (which only knows this key) never moves the source beside one of this release.
    pub fn legacy_lease(&self) -> String {
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

/// The lease key that owns the list `source`, whatever the deployment's prefix.
pub fn source_lease(source: &str) -> String {
    format!("batch-processor:source-lease:{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_by_prefix_and_source() {
        let k = Keys::new("bp", "raw");
        assert_eq!(k.lease(), "batch-processor:source-lease:raw");
        assert_eq!(k.legacy_lease(), "bp:lease:raw");
        assert_eq!(Keys::new("other", "raw").lease(), k.lease());
        assert_eq!(k.stats(), "bp:stats:raw");
        assert_eq!(k.replicas(), "bp:replicas:raw");
        assert_eq!(k.replica("host-1"), "bp:replica:raw:host-1");
    }
}
