//! The tails of every source list: one [`TailWindow`] per source, highest priority first.
//!
//! Strict priority lives here: the next plan may take from a source only when every source
//! above it was drained at its last read, so nothing of a higher list waits unread in Redis
//! while a lower one is planned. A request that commits anything also reads every drained
//! source again, so a message that lands on a higher list is seen within one round trip, and
//! leaves with one of the next commits.

use std::time::Instant;

use super::plan::{self, Peeked, Runs};
use super::window::{TailRead, TailWindow};

/// The mover's copy of every source's tail.
#[derive(Debug)]
pub struct Tails {
    windows: Vec<TailWindow>,
    /// The mover waited: the next request reads every source again, drained or not.
    recheck: bool,
}

impl Tails {
    /// Empty windows for `sources` source lists.
    pub fn new(sources: usize) -> Self {
        Tails {
            windows: (0..sources.max(1)).map(|_| TailWindow::new()).collect(),
            recheck: false,
        }
    }

    /// What the next plan may take: each source's unplanned run, down the priority order for
    /// as long as every source before was drained.
    pub fn runs(&self) -> Runs<'_> {
        let mut runs = Vec::with_capacity(self.windows.len());
        for window in &self.windows {
            runs.push(window.unplanned());
            if !window.is_drained() {
                break;
            }
        }
        Runs::new(runs)
    }

    /// The reads for the next request, given the items its commit trims from each source
    /// (`trims`, as many as the plan's runs, or fewer): `(source, read)` pairs. `None` when
    /// the request would neither commit nor read.
    pub fn next_reads(&self, trims: &[usize], read_ahead: usize) -> Option<Vec<(usize, TailRead)>> {
        let committing = trims.iter().any(|&t| t > 0);
        let recheck = committing || self.recheck;
        let reads: Vec<(usize, TailRead)> = self
            .windows
            .iter()
            .enumerate()
            .filter_map(|(k, window)| {
                let trim = trims.get(k).copied().unwrap_or(0);
                window.read_for(trim, read_ahead, recheck).map(|r| (k, r))
            })
            .collect();
        (committing || !reads.is_empty()).then_some(reads)
    }

    /// A request that commits `trims` and makes `reads` was sent.
    pub fn reserve(&mut self, trims: &[usize], reads: &[(usize, TailRead)]) {
        if !reads.is_empty() {
            self.recheck = false;
        }
        for (k, window) in self.windows.iter_mut().enumerate() {
            let trim = trims.get(k).copied().unwrap_or(0);
            let read = reads.iter().find(|(s, _)| *s == k).map(|(_, r)| *r);
            window.reserve(trim, read);
        }
    }

    /// The oldest request in flight committed `trims`.
    pub fn committed(&mut self, trims: &[usize]) {
        for (window, &trim) in self.windows.iter_mut().zip(trims) {
            window.committed(trim);
        }
    }

    /// A read of source `source` came back with `items` (`cut_short` by its byte grant);
    /// returns how many were kept.
    pub fn read_returned<I>(
        &mut self,
        source: usize,
        read: TailRead,
        items: I,
        cut_short: bool,
    ) -> usize
    where
        I: IntoIterator<Item = Peeked>,
        I::IntoIter: ExactSizeIterator,
    {
        self.windows
            .get_mut(source)
            .map_or(0, |w| w.read_returned(read, items, cut_short))
    }

    /// Memory the copies of every source's tail take.
    pub fn held_bytes(&self) -> usize {
        self.windows.iter().map(TailWindow::held_bytes).sum()
    }

    /// Whether no window holds a copy.
    pub fn is_empty(&self) -> bool {
        self.windows.iter().all(TailWindow::is_empty)
    }

    /// When the oldest good message the next plan may take was first seen: the clock of the
    /// partial batch that waits, which the plan times by its oldest member too.
    pub fn oldest_unplanned(&self) -> Option<Instant> {
        let runs = self.runs();
        (0..runs.sources())
            .filter_map(|k| plan::oldest_waiting(runs.run(k)))
            .min()
    }

    /// The mover is about to wait for new messages: the next request reads every source.
    /// A source that was drained still counts as drained for the plan until that read
    /// returns: a plan made meanwhile may pass it, which delays a message that landed there
    /// by one round trip at most.
    pub fn expect_more(&mut self) {
        self.recheck = true;
    }

    /// Drop every copy and position. Safe at any time: every copy is still in Redis.
    pub fn reset(&mut self) {
        self.windows.iter_mut().for_each(TailWindow::reset);
        self.recheck = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mover::plan::tests::PROFILE;

    fn peeked(n: usize) -> Vec<Peeked> {
        let now = Instant::now();
        (0..n)
            .map(|i| Peeked::new(i.to_string().into_bytes(), PROFILE, now))
            .collect()
    }

    /// Send the first request (one read per source) and answer each read with `got[k]` items.
    fn first_reads(t: &mut Tails, read_ahead: usize, got: &[usize]) {
        let reads = t.next_reads(&[], read_ahead).unwrap();
        assert_eq!(reads.len(), got.len(), "every source is read at first");
        t.reserve(&[], &reads);
        for (k, read) in reads {
            t.read_returned(k, read, peeked(got[k]), false);
        }
    }

    #[test]
    fn a_plan_passes_a_source_only_once_it_was_drained() {
        let mut t = Tails::new(3);
        // The first source filled its read (more may wait in Redis); the others came back short.
        first_reads(&mut t, 4, &[4, 2, 1]);
        let runs = t.runs();
        assert_eq!(
            (runs.sources(), runs.len()),
            (1, 4),
            "only the first source"
        );
        // Once the first source is drained too, the plan sees all three, in order.
        let mut t = Tails::new(3);
        first_reads(&mut t, 4, &[3, 4, 1]);
        let runs = t.runs();
        assert_eq!(
            (runs.sources(), runs.len()),
            (2, 7),
            "stops after the undrained second"
        );
    }

    #[test]
    fn a_commit_reads_every_drained_source_again() {
        let mut t = Tails::new(2);
        first_reads(&mut t, 4, &[0, 3]);
        // Nothing to commit and both sources drained: no request at all.
        assert_eq!(t.next_reads(&[0, 0], 4), None);
        // A commit of the second source's three items also looks at the first source again,
        // where a message may have landed since.
        let reads = t.next_reads(&[0, 3], 4).unwrap();
        let sources: Vec<usize> = reads.iter().map(|(k, _)| *k).collect();
        assert_eq!(sources, [0, 1]);
        assert_eq!((reads[0].1.skip, reads[0].1.count), (0, 4));
        assert_eq!((reads[1].1.skip, reads[1].1.count), (0, 4));
        t.reserve(&[0, 3], &reads);
        t.committed(&[0, 3]);
        assert_eq!(t.read_returned(0, reads[0].1, peeked(1), false), 1);
        assert_eq!(t.read_returned(1, reads[1].1, peeked(0), false), 0);
        // The message that landed on the first source now leads the next plan.
        let runs = t.runs();
        assert_eq!(runs.get(0).map(Peeked::bytes), Some(&b"0"[..]));
        assert_eq!(runs.len(), 1);
    }

    /// Two requests in flight with a backlog on the lower source: both look at the drained
    /// higher source (a message landing there waits behind one commit, not three), and the
    /// second look is dropped when the first found something, so nothing is held twice.
    #[test]
    fn every_pipelined_request_reads_a_drained_higher_source() {
        let mut t = Tails::new(2);
        first_reads(&mut t, 8, &[0, 8]);
        let r1 = t.next_reads(&[0, 4], 8).unwrap();
        t.reserve(&[0, 4], &r1);
        let r2 = t.next_reads(&[0, 4], 8).unwrap();
        t.reserve(&[0, 4], &r2);
        let sources = |r: &[(usize, TailRead)]| r.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(sources(&r1), [0, 1]);
        assert_eq!(
            sources(&r2),
            [0, 1],
            "the second request looks at source 0 too"
        );
        assert_eq!(
            r1[0].1.start, r2[0].1.start,
            "both look from the end of what is held"
        );
        // The first look finds one message; the second, which would repeat it, is dropped.
        t.committed(&[0, 4]);
        assert_eq!(t.read_returned(0, r1[0].1, peeked(1), false), 1);
        assert_eq!(t.read_returned(1, r1[1].1, peeked(0), false), 0);
        t.committed(&[0, 4]);
        assert_eq!(t.read_returned(0, r2[0].1, peeked(2), false), 0);
        assert_eq!(t.runs().run(0).len(), 1);
        // And the next look starts right after the message held.
        let r3 = t.next_reads(&[1, 0], 8).unwrap();
        assert_eq!((r3[0].0, r3[0].1.start), (0, 1));
    }
}
