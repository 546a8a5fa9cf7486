//! `batch-processor dlq` (stub; replaced by the full implementation).

use crate::settings::Settings;

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Not implemented yet.
    #[error("dlq is not implemented yet")]
    Unimplemented,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Records put back on their source queue.
    pub replayed: u64,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replayed {} dead letters", self.replayed)
    }
}

/// Render up to `limit` dead letters, oldest first.
pub async fn list(_s: &Settings, _limit: Option<usize>, _json: bool) -> Result<String, DlqError> {
    Err(DlqError::Unimplemented)
}

/// Put up to `limit` dead letters (all when `None`) back on their source queues.
pub async fn replay(_s: &Settings, _limit: Option<usize>) -> Result<ReplayReport, DlqError> {
    Err(DlqError::Unimplemented)
}

/// Delete every dead letter; returns how many there were.
pub async fn purge(_s: &Settings) -> Result<u64, DlqError> {
    Err(DlqError::Unimplemented)
}
