//! The batch ledger's section of `status` (only with `REDIS_BATCH_LEDGER` on): batches in
//! flight per worker, stalled and redelivered ones, the protocol's totals and the recent
//! completions with their percentages.

use redis::aio::MultiplexedConnection;

use super::StatusError;
use crate::ledger::LedgerKeys;
use crate::redis::connection::Connector;
use crate::settings::Settings;
use crate::tools::batch::{read_status, LedgerStatus};

/// Batches in flight shown at most.
const IN_FLIGHT_SHOWN: usize = 50;
/// Recent completions shown.
const RECENT_SHOWN: usize = 5;

/// The section's data, or `None` with the ledger off.
pub(super) async fn read(
    conn: &mut MultiplexedConnection,
    connector: &Connector,
    settings: &Settings,
) -> Result<Option<LedgerStatus>, StatusError> {
    if !settings.ledger.enabled {
        return Ok(None);
    }
    let keys = LedgerKeys::new(&settings.ledger.state_prefix);
    let timeout_ms = i64::try_from(settings.ledger.claim_timeout.as_millis()).unwrap_or(i64::MAX);
    read_status(conn, &keys, timeout_ms, IN_FLIGHT_SHOWN, RECENT_SHOWN)
        .await
        .map(Some)
        .map_err(|source| StatusError::Read {
            what: "the batch ledger",
            failure: connector.failure("TIME, HGETALL, ZRANGE, LRANGE", source),
        })
}
