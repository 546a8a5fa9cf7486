//! Scheduled mode's permits: the scheduler grants up to `max_batches_per_tick` batches per tick and
//! the mover spends them. Unused permits do not pile up: each tick resets the allowance, so
//! missed ticks are coalesced rather than bunched.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Shared allowance of batches. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BatchAllowance {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    available: Mutex<usize>,
    granted: Notify,
}

impl BatchAllowance {
    /// No permits until the first tick.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tick: the allowance becomes `max` (not `max` more).
    pub fn refill(&self, max: usize) {
        *self.lock() = max;
        self.inner.granted.notify_waiters();
    }

    /// Permits left in this tick.
    pub fn available(&self) -> usize {
        *self.lock()
    }

    /// Wait until at least one permit is available; `false` if cancelled first.
    pub async fn wait(&self, cancel: &CancellationToken) -> bool {
        loop {
            let granted = self.inner.granted.notified();
            tokio::pin!(granted);
            granted.as_mut().enable();
            if self.available() > 0 {
                return true;
            }
            tokio::select! {
                _ = &mut granted => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// Give back `n` permits (a commit Redis refused for back-pressure), up to `max`.
    pub fn refund(&self, n: usize, max: usize) {
        let mut available = self.lock();
        *available = (*available + n).min(max);
    }

    /// Spend `n` permits (the batches just committed).
    pub fn spend(&self, n: usize) {
        let mut available = self.lock();
        *available = available.saturating_sub(n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        // The guarded value is a plain counter; a poisoned lock still holds a valid count.
        self.inner
            .available
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refill_resets_rather_than_accumulates() {
        let p = BatchAllowance::new();
        p.refill(3);
        p.refill(3);
        assert_eq!(p.available(), 3);
        p.spend(2);
        assert_eq!(p.available(), 1);
        p.spend(5);
        assert_eq!(p.available(), 0);
        let cancel = CancellationToken::new();
        let waiter = {
            let p = p.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { p.wait(&cancel).await })
        };
        tokio::task::yield_now().await;
        p.refill(1);
        assert!(waiter.await.unwrap());
        p.spend(1);
        cancel.cancel();
        assert!(!p.wait(&cancel).await);
    }
}
