//! The tail window: the mover's copy of the source's tail and the positions that say which
//! part of it requests in flight already cover.
//!
//! Positions count items from the source's tail as it was when the lease was taken, so they
//! do not move when commits trim the tail. Three of them matter, in this order:
//!
//! ```text
//!   front          planned                 front + pending.len()        next_read
//!     |  covered by   |   read, not yet covered  |   asked for, not answered  |
//!     |  commits in   |   by any commit          |   (reads in flight)        |
//!     |  flight       |   (`unplanned`)          |                            |
//! ```
//!
//! Every item in the window is still in Redis: only a commit removes items from the source.
//! So dropping the window ([`TailWindow::reset`]) is always safe; it only costs a re-read.

use std::time::Instant;

use super::plan::{self, Peeked};

/// A read of the source's tail, placed in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailRead {
    /// Window position of the first item it returns.
    pub start: usize,
    /// Items to skip from the tail as it will be when the read runs (after its own commit).
    pub skip: usize,
    /// Items to ask for.
    pub count: usize,
}

/// The mover's copy of the source's tail, oldest first.
#[derive(Debug, Default)]
pub struct TailWindow {
    /// Copies of the tail, oldest first; `pending[0]` sits at `front`.
    pending: Vec<Peeked>,
    /// Position of `pending[0]`.
    front: usize,
    /// Position up to which requests in flight commit.
    planned: usize,
    /// Position of the next item to ask for.
    next_read: usize,
    /// The last read returned fewer items than asked: the source was drained then.
    drained: bool,
    /// Memory the copies take ([`Peeked::held_bytes`]).
    held: usize,
}

impl TailWindow {
    /// An empty window at position 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read items that no request in flight commits yet, oldest first: what the next plan
    /// covers.
    pub fn unplanned(&self) -> &[Peeked] {
        // Invariant: front <= planned <= front + pending.len(); `reserve` keeps it.
        &self.pending[self.planned - self.front..]
    }

    /// Memory the copies take.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Whether the window holds no copy at all.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the oldest good message not yet planned was first seen (its batch's clock).
    pub fn oldest_unplanned(&self) -> Option<Instant> {
        plan::oldest_waiting(self.unplanned())
    }

    /// Whether the last read came back short: then the window held the whole source, and
    /// nothing of it waited unread in Redis.
    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// The read for the next request: one that keeps up to `read_ahead` items read beyond
    /// what a commit trimming the first `trim` unplanned items leaves, if one is worth
    /// making: not once the source was drained, unless `recheck` (a request that commits
    /// anyway looks again, and so does the first request after a wait, since the source may
    /// have grown).
    ///
    /// `trim` must not exceed `unplanned().len()`.
    pub fn read_for(&self, trim: usize, read_ahead: usize, recheck: bool) -> Option<TailRead> {
        debug_assert!(trim <= self.unplanned().len());
        // Where the tail will be once this request's commit has run.
        let tail_after = self.planned + trim;
        // A drained source is read again from the end of what is held, even while an
        // earlier look is in flight: each request then sees what landed since the one before
        // (the later of two overlapping reads is dropped if the earlier one found anything).
        let start = if self.drained && recheck {
            self.held_end()
        } else {
            self.next_read
        };
        let want = (tail_after + read_ahead).saturating_sub(start);
        (want > 0 && (!self.drained || recheck)).then(|| TailRead {
            start,
            // start >= front + pending.len() >= planned + trim.
            skip: start.saturating_sub(tail_after),
            count: want,
        })
    }

    /// Position just past the last item held.
    fn held_end(&self) -> usize {
        self.front + self.pending.len()
    }

    /// A request that commits `trim` unplanned items and makes `read` was sent.
    pub fn reserve(&mut self, trim: usize, read: Option<TailRead>) {
        self.planned += trim;
        if let Some(r) = read {
            self.next_read = self.next_read.max(r.start + r.count);
        }
    }

    /// The oldest request in flight committed: its `trim` items left the source.
    pub fn committed(&mut self, trim: usize) {
        let trim = trim.min(self.pending.len());
        let freed: usize = self.pending.drain(..trim).map(|p| p.held_bytes()).sum();
        self.held -= freed;
        self.front += trim;
    }

