//! `batch-processor status`: the state of one deployment (its source lists, highest priority
//! first, and its destinations), read from Redis alone.
//!
//! Everything shown comes from keys the daemons keep up to date (list lengths, the stats
//! hash, each source's lease, the replica heartbeats), so status works from any machine that reaches
//! Redis, whether or not a daemon runs. The reads go in one MULTI/EXEC so the numbers are one
//! consistent snapshot, then one more round trip fetches the replica hashes. Every call is
//! bounded by the connect and command timeouts, so status never hangs.

mod ledger;
mod pipelines;
mod render;
mod snapshot;

use snapshot::{now_ms, parse_u64, read_replicas, read_snapshot, replica_from_hash, rfc3339_ms};

pub use pipelines::{read_sharded, render_sharded, PipelineStatus, ShardedStatus};
pub use render::render_text;

use serde::Serialize;

use crate::mover::lease::lease_holder;
use crate::redis::connection::{self};
use crate::redis::keys::Keys;
use crate::redis::RedisFailure;
use crate::scale::cluster::router_if_cluster;
use crate::settings::Settings;
use crate::tools::each_pipeline::on_node;

/// Why status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No connection could be opened.
    #[error(transparent)]
    Connect(#[from] connection::ConnectError),
    /// A read failed once connected.
    #[error(
        "cannot read {what} from Redis at {} ({}): {}",
        .failure.addr,
        .failure.kind(),
        .failure.source
    )]
    Read {
        /// What was being read.
        what: &'static str,
        /// The commands sent and what Redis said.
        #[source]
        failure: RedisFailure,
    },
}

/// One list and its length.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListLength {
    /// The list's key.
    pub name: String,
    /// LLEN at the time of the snapshot.
    pub length: u64,
}

/// One source list: its length and who holds its lease.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceList {
    /// The list's key.
    pub name: String,
    /// LLEN at the time of the snapshot.
    pub length: u64,
    /// Who holds this source's lease, `null` when nobody does.
    pub lease: Option<LeaseHolder>,
}

/// The lists.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListLengths {
    /// The source lists producers push onto, highest priority first.
    pub sources: Vec<SourceList>,
    /// The list envelopes go to.
    pub processing: ListLength,
    /// The dead-letter list.
    pub dead_letter: ListLength,
}

/// Totals over all replicas since the stats hash was created.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Messages sent inside envelopes.
    pub messages: u64,
    /// Envelopes sent.
    pub batches: u64,
    /// Messages dead-lettered.
    pub dead_letters: u64,
}

/// Who holds a source's lease.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's consumer name.
    pub holder: String,
    /// Milliseconds the lease still lives (PTTL; -1 means it has no TTL).
    pub ttl_ms: i64,
}

/// One live replica, from its heartbeat hash.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Replica {
    /// Consumer name.
    pub consumer: String,
    /// Host name it runs on.
    pub host: String,
    /// Process id on that host.
    pub pid: Option<u64>,
    /// When the process started (RFC 3339).
    pub started_at: String,
    /// Time of its last heartbeat (RFC 3339), when known.
    pub heartbeat_at: Option<String>,
    /// Milliseconds since its last heartbeat, by this machine's clock.
    pub heartbeat_age_ms: Option<i64>,
    /// Whether it holds the lease now, by the lease key (not by its last heartbeat).
    pub holds_lease: bool,
    /// Whether back-pressure paused it at its last heartbeat (the processing list is at its
    /// length limit); only ever true for the holder.
    pub paused: bool,
    /// Messages this process sent inside envelopes.
    pub messages: u64,
    /// Envelopes this process sent.
    pub batches: u64,
    /// Messages this process dead-lettered.
    pub dead_letters: u64,
    /// Messages per second it moved between its last two heartbeats.
    pub rate_per_s: f64,
}

