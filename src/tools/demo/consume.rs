//! The demo transformer: takes envelopes off the processing list, oldest first, and logs one
//! summary line per envelope. With the batch ledger on it claims and acks them through the
//! protocol ([`super::claiming`]); otherwise it RPOPs, as a transformer without the ledger
//! does.
//!
//! It waits with `BLMOVE list list RIGHT RIGHT`, which blocks until the list is non-empty and
//! moves nothing, and only then RPOPs. Shutdown races the wait, never the pop, so stopping
//! never throws away an envelope that was popped but not yet logged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{DemoError, Reconnecting};
use crate::redis::connection::Connector;
use crate::settings::Settings;

/// Most envelopes taken per round trip.
const POP_COUNT: usize = 100;

/// What to consume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Stop after this many envelopes; `None` runs until shutdown.
    pub count: Option<u64>,
}

/// What was consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumed {
    /// Envelopes taken.
    pub envelopes: u64,
    /// Messages inside them.
    pub messages: u64,
}

/// The fields of an envelope the summary line shows.
#[derive(Debug, Deserialize)]
struct EnvelopeHead {
    event_id: String,
    timestamp: String,
    payload: PayloadHead,
}

#[derive(Debug, Deserialize)]
struct PayloadHead {
    size: u64,
}

/// Take envelopes until `opts.count` is reached or `shutdown` fires: claimed and acked with
/// the ledger on, popped otherwise.
pub async fn run(
    settings: &Settings,
    opts: ConsumeOptions,
    shutdown: CancellationToken,
) -> Result<Consumed, DemoError> {
    if settings.ledger.enabled {
        return super::claiming::run(settings, opts, shutdown).await;
    }
    let queue = &settings.queues.processing;
    let block = settings.redis.block_timeout;
    let mut conn = Reconnecting::new(Connector::new(&settings.redis)?, Some(block));
    tracing::info!(
        message = "demo consumer started",
        redis = %settings.redis.display_addr(),
        processing = %queue,
        count = opts.count,
    );
    let mut done = Consumed::default();
    while opts.count.is_none_or(|c| done.envelopes < c) {
        let Some(c) = conn.get(&shutdown).await else {
            if shutdown.is_cancelled() {
                break;
            }
            continue;
        };
        let mut wait = redis::cmd("BLMOVE");
        wait.arg(queue)
            .arg(queue)
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(block.as_secs_f64());
        let waited: redis::RedisResult<Option<Vec<u8>>> = tokio::select! {
            _ = shutdown.cancelled() => break,
            waited = wait.query_async(c) => waited,
        };
        if let Err(source) = waited {
            conn.failed("BLMOVE", source, &shutdown).await;
            continue;
        }
        let wanted = opts.count.map_or(POP_COUNT, |c| {
            usize::try_from(c - done.envelopes).map_or(POP_COUNT, |left| left.min(POP_COUNT))
        });
        let popped: redis::RedisResult<Option<Vec<Vec<u8>>>> = redis::cmd("RPOP")
            .arg(queue)
            .arg(wanted)
            .query_async(c)
            .await;
        match popped {
            Ok(envelopes) => {
                for envelope in envelopes.unwrap_or_default() {
                    done.envelopes += 1;
                    done.messages += log_envelope(&envelope, queue);
                }
            }
            Err(source) => conn.failed("RPOP", source, &shutdown).await,
        }
    }
    tracing::info!(
        message = "demo consumer stopped",
        envelopes = done.envelopes,
        messages = done.messages,
    );
    Ok(done)
}

/// Log one envelope's summary line; returns how many messages it carried.
pub(super) fn log_envelope(raw: &[u8], queue: &str) -> u64 {
    match serde_json::from_slice::<EnvelopeHead>(raw) {
        Ok(head) => {
            tracing::info!(
                message = "envelope received",
                event_id = %head.event_id,
                size = head.payload.size,
                bytes = raw.len(),
                age_ms = age_ms(&head.timestamp, Utc::now()),
                processing = %queue,
            );
            head.payload.size
        }
        Err(error) => {
            tracing::warn!(message = "not an envelope", bytes = raw.len(), %error, processing = %queue);
            0
        }
    }
}

/// Milliseconds from an envelope's RFC 3339 `timestamp` to `now`, when it parses.
fn age_ms(timestamp: &str, now: DateTime<Utc>) -> Option<i64> {
    let sent = DateTime::parse_from_rfc3339(timestamp).ok()?;
    Some(
        now.signed_duration_since(sent)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .as_millis()
            .try_into()
            .unwrap_or(i64::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_give_their_size_and_age() {
        let raw = br#"{"event_id":"e1","event_type":"batch_processing","payload":{"batch":[1,2],"size":2},"timestamp":"2026-11-23T02:03:23.000000+00:00","service":"batch_processor"}"#;
        assert_eq!(log_envelope(raw, "q"), 2);
        assert_eq!(log_envelope(b"not json", "q"), 0);
        let now = DateTime::parse_from_rfc3339("2026-11-23T02:03:24.500000+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(age_ms("2026-11-23T02:03:23.000000+00:00", now), Some(1500));
        assert_eq!(age_ms("2026-11-23T02:03:25.000000+00:00", now), Some(0));
        assert_eq!(age_ms("yesterday", now), None);
    }
}