    /// A read came back with `items` (oldest first); `cut_short` when its byte grant ran out
    /// before the items asked for (see [`super::inflight`]), so fewer came back although the
    /// source may hold more. Returns how many were kept: none unless the read starts exactly
    /// where the held items end (an earlier read came back short, so this one may have
    /// skipped items; or an earlier overlapping look found items this one repeats), and then
    /// `items` is not even iterated. Acceptance only at the held end is what keeps the copy
    /// gap-free and without repeats, whatever reads were in flight.
    pub fn read_returned<I>(&mut self, read: TailRead, items: I, cut_short: bool) -> usize
    where
        I: IntoIterator<Item = Peeked>,
        I::IntoIter: ExactSizeIterator,
    {
        if read.start != self.held_end() {
            // Nothing in flight may cover what this read would have: ask from the held end
            // again (a later read that does start there is still taken).
            self.next_read = self.held_end();
            return 0;
        }
        let items = items.into_iter();
        let got = items.len();
        let before = self.pending.len();
        self.pending.extend(items);
        self.held += self.pending[before..]
            .iter()
            .map(Peeked::held_bytes)
            .sum::<usize>();
        if got < read.count {
            // Short because the source ran out, or because the grant did: then the next read
            // starts here, and the source does not count as drained.
            self.drained = !cut_short;
            self.next_read = read.start + got;
        } else {
            self.drained = false;
            self.next_read = self.next_read.max(read.start + got);
        }
        got
    }

    /// Drop every copy and position (after an error or a lost lease). Safe at any time:
    /// every copy is still in Redis.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::mover::plan::tests::{queues, PROFILE};
    use crate::mover::plan::{plan, Limits, Runs, MAX_COMMIT_BYTES, MAX_ENVELOPE_BYTES};

    fn peeked(items: &[&str], seen: Instant) -> Vec<Peeked> {
        items
            .iter()
            .map(|s| Peeked::new(s.as_bytes().to_vec(), PROFILE, seen))
            .collect()
    }

    fn limits(batch_size: usize) -> Limits {
        Limits {
            batch_size,
            max_envelopes: 10,
            max_lower_envelopes: usize::MAX,
            flush_seen_by: None,
            max_envelope_bytes: MAX_ENVELOPE_BYTES,
            max_commit_bytes: MAX_COMMIT_BYTES,
            max_value_bytes: 512 << 20,
        }
    }

    /// `read_for` then `reserve`, as the mover does when it sends a request: a commit reads
    /// again even once the source was drained. `None` when there is nothing to send.
    fn send(w: &mut TailWindow, trim: usize, read_ahead: usize) -> Option<Option<TailRead>> {
        let read = w.read_for(trim, read_ahead, trim > 0);
        if trim == 0 && read.is_none() {
            return None;
        }
        w.reserve(trim, read);
        Some(read)
    }

    /// A window that has read `items` in one full read and has nothing in flight.
    fn window_with(items: &[&str], seen: Instant) -> TailWindow {
        let mut w = TailWindow::new();
        let read = send(&mut w, 0, items.len()).unwrap().unwrap();
        assert_eq!(
            w.read_returned(read, peeked(items, seen), false),
            items.len()
        );
        w
    }

    #[test]
    fn the_first_request_only_reads() {
        let mut w = TailWindow::new();
        let read = send(&mut w, 0, 20).unwrap().unwrap();
        assert_eq!(
            read,
            TailRead {
                start: 0,
                skip: 0,
                count: 20
            }
        );
        // Everything up to the read-ahead is asked for: nothing more to do until it returns.
        assert_eq!(send(&mut w, 0, 20), None);
    }

    #[test]
    fn a_commit_after_a_read_skips_what_is_held() {
        let now = Instant::now();
        let mut w = window_with(&["1", "2", "3", "4", "5"], now);
        let p = plan(&Runs::one(w.unplanned()), limits(2), &queues(), "ts");
        assert_eq!(p.trim, 4);
        // Commit 4; the tail then holds item 5 (position 4) as its oldest, already held and
        // read before: read from position 5 on, skipping one item from the new tail.
        let read = send(&mut w, p.trim, 10).unwrap().unwrap();
        assert_eq!(
            read,
            TailRead {
                start: 5,
                skip: 1,
                count: 9
            }
        );
        assert_eq!(w.unplanned().len(), 1);
        w.committed(p.trim);
        assert_eq!(w.read_returned(read, peeked(&["6", "7"], now), false), 2);
        // Short read: the source was drained; items 5, 6, 7 wait.
        assert_eq!(w.unplanned().len(), 3);
        assert!(w.drained);
        assert_eq!(w.next_read, 7);
        // Drained and nothing to commit: no request until the mover has waited.
        assert_eq!(send(&mut w, 0, 10), None);
        // After a wait the mover looks again.
        let read = w.read_for(0, 10, true).unwrap();
        assert_eq!((read.start, read.skip, read.count), (7, 3, 7));
    }

