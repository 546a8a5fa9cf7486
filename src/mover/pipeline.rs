//! Requests in flight: up to [`PIPELINE_DEPTH`] round trips at once, answered in the order
//! they were sent.
//!
//! Each request is written whole to the mover's request connection as it is queued, so
//! requests reach Redis in the order they were made, which the tail window's positions rely
//! on. Redis checks that order too: a commit must find the lease value its predecessor leaves,
//! and a plain read checks the same value with a GET. Replies are read in the same order, the
//! oldest request's first; the progress of a reply lives in its slot, so a wait dropped at
//! shutdown loses nothing.

use std::collections::VecDeque;

use redis::{RedisError, Value};

use super::commit::{self, CommitError, Request};
use super::plan::Plan;
use super::window::TailRead;
use crate::redis::raw::{Item, Items, ItemsReply, Keep, RawConnection};
use crate::settings::Queues;

/// Requests in flight at once. Two keep Redis busy while the mover builds the next one.
pub const PIPELINE_DEPTH: usize = 2;

/// What one read of a request returned.
#[derive(Debug, Default)]
pub struct ReadReply {
    /// The items, oldest first.
    pub items: Vec<Item>,
    /// Fewer items than asked came back because the read's byte grant ran out, not because
    /// the source did.
    pub cut_short: bool,
}

/// What a request brought back (what each of its reads returned, and what `WAIT` said), or
/// why it failed.
pub type Answer = Result<commit::Reply, CommitError>;

/// What a request does, for the mover to apply once it is answered.
#[derive(Debug, Default)]
pub struct Sent {
    /// What it commits.
    pub plan: Plan,
    /// Its reads: which source, and where each sits in that source's tail window.
    pub reads: Vec<(usize, TailRead)>,
    /// Bytes of the largest value it carries (an envelope or a dead-letter record).
    pub largest_value: usize,
    /// Bytes its reads may keep (see [`super::inflight`]).
    pub read_grant: usize,
}

/// A request's replies, as far as they came in.
#[derive(Debug)]
struct Progress {
    values: Vec<Value>,
    reads: Vec<ReadReply>,
    current: Option<ItemsReply>,
    grant_left: usize,
}

#[derive(Debug)]
struct Slot {
    request: Request,
    sent: Sent,
    progress: Progress,
    /// Writing it failed: its answer, without reading.
    failed: Option<CommitError>,
    /// Forgotten by the mover ([`Pipeline::clear`]): its replies are still on their way on
    /// the connection, so they are read and thrown away before any later request's.
    discard: bool,
}

/// The queue of requests in flight, oldest first.
#[derive(Debug, Default)]
pub struct Pipeline {
    slots: VecDeque<Slot>,
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

