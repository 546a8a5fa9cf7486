//! Notable events: each function logs one line and bumps its metrics together, so logs and
//! metrics never disagree.
//!
//! Per-commit lines follow one rule: at most `log_envelopes_per_second` "envelope sent" and
//! "dead letters written" lines per second. Past that, the rest of that second's lines are
//! logged at debug level only, and one "envelopes summary" info line per second reports how
//! many envelopes, messages and dead letters they were.

use std::time::{Duration, Instant};

use crate::mover::plan::Envelope;
use crate::redis::ErrorKind;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::{Metrics, ReasonLabel};

/// Rate limiter and summary for per-envelope log lines.
#[derive(Debug)]
pub struct EnvelopeLog {
    per_second: u32,
    window_start: Instant,
    logged: u32,
    suppressed_envelopes: u64,
    suppressed_messages: u64,
    suppressed_dead_letters: u64,
    max_age: Duration,
}

impl EnvelopeLog {
    /// Record dead letters that were committed: metrics, and a warning within the limit.
    pub fn dead_letters_written(
        &mut self,
        metrics: &Metrics,
        classes: &[&'static str],
        source: &str,
        dead_letter: &str,
        now: Instant,
    ) {
        let count = classes.len();
        if count == 0 {
            return;
        }
        self.roll(now);
        metrics.dead_letters.inc_by(count as u64);
        for &reason in classes {
            metrics
                .dead_letters_by_reason
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
        if self.logged < self.per_second {
            self.logged += 1;
            tracing::warn!(message = "dead letters written", count, source, dead_letter);
        } else {
            self.suppressed_dead_letters += count as u64;
            tracing::debug!(message = "dead letters written", count, source, dead_letter);
        }
    }

    /// Allow `per_second` info lines per second.
    pub fn new(per_second: u32) -> Self {
        EnvelopeLog {
            per_second,
            window_start: Instant::now(),
            logged: 0,
            suppressed_envelopes: 0,
            suppressed_messages: 0,
            suppressed_dead_letters: 0,
            max_age: Duration::ZERO,
        }
    }

    /// Time until the pending summary line is due, if lines were held back this window.
    pub fn summary_due_in(&self, now: Instant) -> Option<Duration> {
        (self.suppressed_envelopes > 0 || self.suppressed_dead_letters > 0)
            .then(|| (self.window_start + Duration::from_secs(1)).saturating_duration_since(now))
    }

    /// Close the current one-second window if it is over, logging its summary.
    pub fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window_start) < Duration::from_secs(1) {
            return;
        }
        if self.suppressed_envelopes > 0 || self.suppressed_dead_letters > 0 {
            tracing::info!(
                message = "envelopes summary",
                envelopes = self.suppressed_envelopes,
                messages = self.suppressed_messages,
                dead_letters = self.suppressed_dead_letters,
                max_oldest_age_ms = crate::telemetry::millis(self.max_age),
                window_ms = crate::telemetry::millis(now.duration_since(self.window_start)),
            );
        }
        self.window_start = now;
        self.logged = 0;
        self.suppressed_envelopes = 0;
        self.suppressed_messages = 0;
        self.suppressed_dead_letters = 0;
        self.max_age = Duration::ZERO;
    }

    /// Record envelopes that were committed: metrics, and a log line each within the limit.
    pub fn envelopes_sent(
        &mut self,
        metrics: &Metrics,
        envelopes: &[Envelope],
        source: &str,
        processing: &str,
        now: Instant,
    ) {
        self.roll(now);
        for e in envelopes {
            let age = now.saturating_duration_since(e.oldest_seen);
            metrics.messages.inc_by(e.size as u64);
            metrics.batches.inc();
            metrics.batch_size.observe(e.size as f64);
            metrics.oldest_message_age.observe(age.as_secs_f64());
            let age_ms = crate::telemetry::millis(age);
            if self.logged < self.per_second {
                self.logged += 1;
                tracing::info!(
                    message = "envelope sent",
                    event_id = %e.event_id,
                    size = e.size,
                    source,
                    processing,
                    oldest_age_ms = age_ms
                );
            } else {
                self.suppressed_envelopes += 1;
                self.suppressed_messages += e.size as u64;
                self.max_age = self.max_age.max(age);
                tracing::debug!(
                    message = "envelope sent",
                    event_id = %e.event_id,
                    size = e.size,
                    source,
                    processing,
                    oldest_age_ms = age_ms
                );
            }
        }
    }
}

/// The lease was taken.
pub fn lease_acquired(metrics: &Metrics, source: &str, consumer: &str) {
    metrics.lease_held.set(1);
    tracing::info!(message = "lease acquired", source, consumer);
}

