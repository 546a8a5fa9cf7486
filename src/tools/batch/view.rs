//! Reading the ledger for the operator views: batches in flight per worker (stalled ones
//! marked), recent completions, and the protocol's totals. Ages come from Redis `TIME`, the
//! clock the functions stamp with.

use std::collections::{BTreeMap, HashMap};

use redis::aio::MultiplexedConnection;
use redis::RedisResult;
use serde::Serialize;

use crate::ledger::{Entry, LedgerKeys};

/// One worker's claims.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerClaims {
    /// The worker's name.
    pub worker: String,
    /// Milliseconds since its last claim or heartbeat (`null` if it is not registered).
    pub heartbeat_age_ms: Option<i64>,
    /// Silent for longer than the claim timeout: recovery will give its batches back.
    pub stalled: bool,
    /// The batches it holds, oldest claim first.
    pub batches: Vec<Entry>,
}

/// The ledger's state, as `status` and `batch list` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LedgerStatus {
    /// The ledger's key prefix.
    pub prefix: String,
    /// The protocol's totals over all transformers (claimed, completed, ... items_failed).
    pub totals: BTreeMap<String, u64>,
    /// Batches being processed, per worker.
    pub in_flight: Vec<WorkerClaims>,
    /// Batches in flight that were delivered more than once.
    pub redelivered_in_flight: u64,
    /// Milliseconds since the oldest claim in flight was made.
    pub oldest_in_flight_age_ms: Option<i64>,
    /// The most recently finished batches, newest first.
    pub recent: Vec<Entry>,
}

/// The entries of `ids`, in order; ids whose hash expired are left out.
pub(super) async fn entries(
    conn: &mut MultiplexedConnection,
    keys: &LedgerKeys,
    ids: &[String],
) -> RedisResult<Vec<Entry>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hgetall(keys.batch(id));
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
    Ok(ids
        .iter()
        .zip(&hashes)
        .filter_map(|(id, h)| Entry::from_fields(id, h))
        .collect())
}

/// Read the ledger: at most `cap` claims in flight and the `recent` last finished batches.
pub async fn read_status(
    conn: &mut MultiplexedConnection,
    keys: &LedgerKeys,
    claim_timeout_ms: i64,
    cap: usize,
    recent: usize,
) -> RedisResult<LedgerStatus> {
    type Reply = (
        (i64, i64),
        BTreeMap<String, u64>,
        Vec<(String, f64)>,
        Vec<(String, f64)>,
        Vec<String>,
    );
    let (time, totals, claims, workers, finished): Reply = redis::pipe()
        .cmd("TIME")
        .hgetall(keys.totals())
        .cmd("ZRANGE")
        .arg(keys.claims())
        .arg(0)
        .arg(cap.saturating_sub(1))
        .arg("WITHSCORES")
        .cmd("ZRANGE")
        .arg(keys.workers())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .lrange(
            keys.finished(),
            0,
            isize::try_from(recent).unwrap_or(isize::MAX) - 1,
        )
        .query_async(conn)
        .await?;
    let now = time.0 * 1000 + time.1 / 1000;
    let ids: Vec<String> = claims.iter().map(|(id, _)| id.clone()).collect();
    let claimed = entries(conn, keys, &ids).await?;
    let recent = entries(conn, keys, &finished).await?;
    let beats: HashMap<&str, f64> = workers.iter().map(|(w, s)| (w.as_str(), *s)).collect();
    let mut in_flight: Vec<WorkerClaims> = Vec::new();
    for entry in claimed {
        let worker = entry.worker.clone().unwrap_or_default();
        let slot = match in_flight.iter().position(|w| w.worker == worker) {
            Some(i) => i,
            None => {
                // A heartbeat score is ms since the epoch, far inside an i64.
                #[allow(clippy::cast_possible_truncation)]
                let age = beats.get(worker.as_str()).map(|s| now - *s as i64);
                in_flight.push(WorkerClaims {
                    worker,
                    heartbeat_age_ms: age,
                    stalled: age.is_none_or(|a| a > claim_timeout_ms),
                    batches: Vec::new(),
                });
                in_flight.len() - 1
            }
        };
        in_flight[slot].batches.push(entry);
    }
    let redelivered_in_flight = in_flight
        .iter()
        .flat_map(|w| &w.batches)
        .filter(|e| e.deliveries > 1)
        .count() as u64;
    #[allow(clippy::cast_possible_truncation)]
    let oldest_in_flight_age_ms = claims.first().map(|(_, at)| now - *at as i64);
    Ok(LedgerStatus {
        prefix: keys.prefix().to_owned(),
        totals,
        in_flight,
        redelivered_in_flight,
        oldest_in_flight_age_ms,
        recent,
    })
}
