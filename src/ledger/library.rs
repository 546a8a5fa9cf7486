//! The `batch_ledger` function library: loading it, and typed calls of its functions.
//!
//! Functions survive restarts through the RDB/AOF and are replicated, but a server restarted
//! without persistence, or a `FUNCTION FLUSH`, loses them; every call here then loads the
//! library again and retries once, so the daemon and the CLI heal that by themselves.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisError};

use super::entry::Status;
use super::keys::LedgerKeys;

/// The library's source, as `FUNCTION LOAD` takes it.
pub const LIBRARY: &str = include_str!("../redis/functions/ledger.lua");

/// The library's name (its `#!lua name=` line).
pub const LIBRARY_NAME: &str = "batch_ledger";

/// Why a ledger call failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The round trip failed, or Redis refused the call for its own reasons.
    #[error("{function} failed: {source}")]
    Redis {
        /// The function or command.
        function: &'static str,
        /// What Redis or the connection said.
        #[source]
        source: RedisError,
    },
    /// The function refused: the batch is unknown, the delivery stale, the counts would pass
    /// the total, a protocol key of the wrong type, or an argument malformed (an ack id
    /// reused for another ack). Every function checks before its first write, so nothing
    /// changed.
    #[error("{function} refused: {code} {detail}")]
    Refused {
        /// The function.
        function: &'static str,
        /// `BATCH_UNKNOWN`, `BATCH_STALE`, `BATCH_OVER`, `BATCH_WRONGTYPE` or `BATCH_ARGS`.
        code: String,
        /// What it said.
        detail: String,
    },
}

impl LedgerError {
    /// The refusal's code (`BATCH_STALE`, ...), if the function refused.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            LedgerError::Refused { code, .. } => Some(code),
            LedgerError::Redis { .. } => None,
        }
    }
}

/// A claimed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The envelope, byte for byte.
    pub envelope: Vec<u8>,
    /// Its `event_id` (empty for an item that is not an envelope).
    pub event_id: String,
    /// The delivery number, to pass to [`ack`]: unique to this claim (never handed out
    /// again, even for the same batch), so it fences off every earlier holder.
    pub delivery: u64,
}

/// A batch's state after an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// `processing` until every item is reported, then `completed` or
    /// `completed_with_failures`.
    pub status: Status,
    /// Items completed so far under this delivery (all reporters' acks added up).
    pub completed: u64,
    /// Items failed so far under this delivery.
    pub failed: u64,
    /// Items in the batch.
    pub total: u64,
}

/// What one recovery call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Envelopes put back on the processing queue.
    pub requeued: u64,
    /// Envelopes dead-lettered after too many deliveries.
    pub dead: u64,
    /// Dead workers removed from the worker set.
    pub workers: u64,
}

/// Load (or replace) the library.
pub async fn install<C: ConnectionLike + Send>(conn: &mut C) -> Result<(), LedgerError> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async::<String>(conn)
        .await
        .map(drop)
        .map_err(|source| LedgerError::Redis {
            function: "FUNCTION LOAD",
            source,
        })
}

/// Take the oldest envelope of `processing` into `worker`'s in-flight list; `None` when the
/// queue is empty (wait with [`wait_for_work`] and call again).
pub async fn claim<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &LedgerKeys,
    processing: &str,
    worker: &str,
) -> Result<Option<Claim>, LedgerError> {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("batch_claim")
        .arg(1)
        .arg(processing)
        .arg(keys.prefix())
        .arg(worker);
    let reply: Option<(Vec<u8>, String, u64)> = fcall(conn, "batch_claim", &cmd).await?;
    Ok(reply.map(|(envelope, event_id, delivery)| Claim {
        envelope,
        event_id,
        delivery,
    }))
}

/// Block on the server for up to `timeout` until `processing` is non-empty, moving nothing
/// (`BLMOVE q q RIGHT RIGHT`). The connection must allow replies that late, and should be
/// one of its own: a blocked connection stalls every clone of it.
pub async fn wait_for_work<C: ConnectionLike + Send>(
    conn: &mut C,
    processing: &str,
    timeout: Duration,
) -> Result<bool, LedgerError> {
    let found: Option<Vec<u8>> = redis::cmd("BLMOVE")
        .arg(processing)
        .arg(processing)
        .arg("RIGHT")
        .arg("RIGHT")
        .arg(timeout.as_secs_f64())
        .query_async(conn)
        .await
        .map_err(|source| LedgerError::Redis {
            function: "BLMOVE",
            source,
        })?;
    Ok(found.is_some())
}

