//! What the reply reader keeps of an `LRANGE` element: the whole element, or for one too
//! large to hold, its length and two ends.

use bytes::Bytes;

/// Bytes kept from each end of a skipped element (see `fingerprint` in the commit).
pub(super) const END_BYTES: usize = 1024;

/// Elements this long or shorter are always kept whole: a skipped element costs about as much.
pub(super) const ALWAYS_KEPT: usize = 2 * END_BYTES;

/// Memory a skipped element holds: its two ends and some bookkeeping.
pub const SKIPPED_COST: usize = ALWAYS_KEPT + 64;

/// An element of an `LRANGE` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The whole element, sliced out of the read buffer.
    Whole(Bytes),
    /// An element longer than the keep limit: skipped as it streamed past.
    Skipped(Skipped),
}

/// What is kept of a skipped element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its length in bytes.
    pub len: usize,
    /// Its first [`END_BYTES`] bytes.
    pub head: Vec<u8>,
    /// Its last [`END_BYTES`] bytes.
    pub tail: Vec<u8>,
}

impl Skipped {
    pub(super) fn new(len: usize) -> Self {
        Skipped {
            len,
            head: Vec::with_capacity(END_BYTES),
            tail: Vec::with_capacity(END_BYTES),
        }
    }

    /// `chunk` streamed past.
    pub(super) fn saw(&mut self, chunk: &[u8]) {
        let room = END_BYTES - self.head.len();
        self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        if chunk.len() >= END_BYTES {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - END_BYTES..]);
        } else {
            let over = (self.tail.len() + chunk.len()).saturating_sub(END_BYTES);
            self.tail.drain(..over);
            self.tail.extend_from_slice(chunk);
        }
    }
}
