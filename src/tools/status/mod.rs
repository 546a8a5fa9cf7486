//! `batch-processor status`: the state of one deployment (its source lists, highest priority
//! first, and its destinations), read from Redis alone.
//!
//! Everything shown comes from keys the daemons keep up to date (list lengths, the stats
//! hash, each source's lease, the replica heartbeats), so status works from any machine that reaches
//! Redis, whether or not a daemon runs. The reads go in one MULTI/EXEC so the numbers are one
//! consistent snapshot, then one more round trip fetches the replica hashes. Every call is
//! bounded by the connect and command timeouts, so status never hangs.

mod ledger;
mod render;

pub use render::render_text;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use redis::{from_redis_value, RedisError, Value};
use serde::Serialize;

use crate::envelope::format_timestamp;
use crate::mover::lease::lease_holder;
use crate::redis::connection::{self, Connector};
use crate::redis::keys::{source_lease, Keys};
use crate::redis::RedisFailure;
use crate::settings::{Queues, Settings};

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
    let status = read(settings).await?;
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

/// What one MULTI/EXEC reads: list lengths, the stats hash, the leases and the replica set.
struct Snapshot {
    sources: Vec<SourceRead>,
    processing_len: u64,
    dead_letter_len: u64,
    stats: HashMap<String, String>,
    members: Vec<(String, f64)>,
}

/// One source's length and lease.
struct SourceRead {
    length: u64,
    lease: Option<String>,
    lease_ttl: i64,
}

/// Read everything but the replica hashes in one transaction, so the numbers agree.
async fn read_snapshot(
    conn: &mut MultiplexedConnection,
    connector: &Connector,
    q: &Queues,
    keys: &Keys,
) -> Result<Snapshot, StatusError> {
    const COMMANDS: &str = "MULTI/EXEC LLEN, GET, PTTL, HGETALL, ZRANGE";
    let mut pipe = redis::pipe();
    pipe.atomic();
    for source in &q.sources {
        let lease = source_lease(source);
        pipe.cmd("LLEN").arg(source);
        pipe.cmd("GET").arg(&lease).cmd("PTTL").arg(&lease);
    }
    pipe.cmd("LLEN").arg(&q.processing);
    pipe.cmd("LLEN").arg(&q.dead_letter);
    pipe.cmd("HGETALL").arg(keys.stats());
    pipe.cmd("ZRANGE")
        .arg(keys.replicas())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES");
    let failed = |source| StatusError::Read {
        what: "list lengths, stats, leases and replica set",
        failure: connector.failure(COMMANDS, source),
    };
    let replies: Vec<Value> = pipe.query_async(conn).await.map_err(failed)?;
    let mut replies = replies.into_iter();
    let mut next = || replies.next().unwrap_or(Value::Nil);
    let sources = q
        .sources
        .iter()
        .map(|_| {
            Ok(SourceRead {
                length: from_redis_value(next())?,
                lease: from_redis_value(next())?,
                lease_ttl: from_redis_value(next())?,
            })
        })
        .collect::<Result<Vec<_>, RedisError>>()
        .map_err(failed)?;
    let mut parse = || -> Result<_, RedisError> {
        Ok((
            from_redis_value(next())?,
            from_redis_value(next())?,
            from_redis_value(next())?,
            from_redis_value(next())?,
        ))
    };
    let (processing_len, dead_letter_len, stats, members) = parse().map_err(failed)?;
    Ok(Snapshot {
        sources,
        processing_len,
        dead_letter_len,
        stats,
        members,
    })
}

/// The heartbeat hash of each member of the replica set, in the same order; an expired one
/// reads as empty.
async fn read_replicas(
    conn: &mut MultiplexedConnection,
    connector: &Connector,
    keys: &Keys,
    members: &[(String, f64)],
) -> Result<Vec<HashMap<String, String>>, StatusError> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (name, _) in members {
        pipe.cmd("HGETALL").arg(keys.replica(name));
    }
    pipe.query_async(conn)
        .await
        .map_err(|source| StatusError::Read {
            what: "replica heartbeats",
            failure: connector.failure("HGETALL", source),
        })
}

