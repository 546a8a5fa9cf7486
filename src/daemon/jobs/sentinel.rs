//! With Sentinel: ask the sentinels every second which node is the primary.
//!
//! After a failover the old primary may go on answering as one until the sentinels
//! reconfigure it, seconds later; whatever is written there meanwhile is thrown away when it
//! resyncs. Asking every second notices the change within a second, and the bumped
//! [`Connector::generation`] makes the mover, the lease keeper and the jobs leave the old node.

use std::time::Duration;

use super::JobsError;
use crate::daemon::scheduler::{BoxFuture, Job, JobError};
use crate::redis::connection::{Connector, CONNECT};

/// How often the sentinels are asked.
const PERIOD: Duration = Duration::from_secs(1);

/// The sentinel watch.
#[derive(Debug)]
pub(super) struct SentinelWatch {
    connector: Connector,
    bound: Duration,
}

impl SentinelWatch {
    pub(super) fn new(connector: &Connector, command_timeout: Duration) -> Self {
        SentinelWatch {
            connector: connector.clone(),
            bound: command_timeout.min(PERIOD),
        }
    }
}

impl Job for SentinelWatch {
    fn name(&self) -> &'static str {
        "sentinel_watch"
    }

    fn period(&self) -> Duration {
        PERIOD
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.bound, self.connector.refresh_primary()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => {
                    Err(JobsError::Connect(self.connector.failure(CONNECT, source)).into())
                }
                Err(_) => Err(JobsError::Timeout {
                    what: "sentinel_watch",
                    addr: self.connector.addr(),
                    timeout: self.bound,
                }
                .into()),
            }
        })
    }
}