/// Another holder has the source's lease: this replica stands by. Logged once per holder,
/// so an operator sees who owns the source (another deployment with a different
/// `REDIS_KEY_PREFIX` included).
pub fn standing_by(source: &str, consumer: &str, holder: &str) {
    tracing::info!(message = "standing by", source, consumer, holder);
}

/// A commit landed, but fewer replicas than `REDIS_MIN_REPLICAS_ACK` acknowledged it within
/// the timeout: a failover now could lose it (its messages would go back to the source).
/// Counted every time; logged for the first of a run, so a replica that is down does not
/// flood the log.
pub fn commit_unreplicated(
    metrics: &Metrics,
    source: &str,
    acknowledged: i64,
    wanted: u32,
    first_of_run: bool,
) {
    metrics.commits_unreplicated.inc();
    if first_of_run {
        tracing::warn!(
            message = "commit not replicated",
            source,
            acknowledged,
            wanted,
        );
    }
}

/// Commits are acknowledged by enough replicas again, after `unreplicated` that were not.
pub fn commits_replicated_again(source: &str, unreplicated: u64) {
    tracing::info!(message = "commits replicated again", source, unreplicated);
}

/// The source's tail was not what the daemon read: something other than the daemon changed
/// it. The commit was undone and the daemon reads again.
pub fn source_changed(metrics: &Metrics, source: &str) {
    metrics.source_changed.inc();
    tracing::error!(
        message = "source changed under the daemon",
        source,
        likely_cause = "a producer using RPUSH instead of LPUSH, or another consumer or an operator (LREM, LSET, LPOP/RPOP) changing the source list",
        effect = "commit undone; reading the tail again",
    );
}

/// The mover's commits have kept failing for `failing_for` while messages wait: retrying
/// alone will not help. Readiness turns false with `cause` until a commit succeeds.
pub fn mover_stuck(
    metrics: &Metrics,
    health: &Health,
    source: &str,
    cause: &str,
    failing_for: Duration,
) {
    metrics.mover_stuck.set(1);
    metrics.mover_stuck_episodes.inc();
    health.set_mover_stuck(Some(cause.to_owned()));
    tracing::error!(
        message = "mover stuck",
        source,
        cause,
        failing_for_ms = crate::telemetry::millis(failing_for),
    );
}

/// A stuck mover committed again.
pub fn mover_recovered(metrics: &Metrics, health: &Health, source: &str) {
    metrics.mover_stuck.set(0);
    health.set_mover_stuck(None);
    tracing::info!(message = "mover recovered", source);
}

/// Requests carrying a value of more than `limit` bytes kept failing: the daemon now treats
/// values that large as over the server's `proto-max-bulk-len` and dead-letters such
/// messages by reference.
pub fn value_limit_lowered(source: &str, limit: usize, error: &dyn std::error::Error) {
    tracing::warn!(
        message = "value limit lowered",
        source,
        limit,
        hint = "set REDIS_PROTO_MAX_BULK_LEN to the server's proto-max-bulk-len, or allow CONFIG GET",
        error = %error,
    );
}

/// The processing list is at `REDIS_MAX_PROCESSING_QUEUE_LENGTH`: the mover pauses (healthy;
/// readiness stays true). Logged once per pause.
pub fn paused(metrics: &Metrics, source: &str, processing: &str) {
    metrics.paused.set(1);
    tracing::info!(
        message = "paused",
        source,
        processing,
        reason = "processing list at its length limit"
    );
}

/// Room on the processing list again, after `paused_for`.
pub fn resumed(metrics: &Metrics, source: &str, paused_for: Duration) {
    metrics.paused.set(0);
    metrics.paused_seconds.inc_by(paused_for.as_secs_f64());
    tracing::info!(
        message = "resumed",
        source,
        paused_for_ms = crate::telemetry::millis(paused_for)
    );
}

/// The lease was lost (another replica holds it, or it expired).
pub fn lease_lost(metrics: &Metrics, source: &str, consumer: &str) {
    metrics.lease_held.set(0);
    tracing::warn!(message = "lease lost", source, consumer,);
}

/// An attempt to work with Redis failed; the mover retries after `next_delay`. Errors that
/// waiting cannot fix ([`ErrorKind::needs_operator`]) are logged as errors, the rest as
/// warnings.
pub fn redis_failed(
    metrics: &Metrics,
    kind: ErrorKind,
    error: &dyn std::error::Error,
    attempt: u32,
    next_delay: Duration,
) {
    metrics.redis_error(kind);
    metrics.lease_held.set(0);
    let next_delay_ms = crate::telemetry::millis(next_delay);
    let error_kind = kind.as_str();
    if kind.needs_operator() {
        tracing::error!(
            message = "redis refused",
            attempt,
            next_delay_ms,
            error_kind,
            error = %error
        );
    } else {
        tracing::warn!(
            message = "redis unavailable",
            attempt,
            next_delay_ms,
            error_kind,
            error = %error
        );
    }
}
