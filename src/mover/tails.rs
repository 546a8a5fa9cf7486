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
}

impl Tails {
    /// Empty windows for `sources` source lists.
    pub fn new(sources: usize) -> Self {
        Tails {
            windows: (0..sources.max(1)).map(|_| TailWindow::new()).collect(),
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
        let reads: Vec<(usize, TailRead)> = self
            .windows
            .iter()
            .enumerate()
            .filter_map(|(k, window)| {
                let trim = trims.get(k).copied().unwrap_or(0);
                window.read_for(trim, read_ahead, committing).map(|r| (k, r))
            })
            .collect();
        (committing || !reads.is_empty()).then_some(reads)
    }

    /// A request that commits `trims` and makes `reads` was sent.
    pub fn reserve(&mut self, trims: &[usize], reads: &[(usize, TailRead)]) {
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

    /// A read of source `source` came back with `items`; returns how many were kept.
    pub fn read_returned<I>(&mut self, source: usize, read: TailRead, items: I) -> usize
    where
        I: IntoIterator<Item = Peeked>,
        I::IntoIter: ExactSizeIterator,
    {
        self.windows
            .get_mut(source)
            .map_or(0, |w| w.read_returned(read, items))
    }

    /// Whether no window holds a copy.
    pub fn is_empty(&self) -> bool {
        self.windows.iter().all(TailWindow::is_empty)
    }

    /// When the oldest good message not yet planned, in any source, was first seen.
    pub fn oldest_unplanned(&self) -> Option<Instant> {
        self.windows
            .iter()
            .filter_map(|w| plan::oldest_waiting(w.unplanned()))
            .min()
    }

    /// The mover is about to wait for new messages: the next request reads every source.
    pub fn expect_more(&mut self) {
        self.windows.iter_mut().for_each(TailWindow::expect_more);
    }

    /// Drop every copy and position. Safe at any time: every copy is still in Redis.
    pub fn reset(&mut self) {
        self.windows.iter_mut().for_each(TailWindow::reset);
    }
}
