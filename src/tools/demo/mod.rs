//! `batch-processor demo produce` and `demo consume`: a stand-in scraper and transformer, so
//! the compose stack and the local quick start show the whole flow with one image.
//!
//! - [`produce`]: LPUSHes realistic scraper events (about 500 bytes, an occasional malformed
//!   one) onto the source list at a steady rate.
//! - [`consume`]: takes envelopes off the processing list and logs one summary line each;
//!   with the batch ledger on, `claiming` claims and acks them through the protocol instead.
//!
//! Both read the daemon's settings (connection and list names), log to stdout like the
//! daemon, keep retrying while Redis is away (a compose stack starts them before Redis
//! answers), and stop promptly on SIGTERM or SIGINT.

mod claiming;
pub mod consume;
pub mod produce;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use crate::redis::connection::{Connector, CONNECT};

/// Pause before trying Redis again after a failure.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Why a demo could not run at all (Redis being away is retried, not an error).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The Redis client could not be configured from the settings.
    #[error(transparent)]
    Config(#[from] crate::redis::connection::ConfigError),
}

/// A connection opened on first use and dropped after any failure, so the next use starts
/// afresh.
#[derive(Debug)]
struct Reconnecting {
    connector: Connector,
    /// `Some(block)`: a connection for blocking waits of up to `block`.
    block: Option<Duration>,
    conn: Option<MultiplexedConnection>,
}

impl Reconnecting {
    fn new(connector: Connector, block: Option<Duration>) -> Self {
        Reconnecting {
            connector,
            block,
            conn: None,
        }
    }

    /// The open connection, or a new one; `None` (after a logged warning and a pause) when
    /// Redis does not answer, or when `shutdown` came first.
    async fn get(&mut self, shutdown: &CancellationToken) -> Option<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            let opened = match self.block {
                Some(block) => self.connector.blocking_connection(block).await,
                None => self.connector.command_connection().await,
            };
            match opened {
                Ok(conn) => self.conn = Some(conn),
                Err(source) => {
                    self.failed(CONNECT, source, shutdown).await;
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    /// Log a failed `command`, forget the connection and wait [`RETRY_DELAY`] (or until
    /// shutdown).
    async fn failed(
        &mut self,
        command: &'static str,
        source: redis::RedisError,
        shutdown: &CancellationToken,
    ) {
        let failure = self.connector.failure(command, source);
        tracing::warn!(
            message = "redis unavailable",
            error_kind = failure.kind().as_str(),
            error = %failure,
            retry_in_ms = crate::telemetry::millis(RETRY_DELAY),
        );
        self.conn = None;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(RETRY_DELAY) => {}
        }
    }
}
