//! `batch-processor status` (stub; replaced by the full implementation).

use crate::settings::Settings;

/// Why status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Not implemented yet.
    #[error("status is not implemented yet")]
    Unimplemented,
}

/// Read the state from Redis and render it as text, or as one JSON document with `json`.
pub async fn run(_settings: &Settings, _json: bool) -> Result<String, StatusError> {
    Err(StatusError::Unimplemented)
}