/// Keep `worker`'s claims alive. Returns how many envelopes it still holds (0 after its
/// batches were given to others).
pub async fn heartbeat<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &LedgerKeys,
    worker: &str,
) -> Result<u64, LedgerError> {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("batch_heartbeat")
        .arg(0)
        .arg(keys.prefix())
        .arg(worker);
    fcall(conn, "batch_heartbeat", &cmd).await
}

/// One ack: items newly finished under a delivery, under an id that makes it safe to retry.
#[derive(Debug, Clone, Copy)]
pub struct AckReport<'a> {
    /// The batch.
    pub event_id: &'a str,
    /// The delivery number the claim returned (the fencing token).
    pub delivery: u64,
    /// Items newly completed: an increment, so reports from several clients add up.
    pub completed: u64,
    /// Items newly failed (an increment).
    pub failed: u64,
    /// Chosen by the caller (a UUID), new per ack and the same on its retries: the function
    /// applies an id once per batch and answers a repeat with the answer it gave then.
    pub ack_id: &'a str,
}

/// Add `report`'s items to its batch's counts, once per ack id, so an ack retried after a
/// lost reply (with the same id) counts once.
pub async fn ack<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &LedgerKeys,
    report: &AckReport<'_>,
) -> Result<Ack, LedgerError> {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("batch_ack")
        .arg(2)
        .arg(keys.batch(report.event_id))
        .arg(keys.acks(report.event_id))
        .arg(keys.prefix())
        .arg(report.event_id)
        .arg(report.delivery)
        .arg(report.completed)
        .arg(report.failed)
        .arg(report.ack_id);
    let (status, completed, failed, total): (String, u64, u64, u64) =
        fcall(conn, "batch_ack", &cmd).await?;
    Ok(Ack {
        status: Status::parse(&status),
        completed,
        failed,
        total,
    })
}

/// What [`recover`] needs besides the connection and the keys.
#[derive(Debug, Clone, Copy)]
pub struct RecoverArgs<'a> {
    /// The processing queue (requeued envelopes go back to its consuming end).
    pub processing: &'a str,
    /// The dead-letter list.
    pub dead_letter: &'a str,
    /// A worker silent this long is dead.
    pub claim_timeout: Duration,
    /// Deliveries after which a batch is dead-lettered.
    pub max_deliveries: u32,
    /// The records' `failed_at`.
    pub failed_at: &'a str,
    /// Most workers handled in one call.
    pub limit: usize,
}

/// Requeue (or dead-letter) the batches of workers silent for longer than the timeout.
pub async fn recover<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &LedgerKeys,
    args: RecoverArgs<'_>,
) -> Result<Recovered, LedgerError> {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("batch_recover")
        .arg(2)
        .arg(args.processing)
        .arg(args.dead_letter)
        .arg(keys.prefix())
        .arg(crate::telemetry::millis(args.claim_timeout))
        .arg(args.max_deliveries)
        .arg(args.failed_at)
        .arg(args.limit);
    let (requeued, dead, workers): (u64, u64, u64) = fcall(conn, "batch_recover", &cmd).await?;
    Ok(Recovered {
        requeued,
        dead,
        workers,
    })
}

/// Run `cmd`; if Redis no longer has the library, load it and run `cmd` once more.
async fn fcall<C: ConnectionLike + Send, T: FromRedisValue>(
    conn: &mut C,
    function: &'static str,
    cmd: &redis::Cmd,
) -> Result<T, LedgerError> {
    match cmd.query_async(conn).await {
        Err(e) if is_missing_function(&e) => {
            tracing::info!(message = "ledger library missing; loading it", function);
            install(conn).await?;
            cmd.query_async(conn)
                .await
                .map_err(|e| classify(function, e))
        }
        other => other.map_err(|e| classify(function, e)),
    }
}

/// Redis answers `ERR Function not found` for an unknown function: no code of its own, so
/// the text is the only signal.
fn is_missing_function(e: &RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.starts_with("Function not found"))
}

/// The library's own refusals carry a `BATCH_*` code; anything else is a Redis failure.
fn classify(function: &'static str, source: RedisError) -> LedgerError {
    match source.code() {
        Some(code) if code.starts_with("BATCH_") => LedgerError::Refused {
            function,
            code: code.to_owned(),
            detail: source.detail().unwrap_or_default().to_owned(),
        },
        _ => LedgerError::Redis { function, source },
    }
}
