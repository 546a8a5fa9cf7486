//! The bound on message bytes in flight (`REDIS_MAX_INFLIGHT_BYTES`): what the tail windows
//! hold plus what the reads in flight may still bring.
//!
//! Each request's reads get a byte grant. The reader keeps elements only while the grant
//! lasts (the rest stream past and are dropped, and the read counts as cut short, not as
//! drained), and an element over the size limit costs only its two ends, so a read never
//! brings more than its grant. Grants are sized from the average message seen, so the reads
//! ask for fewer items as the held bytes approach the bound, rather than read and drop them.

/// Messages over the size limit up to this size are still held, and dead-lettered with their
/// bytes in the record; larger ones stream past the reader unheld and are dead-lettered by
/// reference (moved inside Redis).
pub const HELD_WHEN_TOO_LARGE: usize = 64 * 1024;

/// The longest message held whole, with `max_message_bytes` the size limit.
pub fn largest_held(max_message_bytes: usize) -> usize {
    max_message_bytes.max(HELD_WHEN_TOO_LARGE)
}

/// Sizes the reads' byte grants.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// `REDIS_MAX_INFLIGHT_BYTES`.
    bound: usize,
    /// The smallest grant worth a read: one message of the largest size kept.
    floor: usize,
    /// Average bytes held per message read lately (0: none read yet).
    average: usize,
}

/// The byte grant of a request's reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Bytes its reads may keep.
    pub bytes: usize,
    /// Items worth asking for: about what `bytes` holds at the average size.
    pub items: usize,
}

impl Inflight {
    /// The bound `bound`, for messages of at most `largest_kept` bytes (validated:
    /// `bound >= 2 * largest_kept`).
    pub fn new(bound: usize, largest_kept: usize) -> Self {
        Inflight {
            bound,
            floor: largest_kept.min(bound / 2).max(1),
            average: 0,
        }
    }

    /// The grant for the next request's reads of up to `want` items, with `held` bytes in
    /// the windows and `reserved` granted to the requests in flight; `None` when the room
    /// left is too small for a read to be worth it.
    pub fn grant(&self, held: usize, reserved: usize, want: usize) -> Option<Grant> {
        let room = self.bound.saturating_sub(held).saturating_sub(reserved);
        if room < self.floor {
            return None;
        }
        if self.average == 0 {
            return Some(Grant {
                bytes: room.min(self.floor.max(self.bound / 4)),
                items: want,
            });
        }
        // A quarter more than the average needs, so a read is rarely cut short.
        let needed = want.saturating_mul(self.average).saturating_mul(5) / 4;
        let bytes = room.min(needed.max(self.floor));
        let items = want.min(bytes / self.average).max(1);
        Some(Grant { bytes, items })
    }

    /// A read brought `items` messages holding `bytes`.
    pub fn observed(&mut self, items: usize, bytes: usize) {
        if items == 0 {
            return;
        }
        let latest = (bytes / items).max(1);
        self.average = if self.average == 0 {
            latest
        } else {
            (self.average * 3 + latest) / 4
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ask_for_fewer_items_as_the_held_bytes_approach_the_bound() {
        let mut b = Inflight::new(1000, 100);
        // Nothing seen yet: a quarter of the bound, as many items as wanted.
        assert_eq!(
            b.grant(0, 0, 50),
            Some(Grant {
                bytes: 250,
                items: 50
            })
        );
        b.observed(10, 100);
        // 10 bytes a message: 40 items want 500 bytes.
        assert_eq!(
            b.grant(0, 0, 40),
            Some(Grant {
                bytes: 500,
                items: 40
            })
        );
        // 700 held and 150 reserved: 150 left, 15 items.
        assert_eq!(
            b.grant(700, 150, 40),
            Some(Grant {
                bytes: 150,
                items: 15
            })
        );
        // Less room than one message of the largest size: no read.
        assert_eq!(b.grant(850, 60, 40), None);
    }

    #[test]
    fn a_grant_never_passes_the_room_left() {
        let mut b = Inflight::new(10_000, 1_000);
        b.observed(1, 5_000);
        for held in [0, 1_000, 5_000, 8_999, 9_000] {
            for reserved in [0, 500, 1_000] {
                if let Some(g) = b.grant(held, reserved, 1_000) {
                    assert!(
                        g.bytes + held + reserved <= 10_000,
                        "{g:?} {held} {reserved}"
                    );
                    assert!(g.bytes >= 1_000 && g.items >= 1);
                }
            }
        }
    }
}