    /// Bytes granted to the reads of the requests in flight (a forgotten one keeps nothing).
    pub fn reserved_bytes(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !s.discard)
            .map(|s| s.sent.read_grant)
            .sum()
    }

    /// Write `request` to `conn` and queue it. A failed write becomes the request's answer.
    pub async fn push(
        &mut self,
        conn: &mut RawConnection,
        request: Request,
        sent: Sent,
        queues: &Queues,
    ) {
        let failed = conn
            .send(request.packed())
            .await
            .err()
            .map(|e| redis_error(queues, e.into()));
        let progress = Progress {
            values: Vec::with_capacity(request.small_replies()),
            reads: Vec::with_capacity(sent.reads.len()),
            current: None,
            grant_left: sent.read_grant,
        };
        self.slots.push_back(Slot {
            request,
            sent,
            progress,
            failed,
            discard: false,
        });
    }

    /// The oldest request and its answer, once it has one; `None` when nothing is in flight.
    /// Waits at most the connection's timeout. Cancel-safe: dropped while waiting, the
    /// request stays queued with what came in of its replies.
    pub async fn next(
        &mut self,
        conn: &mut RawConnection,
        keep: Keep,
        queues: &Queues,
    ) -> Option<(Sent, Answer)> {
        if let Err(e) = self.skip_forgotten(conn, keep, queues).await {
            // The connection broke or stalled: the session ends (an empty plan, so nothing
            // is counted against a commit).
            return Some((Sent::default(), Err(e)));
        }
        let slot = self.slots.front_mut()?;
        let read = match slot.failed.take() {
            Some(e) => Err(e),
            None => {
                let after = conn.timeout();
                match tokio::time::timeout(after, read_replies(slot, conn, keep, queues)).await {
                    Ok(read) => read,
                    Err(_) => Err(redis_error(
                        queues,
                        RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no reply within {after:?}"),
                        )),
                    )),
                }
            }
        };
        let Slot {
            request,
            sent,
            progress,
            ..
        } = self.slots.pop_front()?;
        let answer = read.and_then(|()| {
            let replicas = request.check(progress.values, queues)?;
            Ok(commit::Reply {
                reads: progress.reads,
                replicas,
            })
        });
        Some((sent, answer))
    }

    /// Forget every request in flight. Their commits may still run in Redis; the lease
    /// chain then refuses any that follow a lost one, and the mover re-reads the tail. Their
    /// replies are still read, and thrown away, so that no later request takes them for its
    /// own (the connection carries replies in order, nothing else tells them apart).
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.discard = true;
            slot.progress.grant_left = 0;
        }
    }

    /// Drop every request in flight, replies and all: the connection they went on is gone (a
    /// new session starts on a new one).
    pub fn abandon(&mut self) {
        self.slots.clear();
    }

    /// Read and drop the replies of the forgotten requests at the front of the queue.
    async fn skip_forgotten(
        &mut self,
        conn: &mut RawConnection,
        keep: Keep,
        queues: &Queues,
    ) -> Result<(), CommitError> {
        while let Some(slot) = self.slots.front_mut().filter(|s| s.discard) {
            if let Some(e) = slot.failed.take() {
                return Err(e);
            }
            let after = conn.timeout();
            match tokio::time::timeout(after, read_replies(slot, conn, keep, queues)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(redis_error(
                        queues,
                        RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no reply within {after:?}"),
                        )),
                    ))
                }
            }
            self.slots.pop_front();
        }
        Ok(())
    }
}

/// Read the rest of `slot`'s replies: the small ones, then one `LRANGE` reply per read.
async fn read_replies(
    slot: &mut Slot,
    conn: &mut RawConnection,
    keep: Keep,
    queues: &Queues,
) -> Result<(), CommitError> {
    let broken = |e: crate::redis::raw::RawError| redis_error(queues, e.into());
    let progress = &mut slot.progress;
    while progress.values.len() < slot.request.small_replies() {
        progress.values.push(conn.value().await.map_err(broken)?);
    }
    let sources = slot.request.read_sources();
    while progress.reads.len() < sources.len() {
        let reply = progress
            .current
            .get_or_insert_with(|| ItemsReply::new(keep));
        let items = conn
            .items(reply, &mut progress.grant_left)
            .await
            .map_err(broken)?;
        progress.current = None;
        let source = sources.get(progress.reads.len()).copied().unwrap_or(0);
        progress.reads.push(read_reply(items, source, queues)?);
    }
    Ok(())
}

/// The items of one `LRANGE` reply, oldest first.
fn read_reply(items: Items, source: usize, queues: &Queues) -> Result<ReadReply, CommitError> {
    match items {
        Items::Read {
            mut items,
            truncated,
        } => {
            // LRANGE lists head to tail; the tail is the oldest.
            items.reverse();
            Ok(ReadReply {
                items,
                cut_short: truncated,
            })
        }
        Items::Other(Value::ServerError(e)) => {
            let key = queues.sources.get(source).cloned().unwrap_or_default();
            Err(super::verdict::refused("LRANGE", key, &e))
        }
        Items::Other(other) => Err(CommitError::Protocol(format!("LRANGE reply {other:?}"))),
    }
}

fn redis_error(queues: &Queues, source: RedisError) -> CommitError {
    CommitError::Redis {
        source_queue: queues.sources_label(),
        source,
    }
}

impl Request {
    /// Send this request alone on `conn` and wait for its answer, keeping every item whole
    /// (for tools and tests; the mover pipelines its requests).
    pub async fn send(self, conn: &mut RawConnection, queues: &Queues) -> Answer {
        let mut pipeline = Pipeline::default();
        let sent = Sent {
            plan: Plan::default(),
            reads: Vec::new(),
            largest_value: 0,
            read_grant: usize::MAX,
        };
        pipeline.push(conn, self, sent, queues).await;
        let keep = Keep { up_to: usize::MAX };
        match pipeline.next(conn, keep, queues).await {
            Some((_, answer)) => answer,
            None => Err(CommitError::Protocol("no answer".into())),
        }
    }
}
