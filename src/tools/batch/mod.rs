//! `batch-processor batch` and `ledger`: the operator's side of the batch ledger.
//!
//! `batch show` prints one batch's entry, `batch list` the batches in flight per worker, the
//! next queued ones and the recent completions, and `batch ack` calls the same `batch_ack`
//! function a transformer calls (fenced by the delivery number). `ledger install` loads the
//! function library by hand (the daemon loads it itself when the ledger is on).

mod render;
mod view;

use redis::aio::MultiplexedConnection;

pub use render::status_section;
pub use view::{read_status, LedgerStatus, WorkerClaims};

use crate::ledger::{library, AckReport, Entry, LedgerError, LedgerKeys, Status};
use crate::redis::connection::{self, Connector};
use crate::redis::RedisFailure;
use crate::settings::Settings;

/// Batches `status` and `batch list` show per section by default.
pub const DEFAULT_LIMIT: usize = 20;

/// Why a `batch` or `ledger` command failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// No connection could be opened.
    #[error(transparent)]
    Connect(#[from] connection::ConnectError),
    /// A read failed.
    #[error("cannot read the batch ledger from Redis at {} ({}): {}", .0.addr, .0.kind(), .0.source)]
    Read(#[source] RedisFailure),
    /// A ledger function failed or refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// `batch ack` sent its ack and got no answer: it may or may not have been applied.
    #[error("ack {ack_id} of batch {id} may or may not have been applied ({source}); run it again with --ack-id {ack_id} to retry it, which counts once")]
    AckUnknown {
        /// The batch.
        id: String,
        /// The ack's id, for the retry.
        ack_id: String,
        /// Why no answer came.
        #[source]
        source: LedgerError,
    },
    /// No entry for that id (never written, or expired).
    #[error("no ledger entry for batch {0} (unknown id, or its entry expired)")]
    NotFound(String),
}

/// A connection and the ledger's keys.
struct Session {
    conn: MultiplexedConnection,
    connector: Connector,
    keys: LedgerKeys,
}

impl Session {
    async fn open(settings: &Settings) -> Result<Self, BatchError> {
        let (conn, connector) = connection::connect_once(&settings.redis).await?;
        Ok(Session {
            conn,
            connector,
            keys: LedgerKeys::new(&settings.ledger.state_prefix),
        })
    }

    fn read_error(
        &self,
        commands: &'static str,
    ) -> impl FnOnce(redis::RedisError) -> BatchError + '_ {
        move |source| BatchError::Read(self.connector.failure(commands, source))
    }
}

/// `batch show <id>`: one batch's entry, as text or JSON.
pub async fn show(settings: &Settings, id: &str, json: bool) -> Result<String, BatchError> {
    let mut s = Session::open(settings).await?;
    let ids = [id.to_owned()];
    let found = view::entries(&mut s.conn, &s.keys, &ids).await;
    let entry = found
        .map_err(s.read_error("HGETALL"))?
        .pop()
        .ok_or_else(|| BatchError::NotFound(id.to_owned()))?;
    if json {
        // A struct of strings and numbers always serialises.
        return Ok(serde_json::to_string_pretty(&entry).unwrap_or_default());
    }
    Ok(render::entry_detail(&entry))
}

/// Which batches `batch list` shows.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only batches in this state.
    pub status: Option<Status>,
    /// At most this many per section.
    pub limit: usize,
    /// One JSON document instead of text.
    pub json: bool,
}

/// `batch list`: in flight per worker, then the next queued, then recently finished.
pub async fn list(settings: &Settings, opts: &ListOptions) -> Result<String, BatchError> {
    let mut s = Session::open(settings).await?;
    let timeout_ms = i64::try_from(settings.ledger.claim_timeout.as_millis()).unwrap_or(i64::MAX);
    let status = read_status(&mut s.conn, &s.keys, timeout_ms, opts.limit, 1000)
        .await
        .map_err(s.read_error("TIME, HGETALL, ZRANGE, LRANGE"))?;
    let wants = |st: Status| opts.status.as_ref().is_none_or(|w| *w == st);
    let mut batches: Vec<Entry> = Vec::new();
    if wants(Status::Processing) {
        batches.extend(
            status
                .in_flight
                .iter()
                .flat_map(|w| w.batches.iter().cloned()),
        );
    }
    if wants(Status::Queued) {
        let queued = queued_ids(&mut s, &settings.queues.processing, opts.limit).await?;
        let entries = view::entries(&mut s.conn, &s.keys, &queued).await;
        batches.extend(entries.map_err(s.read_error("HGETALL"))?);
    }
    let finished = status
        .recent
        .iter()
        .filter(|e| e.status.is_finished() && wants(e.status.clone()))
        .take(opts.limit)
        .cloned();
    batches.extend(finished);
    if opts.json {
        return Ok(serde_json::to_string_pretty(&batches).unwrap_or_default());
    }
    Ok(render::entry_lines(&batches, &status))
}

/// The ids of the next `limit` envelopes a claim would take (the processing queue's tail).
async fn queued_ids(
    s: &mut Session,
    processing: &str,
    limit: usize,
) -> Result<Vec<String>, BatchError> {
    let n = isize::try_from(limit).unwrap_or(isize::MAX);
    let mut cmd = redis::cmd("LRANGE");
    cmd.arg(processing).arg(-n).arg(-1);
    let items: Vec<Vec<u8>> = cmd
        .query_async(&mut s.conn)
        .await
        .map_err(s.read_error("LRANGE"))?;
    // Oldest (the tail) first; the id sits at a fixed place in the daemon's envelopes.
    Ok(items
        .iter()
        .rev()
        .filter_map(|e| crate::envelope::event_id_of(e))
        .map(str::to_owned)
        .collect())
}

/// `batch ack`: the transformer's ack from the command line. The answer names the ack id, so
/// an operator whose run ended without an answer can retry it exactly once.
pub async fn ack(settings: &Settings, report: AckReport<'_>) -> Result<String, BatchError> {
    let mut s = Session::open(settings).await?;
    let a = match library::ack(&mut s.conn, &s.keys, &report).await {
        Err(source @ LedgerError::Redis { .. }) => {
            return Err(BatchError::AckUnknown {
                id: report.event_id.to_owned(),
                ack_id: report.ack_id.to_owned(),
                source,
            })
        }
        other => other?,
    };
    Ok(format!(
        "batch {}: {} ({} completed, {} failed of {}; ack id {})",
        report.event_id, a.status, a.completed, a.failed, a.total, report.ack_id
    ))
}

/// `ledger install`: load the function library.
pub async fn install(settings: &Settings) -> Result<String, BatchError> {
    let mut s = Session::open(settings).await?;
    library::install(&mut s.conn).await?;
    Ok(format!(
        "loaded the function library {} on {}",
        crate::ledger::LIBRARY_NAME,
        s.connector.addr()
    ))
}
