//! Requests in flight: up to [`PIPELINE_DEPTH`] round trips at once, answered in the order
//! they were sent.
//!
//! Each request is polled once as it is queued, which hands it to the connection: requests
//! reach Redis in the order they were made, which the tail window's positions rely on. Redis
//! checks that order too: a commit must find the lease value its predecessor leaves, and a
//! plain read checks the same value with a GET.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::commit::{self, CommitError};
use super::plan::Plan;
use super::window::TailRead;

/// Requests in flight at once. Two keep Redis busy while the mover builds the next one.
pub const PIPELINE_DEPTH: usize = 2;

/// What a request brought back (the items each of its reads returned, oldest first, and
/// what `WAIT` said), or why it failed.
pub type Answer = Result<commit::Reply, CommitError>;

/// A request's reply, still to come.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// What a request does, for the mover to apply once it is answered.
#[derive(Debug)]
pub struct Sent {
    /// What it commits.
    pub plan: Plan,
    /// Its reads: which source, and where each sits in that source's tail window.
    pub reads: Vec<(usize, TailRead)>,
    /// Bytes of the largest value it carries (an envelope or a dead-letter record).
    pub largest_value: usize,
}

enum Reply {
    /// The first poll already produced the answer.
    Ready(Answer),
    Waiting(ReplyFuture),
}

struct Slot {
    reply: Reply,
    sent: Sent,
}

/// The queue of requests in flight, oldest first.
#[derive(Default)]
pub struct Pipeline {
    slots: VecDeque<Slot>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| &s.sent))
            .finish()
    }
}

impl Pipeline {
    /// Whether another request may be sent now.
    pub fn has_room(&self) -> bool {
        self.slots.len() < PIPELINE_DEPTH
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Queue a request and poll it once, so the connection sends it before any later one.
    /// The caller builds `reply` inside `tokio::task::unconstrained`: tokio's cooperative
    /// budget must not turn this first poll into a no-op.
    pub async fn push(&mut self, mut reply: ReplyFuture, sent: Sent) {
        let first = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx))).await;
        let reply = match first {
            Poll::Ready(answer) => Reply::Ready(answer),
            Poll::Pending => Reply::Waiting(reply),
        };
        self.slots.push_back(Slot { reply, sent });
    }

    /// The oldest request and its answer, once it has one; `None` when nothing is in flight.
    /// Cancel-safe: dropped while waiting, the request stays queued.
    pub async fn next(&mut self) -> Option<(Sent, Answer)> {
        let slot = self.slots.front_mut()?;
        if let Reply::Waiting(future) = &mut slot.reply {
            slot.reply = Reply::Ready(future.await);
        }
        let Slot { reply, sent } = self.slots.pop_front()?;
        match reply {
            Reply::Ready(answer) => Some((sent, answer)),
            // Resolved just above.
            Reply::Waiting(_) => None,
        }
    }

    /// Forget every request in flight. Their commits may still run in Redis; the lease
    /// chain then refuses any that follow a lost one, and the mover re-reads the tail.
    pub fn clear(&mut self) {
        self.slots.clear();
    }
}
