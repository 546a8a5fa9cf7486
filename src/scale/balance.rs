//! Fair shares of a deployment's pipelines among its live replicas.
//!
//! Each replica learns which replicas are alive (the fleet job, `daemon::jobs::fleet`) and
//! holds at most its share: `pipelines / replicas`, plus one for the first
//! `pipelines % replicas` replicas in name order. So every replica holds the floor or the
//! ceiling of the fair share, and the shares add up to exactly the pipelines: while one is
//! free, some replica is under its share and takes it. A mover must [`Balance::claim`] a
//! place in the share before it tries a pipeline's leases, and gives the place back when the
//! leases go. A replica over its share hands pipelines over one at a time
//! ([`Claim::yield_if_over`]): it releases the leases and stays away, and a replica under its
//! share takes them. Two movers never move one pipeline at once whatever the shares say: the
//! fenced leases see to that; the shares only decide who tries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The replica's view of the fleet and of the places it holds. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Balance {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipelines: usize,
    /// Live replicas at the last beat; 0 until the first one.
    replicas: AtomicUsize,
    /// This replica's share at the last beat.
    share: AtomicUsize,
    /// Pipelines this replica holds or is trying to take.
    held: AtomicUsize,
    started: Instant,
    /// How long to wait for the first beat before acting as the only replica.
    first_beat_wait: Duration,
}

/// A place in this replica's share, given back on drop.
#[derive(Debug)]
pub struct Claim {
    balance: Balance,
    active: bool,
}

impl Balance {
    /// Shares of `pipelines` pipelines. Until the first beat (at most `first_beat_wait`), no
    /// place is given, so replicas started together do not all grab everything first.
    pub fn new(pipelines: usize, first_beat_wait: Duration) -> Self {
        Balance {
            inner: Arc::new(Inner {
                pipelines,
                replicas: AtomicUsize::new(0),
                share: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
                started: Instant::now(),
                first_beat_wait,
            }),
        }
    }

    /// The fleet's beat counted `replicas` live replicas, this one `rank`-th among them in
    /// name order (counting from 0).
    pub fn replicas_seen(&self, replicas: usize, rank: usize) {
        let (replicas, pipelines) = (replicas.max(1), self.inner.pipelines);
        let extra = usize::from(rank < pipelines % replicas);
        let share = pipelines / replicas + extra;
        self.inner.share.store(share, Ordering::Relaxed);
        self.inner.replicas.store(replicas, Ordering::Relaxed);
    }

    /// Live replicas at the last beat (0 before the first).
    pub fn replicas(&self) -> usize {
        self.inner.replicas.load(Ordering::Relaxed)
    }

    /// Pipelines this replica holds or is trying to take.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// This replica's share; 0 while the fleet is unknown, and every pipeline once the first
    /// beat is overdue (better one replica moving everything than nothing moving).
    pub fn share(&self) -> usize {
        match self.replicas() {
            0 if self.inner.started.elapsed() < self.inner.first_beat_wait => 0,
            0 => self.inner.pipelines,
            _ => self.inner.share.load(Ordering::Relaxed),
        }
    }

    /// A place in the share, if one is free.
    pub fn claim(&self) -> Option<Claim> {
        let share = self.share();
        self.inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h < share).then_some(h + 1)
            })
            .ok()
            .map(|_| Claim {
                balance: self.clone(),
                active: true,
            })
    }
}

impl Claim {
    /// When the replica holds more than its share, give this place up (one mover at a time
    /// wins this) and return true: the caller then hands its pipeline over.
    pub fn yield_if_over(&mut self) -> bool {
        if !self.active {
            return false;
        }
        // Before the fleet's first beat nothing is known; after it a share may well be 0 (more
        // replicas than pipelines), and then every place this replica holds is excess.
        if self.balance.replicas() == 0 {
            return false;
        }
        let share = self.balance.share();
        let given = self
            .balance
            .inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h > share).then(|| h - 1)
            })
            .is_ok();
        if given {
            self.active = false;
        }
        given
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.active {
            self.balance.inner.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_follow_the_fair_share() {
        let b = Balance::new(5, Duration::from_secs(60));
        assert!(b.claim().is_none(), "no place before the first beat");
        b.replicas_seen(2, 0);
        assert_eq!(b.share(), 3);
        let mut claims: Vec<Claim> = (0..3).filter_map(|_| b.claim()).collect();
        assert_eq!(claims.len(), 3);
        assert!(b.claim().is_none());
        drop(claims.pop());
        assert_eq!(b.held(), 2);
        assert!(b.claim().is_some(), "a dropped place is free again");
    }

    #[test]
    fn a_replica_whose_share_is_zero_hands_everything_over() {
        // Two pipelines, taken by a replica alone; then two more join before it in name
        // order, so its share is 0 (found by a hostile review: it used to keep both).
        let b = Balance::new(2, Duration::ZERO);
        b.replicas_seen(1, 0);
        let mut claims: Vec<Claim> = (0..2).filter_map(|_| b.claim()).collect();
        assert_eq!(b.held(), 2);
        b.replicas_seen(3, 2);
        assert_eq!(b.share(), 0);
        let handed = claims
            .iter_mut()
            .map(Claim::yield_if_over)
            .filter(|y| *y)
            .count();
        assert_eq!((handed, b.held()), (2, 0));
    }

    #[test]
    fn only_the_excess_is_handed_over() {
        let b = Balance::new(6, Duration::ZERO);
        b.replicas_seen(1, 0);
        let mut claims: Vec<Claim> = (0..6).filter_map(|_| b.claim()).collect();
        assert_eq!(b.held(), 6);
        b.replicas_seen(3, 2);
        let handed = claims
            .iter_mut()
            .map(Claim::yield_if_over)
            .filter(|y| *y)
            .count();
        assert_eq!((handed, b.held()), (4, 2));
        drop(claims);
        assert_eq!(b.held(), 0, "a yielded place is not given back twice");
    }

    #[test]
    fn shares_are_floor_or_ceiling_and_add_up() {
        for (pipelines, replicas) in [(4, 3), (3, 4), (7, 2), (6, 3), (1, 5)] {
            let shares: Vec<usize> = (0..replicas)
                .map(|rank| {
                    let b = Balance::new(pipelines, Duration::ZERO);
                    b.replicas_seen(replicas, rank);
                    b.share()
                })
                .collect();
            assert_eq!(shares.iter().sum::<usize>(), pipelines, "{shares:?}");
            let (lo, hi) = (pipelines / replicas, pipelines.div_ceil(replicas));
            assert!(shares.iter().all(|s| (lo..=hi).contains(s)), "{shares:?}");
        }
    }

    #[test]
    fn an_unknown_fleet_counts_as_one_replica_after_the_wait() {
        let b = Balance::new(4, Duration::ZERO);
        assert_eq!(b.share(), 4);
    }
}