/// Everything `status` reports. Serialised as the `--json` document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// The Redis address read from (never contains credentials).
    pub redis: String,
    /// List names and lengths.
    pub queues: ListLengths,
    /// Running totals from the stats hash.
    pub totals: Totals,
    /// Time of the last envelope (RFC 3339), `null` when none was ever sent.
    pub last_envelope_at: Option<String>,
    /// Milliseconds since the last envelope, by this machine's clock.
    pub last_envelope_age_ms: Option<i64>,
    /// The holder of the first source's lease (the one every commit checks), `null` when
    /// nobody holds it. With several sources, `queues.sources[i].lease` shows each.
    pub lease: Option<LeaseHolder>,
    /// Replicas whose heartbeat hash still exists, by consumer name.
    pub replicas: Vec<Replica>,
    /// Sum of the live replicas' rates, messages per second.
    pub rate_per_s: f64,
    /// The batch ledger's section, with `REDIS_BATCH_LEDGER` on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<crate::tools::batch::LedgerStatus>,
}

/// Read the state from Redis and render it as text, or as one JSON document with `json`.
pub async fn run(settings: &Settings, json: bool) -> Result<String, StatusError> {
    let router = router_if_cluster(&settings.redis, settings.scale.cluster).await;
    if settings.scale.is_sharded() {
        let status = read_sharded(settings, router.as_ref()).await?;
        return Ok(if json {
            serde_json::to_string_pretty(&status).unwrap_or_default()
        } else {
            render_sharded(&status)
        });
    }
    let settings = on_node(settings, settings.queues.clone(), router.as_ref()).await;
    let status = read(&settings).await?;
    if json {
        // A struct of strings and numbers always serialises; rates are finite (see `parse_f64`).
        Ok(serde_json::to_string_pretty(&status).unwrap_or_default())
    } else {
        Ok(render_text(&status))
    }
}

/// Read a [`Status`] snapshot from Redis.
pub async fn read(settings: &Settings) -> Result<Status, StatusError> {
    let (mut conn, connector) = connection::connect_once(&settings.redis).await?;
    let keys = Keys::new(&settings.replica.key_prefix, &settings.queues.sources);
    let q = &settings.queues;
    let snapshot = read_snapshot(&mut conn, &connector, q, &keys).await?;
    let hashes = read_replicas(&mut conn, &connector, &keys, &snapshot.members).await?;
    let ledger = ledger::read(&mut conn, &connector, settings).await?;

    let now_ms = now_ms();
    let stats = &snapshot.stats;
    let last_ms = stats
        .get("last_envelope_at_ms")
        .and_then(|v| v.trim().parse::<i64>().ok());
    let list = |name: &String, length| ListLength {
        name: name.clone(),
        length,
    };
    let sources: Vec<SourceList> = q
        .sources
        .iter()
        .zip(snapshot.sources)
        .map(|(name, read)| SourceList {
            name: name.clone(),
            length: read.length,
            lease: read.lease.map(|value| LeaseHolder {
                holder: lease_holder(&value).to_string(),
                ttl_ms: read.lease_ttl,
            }),
        })
        .collect();
    let lease = sources.first().and_then(|s| s.lease.clone());
    // The holder is who the first source's lease names: every commit checks that one.
    let holder = lease.as_ref().map(|l| l.holder.as_str());
    let replicas: Vec<Replica> = snapshot
        .members
        .iter()
        .zip(hashes)
        // A member whose hash expired stopped heartbeating: it is not alive.
        .filter(|(_, h)| !h.is_empty())
        .map(|((name, score), h)| replica_from_hash(name, *score, &h, now_ms, holder))
        .collect();
    let rate_per_s = replicas.iter().map(|r| r.rate_per_s).sum();

    Ok(Status {
        redis: connector.addr(),
        queues: ListLengths {
            sources,
            processing: list(&q.processing, snapshot.processing_len),
            dead_letter: list(&q.dead_letter, snapshot.dead_letter_len),
        },
        totals: Totals {
            messages: parse_u64(stats.get("messages")),
            batches: parse_u64(stats.get("batches")),
            dead_letters: parse_u64(stats.get("dead_letters")),
        },
        last_envelope_at: last_ms.and_then(rfc3339_ms),
        last_envelope_age_ms: last_ms.map(|t| now_ms - t),
        lease,
        replicas,
        rate_per_s,
        ledger,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_holder_is_everything_before_the_last_slash() {
        assert_eq!(lease_holder("host-1/abc.0"), "host-1");
        assert_eq!(lease_holder("plain"), "plain");
    }
}