    #[test]
    fn a_failed_commit_or_a_lost_lease_resets_everything() {
        let now = Instant::now();
        let mut w = window_with(&["1", "2", "3"], now);
        let p = plan(&Runs::one(w.unplanned()), limits(2), &queues(), "ts");
        let read = send(&mut w, p.trim, 10).unwrap();
        assert!(read.is_some());
        assert_eq!(w.planned, 2);
        // The commit failed (or its reply was lost): the next lease starts from the tail.
        w.reset();
        assert!(w.is_empty());
        assert_eq!((w.front, w.planned, w.next_read), (0, 0, 0));
        assert!(!w.drained);
        let read = send(&mut w, 0, 10).unwrap().unwrap();
        assert_eq!((read.start, read.skip, read.count), (0, 0, 10));
    }

    #[test]
    fn a_read_after_a_short_one_is_dropped() {
        let now = Instant::now();
        let mut w = TailWindow::new();
        let first = send(&mut w, 0, 4).unwrap().unwrap();
        // A second request reads further while the first is in flight.
        let second = send(&mut w, 0, 8).unwrap().unwrap();
        assert_eq!((second.start, second.count), (4, 4));
        // The first comes back short (the source held 2 items then) ...
        assert_eq!(w.read_returned(first, peeked(&["1", "2"], now), false), 2);
        // ... so the second, which skipped 4 items, may have skipped some: drop it.
        assert_eq!(w.read_returned(second, peeked(&["5"], now), false), 0);
        assert_eq!(w.unplanned().len(), 2);
        assert_eq!(w.next_read, 2);
    }

    #[test]
    fn a_partial_batch_is_planned_once_its_deadline_passed() {
        let seen = Instant::now();
        let mut w = window_with(&["1", "2", "3"], seen);
        let p = plan(&Runs::one(w.unplanned()), limits(2), &queues(), "ts");
        assert_eq!(p.trim, 2);
        send(&mut w, p.trim, 0);
        assert_eq!(w.oldest_unplanned(), Some(seen));
        // Not yet due: nothing more to plan.
        let young = plan(&Runs::one(w.unplanned()), limits(2), &queues(), "ts");
        assert!(young.is_empty());
        // Due: the partial batch goes; the window then covers all it holds.
        let due = Limits {
            flush_seen_by: Some(seen + Duration::from_millis(1)),
            ..limits(2)
        };
        let p = plan(&Runs::one(w.unplanned()), due, &queues(), "ts");
        assert_eq!(p.trim, 1);
        send(&mut w, p.trim, 0);
        assert!(w.unplanned().is_empty());
        assert_eq!(w.oldest_unplanned(), None);
        w.committed(2);
        w.committed(1);
        assert!(w.is_empty());
        assert_eq!(w.front, 3);
    }

    #[test]
    fn dead_letters_between_and_after_a_batch_trim_with_it() {
        let now = Instant::now();
        let mut w = window_with(&["1", "bad", "2", "{", "3"], now);
        let p = plan(&Runs::one(w.unplanned()), limits(2), &queues(), "ts");
        // One batch of two good messages covers the bad one between them and the bad one
        // right after it; the last good message waits for its batch to fill.
        assert_eq!(p.trim, 4);
        assert_eq!(p.dead_letters.len(), 2);
        let read = send(&mut w, p.trim, 5).unwrap().unwrap();
        assert_eq!((read.start, read.skip, read.count), (5, 1, 4));
        assert_eq!(w.unplanned().len(), 1);
        w.committed(p.trim);
        assert_eq!(w.front, 4);
        assert!(w.unplanned()[0].is_good());
    }

    #[test]
    fn a_batch_cut_at_the_envelope_byte_cap() {
        let now = Instant::now();
        let mut w = window_with(&["\"aaaa\"", "\"bbbb\"", "\"cccc\""], now);
        let caps = Limits {
            max_envelope_bytes: 15,
            max_envelopes: 1,
            ..limits(10)
        };
        // Two 7-byte messages fit under 15; the envelope closes before the third, and the
        // commit takes one envelope only.
        let p = plan(&Runs::one(w.unplanned()), caps, &queues(), "ts");
        assert_eq!(p.trim, 2);
        let read = send(&mut w, p.trim, 0);
        assert_eq!(read, Some(None));
        assert_eq!(w.unplanned().len(), 1);
        w.committed(p.trim);
        assert_eq!((w.front, w.planned), (2, 2));
    }
}
