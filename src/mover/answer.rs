//! What the mover does with the answer to its oldest request: a commit that landed moves the
//! tail windows on and takes in what its reads returned; a refusal (fenced, back-pressure, a
//! foreign writer) resets the copies under a new token; any other failure ends the session.

use std::time::Instant;

use super::commit::CommitError;
use super::pipeline::{Answer, ReadReply, Sent};
use super::plan::Peeked;
use super::{Mover, MoverError, Outcome};
use crate::redis::ErrorKind;
use crate::settings::Schedule;
use crate::telemetry::events;

impl Mover {
    /// Apply the answer to the oldest request.
    pub(super) fn answered(&mut self, sent: Sent, answer: Answer) -> Result<Outcome, MoverError> {
        let settings_ack = self.ctx.settings.redis.replica_ack;
        match answer {
            Ok(reply) => {
                if !sent.plan.is_empty() {
                    self.value_limit.request_succeeded();
                }
                if let (Some(replicas), Some(ack)) = (reply.replicas, settings_ack) {
                    let sources = self.ctx.settings.queues.sources_label();
                    let metrics = &self.ctx.metrics;
                    self.ack_watch
                        .acknowledged(metrics, &sources, ack, replicas);
                }
                Ok(self.completed(sent, reply.reads))
            }
            Err(CommitError::Fenced { .. }) => {
                self.lease_lost();
                Ok(Outcome::Continue)
            }
            Err(CommitError::Paused { .. }) => {
                // Back-pressure, not a failure (another deployment filled the list). The
                // commits after this one were built on it and are fenced off: read the tail
                // again under a new token. The refused envelopes' tokens and permits return.
                let refused = sent.plan.envelopes.len();
                if let Some(bucket) = &mut self.rate {
                    bucket.refund(refused);
                }
                if let (Some(allowance), Schedule::Every { max_batches, .. }) =
                    (&self.ctx.allowance, self.ctx.settings.schedule)
                {
                    allowance.refund(refused, max_batches.get());
                }
                if let Some(back_pressure) = &mut self.back_pressure {
                    let change = back_pressure.refused(Instant::now());
                    self.pause_changed(change);
                }
                self.reset();
                Ok(Outcome::Continue)
            }
            Err(CommitError::TailChanged { source_queue }) => {
                self.stuck.commit_failed();
                events::source_changed(&self.ctx.metrics, &source_queue);
                self.failed("the source's tail keeps changing under the daemon (a foreign writer)");
                // Re-read from the tail as it is now, under a new token (the commits still in
                // flight were built on the old reading and are fenced off).
                self.reset();
                Ok(Outcome::Continue)
            }
            Err(e) => {
                if !sent.plan.is_empty() {
                    self.stuck.commit_failed();
                }
                // Redis refuses a value over its limit and closes the connection; the same
                // commit would fail forever. Twice in a row with a large value: lower the
                // limit, so the next plan sends that message by reference.
                // Only a broken connection is that signature: a server error reply (WRONGTYPE,
                // OOM, LOADING) or a timeout says nothing about sizes.
                let broken = matches!(e.kind(), ErrorKind::Io | ErrorKind::Protocol);
                if broken {
                    if let Some(limit) = self.value_limit.request_failed(sent.largest_value) {
                        let sources = self.ctx.settings.queues.sources_label();
                        events::value_limit_lowered(&sources, limit, &e);
                    }
                }
                Err(e.into())
            }
        }
    }

    /// A request succeeded: drop what it committed, keep what it read.
    fn completed(&mut self, sent: Sent, reads: Vec<ReadReply>) -> Outcome {
        let settings = &self.ctx.settings;
        let now = Instant::now();
        let plan = sent.plan;
        if !plan.is_empty() {
            self.tails.committed(&plan.trims);
            let source = self.ctx.keys.label();
            let processing = &settings.queues.processing;
            let metrics = &self.ctx.metrics;
            self.log
                .envelopes_sent(metrics, &plan.envelopes, source, processing, now);
            let (classes, dead_letter) = (&plan.dead_letter_classes, &settings.queues.dead_letter);
            self.log
                .dead_letters_written(metrics, classes, source, dead_letter, now);
        }
        let profile = settings.batch.message;
        for ((source, read), reply) in sent.reads.into_iter().zip(reads) {
            let peeked: Vec<Peeked> = reply
                .items
                .into_iter()
                .map(|item| Peeked::from_item(item, profile, now))
                .collect();
            let bytes = peeked.iter().map(Peeked::held_bytes).sum();
            self.inflight.observed(peeked.len(), bytes);
            if self
                .tails
                .read_returned(source, read, peeked, reply.cut_short)
                > 0
            {
                self.idle.messages_arrived();
            }
        }
        if plan.is_empty() {
            Outcome::Continue
        } else {
            Outcome::Progress
        }
    }
}
