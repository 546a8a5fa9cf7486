//! The status's reads: one MULTI/EXEC for the lists, the stats hash, the leases and the
//! replica set, so the numbers agree, then each replica's heartbeat hash, and their parsing.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use redis::{from_redis_value, RedisError, Value};

use super::{Replica, StatusError};
use crate::envelope::format_timestamp;
use crate::redis::connection::Connector;
use crate::redis::keys::{source_lease, Keys};
use crate::settings::Queues;

/// What one MULTI/EXEC reads: list lengths, the stats hash, the leases and the replica set.
pub(super) struct Snapshot {
    pub(super) sources: Vec<SourceRead>,
    pub(super) processing_len: u64,
    pub(super) dead_letter_len: u64,
    pub(super) stats: HashMap<String, String>,
    pub(super) members: Vec<(String, f64)>,
}

/// One source's length and lease.
pub(super) struct SourceRead {
    pub(super) length: u64,
    pub(super) lease: Option<String>,
    pub(super) lease_ttl: i64,
}

/// Read everything but the replica hashes in one transaction, so the numbers agree.
pub(super) async fn read_snapshot(
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
pub(super) async fn read_replicas(
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
pub(super) fn replica_from_hash(
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

pub(super) fn parse_u64(v: Option<&String>) -> u64 {
    v.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// A finite, non-negative rate; anything else reads as 0 (JSON cannot carry NaN).
pub(super) fn parse_f64(v: Option<&String>) -> f64 {
    v.and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r >= 0.0)
        .unwrap_or(0.0)
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn rfc3339_ms(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(format_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

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