/// One replica from its heartbeat hash. Whether it holds the lease comes from the lease key
/// (`holder`, read in the same snapshot), not from the hash: the hash's `holds_lease` is as
/// old as the last beat and outlives a dead replica by up to three lease TTLs, so a replica
/// killed or stopped while holding would still be shown holding beside its successor.
fn replica_from_hash(
    name: &str,
    score: f64,
    h: &HashMap<String, String>,
    now_ms: i64,
    holder: Option<&str>,
) -> Replica {
    let text = |k: &str| h.get(k).cloned().unwrap_or_default();
    let consumer = h
        .get("consumer")
        .cloned()
        .unwrap_or_else(|| name.to_string());
    let holds_lease = holder == Some(consumer.as_str());
    // The hash's own field is the reference; the set's score is the same instant.
    let heartbeat_ms = h
        .get("heartbeat_at_ms")
        .and_then(|v| v.trim().parse::<i64>().ok())
        // A heartbeat score is milliseconds since the epoch, far inside an i64.
        .or_else(|| {
            #[allow(clippy::cast_possible_truncation)]
            score.is_finite().then_some(score as i64)
        });
    Replica {
        host: text("host"),
        pid: h.get("pid").and_then(|v| v.trim().parse().ok()),
        started_at: text("started_at"),
        heartbeat_at: heartbeat_ms.and_then(rfc3339_ms),
        heartbeat_age_ms: heartbeat_ms.map(|t| now_ms - t),
        holds_lease,
        // Only the holder pauses; a flag left by a replica that lost the lease is stale.
        paused: holds_lease && h.get("paused").is_some_and(|v| v == "1"),
        messages: parse_u64(h.get("messages")),
        batches: parse_u64(h.get("batches")),
        dead_letters: parse_u64(h.get("dead_letters")),
        rate_per_s: parse_f64(h.get("rate")),
        consumer,
    }
}

fn parse_u64(v: Option<&String>) -> u64 {
    v.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// A finite, non-negative rate; anything else reads as 0 (JSON cannot carry NaN).
fn parse_f64(v: Option<&String>) -> f64 {
    v.and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r >= 0.0)
        .unwrap_or(0.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(format_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_holder_is_everything_before_the_last_slash() {
        assert_eq!(lease_holder("host-1/abc.0"), "host-1");
        assert_eq!(lease_holder("plain"), "plain");
    }

    #[test]
    fn replica_fields_are_parsed_and_missing_ones_default() {
        let h: HashMap<String, String> = [
            ("consumer", "c1"),
            ("host", "h"),
            ("pid", "42"),
            ("started_at", "2026-01-01T00:00:00.000000+00:00"),
            ("heartbeat_at_ms", "1000"),
            ("holds_lease", "1"),
            ("messages", "7"),
            ("rate", "2.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = replica_from_hash("c1", 999.0, &h, 3000, Some("c1"));
        assert_eq!(r.pid, Some(42));
        assert_eq!(r.heartbeat_age_ms, Some(2000));
        assert_eq!(
            r.heartbeat_at.as_deref(),
            Some("1970-01-01T00:00:01.000000+00:00")
        );
        assert!(r.holds_lease);
        assert_eq!((r.messages, r.batches), (7, 0));
        assert_eq!(r.rate_per_s, 2.5);
        let nan: HashMap<String, String> = [("rate".to_string(), "NaN".to_string())].into();
        assert_eq!(replica_from_hash("c2", 5.0, &nan, 10, None).rate_per_s, 0.0);
        assert_eq!(
            replica_from_hash("c2", 5.0, &nan, 10, None).heartbeat_age_ms,
            Some(5)
        );
    }

    #[test]
    fn the_lease_key_not_the_last_heartbeat_says_who_holds_the_lease() {
        // A replica that held the lease (and was paused) at its last beat, then died.
        let h: HashMap<String, String> = [("holds_lease", "1"), ("paused", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for holder in [None, Some("successor")] {
            let r = replica_from_hash("dead", 1.0, &h, 2, holder);
            assert!(!r.holds_lease && !r.paused, "holder {holder:?}: {r:?}");
        }
        let r = replica_from_hash("dead", 1.0, &h, 2, Some("dead"));
        assert!(r.holds_lease && r.paused);
    }
}
