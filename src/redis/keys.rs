//! Names of the daemon's own Redis keys, derived in one place.
//!
//! The lease that owns a source derives from the source list's name alone, so every
//! deployment that moves the list excludes every other, whatever `REDIS_KEY_PREFIX` each
//! uses (a blue/green rollout runs two). Everything else the daemon stores lives under
//! `key_prefix`, scoped by the source queue so that daemons for different sources can share
//! one prefix.

/// Key names for one deployment: its source lists (highest priority first) under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    sources: Vec<String>,
    /// The sources joined with `,`: what the deployment's own keys are scoped by (a single
    /// source is just its name, as in earlier releases).
    label: String,
    /// [`Keys::leases`], named once: every commit sends them.
    leases: Vec<String>,
}

impl Keys {
    /// Keys under `prefix` for the source lists `sources` (highest priority first).
    pub fn new<S: AsRef<str>>(prefix: &str, sources: &[S]) -> Self {
        let sources: Vec<String> = sources.iter().map(|s| s.as_ref().to_owned()).collect();
        let leases = sources
            .iter()
            .flat_map(|s| [source_lease(s), legacy_lease(prefix, s)])
            .collect();
        Keys {
            prefix: prefix.to_owned(),
            label: sources.join(","),
            sources,
            leases,
        }
    }

    /// The sources joined with `,` (the deployment's name in logs and in its own keys).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The lease of the first (highest-priority) source: a string `<consumer>/<token>.<seq>`
    /// with a TTL. Its value is the chain every commit checks and moves one step (see
    /// [`crate::mover::lease`]). Named after the source only (not the prefix), and it carries
    /// the source's `{hash tag}` if the name has one.
    pub fn lease(&self) -> String {
        source_lease(self.sources.first().map_or("", String::as_str))
    }

    /// The legacy lease of the first source (see [`legacy_lease`]).
    pub fn legacy_lease(&self) -> String {
        legacy_lease(
            &self.prefix,
            self.sources.first().map_or("", String::as_str),
        )
    }

    /// Every lease the holder takes, together or not at all: for each source (in priority
    /// order) its source lease, then its legacy lease. The first is [`Keys::lease`].
    pub fn leases(&self) -> &[String] {
        &self.leases
    }

    /// Hash of running totals for this source: `messages`, `batches`, `dead_letters`,
    /// `last_envelope_at_ms`. Updated atomically with each commit.
    pub fn stats(&self) -> String {
        format!("{}:stats:{}", self.prefix, self.label)
    }

    /// Sorted set of replica names scored by their last heartbeat (ms since the epoch).
    pub fn replicas(&self) -> String {
        format!("{}:replicas:{}", self.prefix, self.label)
    }

    /// The fleet of a sharded deployment: a sorted set of its replicas scored by their last
    /// beat (Redis time, ms), which sizes each replica's share of the pipelines.
    pub fn fleet(&self) -> String {
        format!("{}:fleet:{}", self.prefix, self.label)
    }

    /// Hash describing one replica, written by its heartbeat; expires when it stops.
    pub fn replica(&self, name: &str) -> String {
        format!("{}:replica:{}:{}", self.prefix, self.label, name)
    }
}

/// The lease key that owns the list `source`, whatever the deployment's prefix.
pub fn source_lease(source: &str) -> String {
    format!("batch-processor:source-lease:{source}")
}

/// The lease key of releases before the source lease existed: `<prefix>:lease:<source>`.
/// Holders take it too, so that during a rolling upgrade a replica of the earlier release
/// (which only knows this key) never moves the source beside one of this release.
pub fn legacy_lease(prefix: &str, source: &str) -> String {
    format!("{prefix}:lease:{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_by_prefix_and_source() {
        let k = Keys::new("bp", &["raw"]);
        assert_eq!(k.lease(), "batch-processor:source-lease:raw");
        assert_eq!(k.legacy_lease(), "bp:lease:raw");
        assert_eq!(Keys::new("other", &["raw"]).lease(), k.lease());
        assert_eq!(k.stats(), "bp:stats:raw");
        assert_eq!(k.replicas(), "bp:replicas:raw");
        assert_eq!(k.replica("host-1"), "bp:replica:raw:host-1");
    }

    #[test]
    fn several_sources_take_a_lease_each_and_share_the_other_keys() {
        let k = Keys::new("bp", &["urgent", "raw"]);
        assert_eq!(k.lease(), "batch-processor:source-lease:urgent");
        assert_eq!(
            k.leases(),
            [
                "batch-processor:source-lease:urgent",
                "bp:lease:urgent",
                "batch-processor:source-lease:raw",
                "bp:lease:raw"
            ]
        );
        assert_eq!(k.stats(), "bp:stats:urgent,raw");
    }
}
