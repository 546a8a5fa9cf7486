//! `REDIS_MIN_REPLICAS_ACK`: a `WAIT` right after each commit, in the commit's own round trip,
//! and the watch that reports commits that too few replicas acknowledged in time.
//!
//! `WAIT` neither undoes a commit nor makes replication synchronous: a commit it reports stands
//! on the primary, and a failover now could lose it (its messages would go back to the
//! source). What it gives is a count of the times that window was open.

use redis::Value;

use super::commit::CommitError;
use crate::redis::ErrorKind;
use crate::settings::ReplicaAck;
use crate::telemetry::events;
use crate::telemetry::metrics::Metrics;

/// Append `WAIT <replicas> <timeout ms>` to a request.
pub(super) fn append_wait(pipe: &mut redis::Pipeline, ack: ReplicaAck) {
    let timeout_ms = u64::try_from(ack.timeout.as_millis()).unwrap_or(u64::MAX);
    // `WAIT n 0` would block forever.
    pipe.cmd("WAIT")
        .arg(ack.replicas.get())
        .arg(timeout_ms.max(1));
}

/// How many replicas the `WAIT` reply says acknowledged the commit.
pub(super) fn parse_wait(reply: Option<Value>) -> Result<i64, CommitError> {
    match reply {
        Some(Value::Int(n)) => Ok(n),
        Some(Value::ServerError(e)) => Err(CommitError::Wait {
            kind: ErrorKind::from_code(e.code()).unwrap_or(ErrorKind::Server),
            detail: format!("{} {}", e.code(), e.details().unwrap_or_default()),
        }),
        other => Err(CommitError::Protocol(format!("WAIT reply {other:?}"))),
    }
}

/// Counts commits too few replicas acknowledged, logging the first of each run and the end
/// of the run, so a replica that is down does not flood the log.
#[derive(Debug, Default)]
pub(super) struct AckWatch {
    /// Commits in a row that too few replicas acknowledged.
    unreplicated_run: u64,
}

impl AckWatch {
    /// `replicas` acknowledged the commit just made, of the `ack.replicas` wanted.
    pub(super) fn acknowledged(
        &mut self,
        metrics: &Metrics,
        source: &str,
        ack: ReplicaAck,
        replicas: i64,
    ) {
        let wanted = ack.replicas.get();
        if replicas >= i64::from(wanted) {
            if self.unreplicated_run > 0 {
                events::commits_replicated_again(source, self.unreplicated_run);
                self.unreplicated_run = 0;
            }
            return;
        }
        let first = self.unreplicated_run == 0;
        self.unreplicated_run += 1;
        events::commit_unreplicated(metrics, source, replicas, wanted, first);
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_unreplicated_commit_is_counted() {
        let metrics = Metrics::new();
        let ack = ReplicaAck {
            replicas: NonZeroU32::new(2).unwrap(),
            timeout: Duration::from_millis(10),
        };
        let mut watch = AckWatch::default();
        for replicas in [2, 1, 0, 1, 2, 3, 1] {
            watch.acknowledged(&metrics, "src", ack, replicas);
        }
        assert_eq!(metrics.commits_unreplicated.get(), 4);
        assert_eq!(watch.unreplicated_run, 1);
    }

    #[test]
    fn wait_replies() {
        assert_eq!(parse_wait(Some(Value::Int(1))).unwrap(), 1);
        assert!(matches!(
            parse_wait(None).unwrap_err(),
            CommitError::Protocol(_)
        ));
        let refused = redis::parse_redis_value(b"-NOPERM no wait for you\r\n").unwrap();
        let err = parse_wait(Some(refused)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoPerm);
        assert!(err.to_string().contains("NOPERM no wait for you"), "{err}");
    }
}
