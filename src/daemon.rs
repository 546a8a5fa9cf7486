//! The daemon (in progress).

use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Placeholder.
    #[error("not implemented")]
    Unimplemented,
}

/// Run until `shutdown` is cancelled.
pub async fn run(_settings: Settings, shutdown: CancellationToken) -> Result<(), DaemonError> {
    shutdown.cancelled().await;
    Err(DaemonError::Unimplemented)
}
