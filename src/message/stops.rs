//! The bytes a string cannot skip, found 64 at a time with SIMD compares.
//!
//! Most of a message's bytes are inside strings, and inside a string only four kinds of
//! byte need a look: the closing quote `"`, a backslash that starts an escape, a control
//! character (refused) and a non-ASCII byte (the start of a UTF-8 sequence to check).
//! [`Stops`] marks all four in a block of 64 bytes with one bit per byte: per 16 bytes, three
//! compares (the quote, the backslash, and a signed "below 0x20" that also catches every
//! byte from 0x80) through `wide`, which compiles them to SSE2 or NEON with no `unsafe` here,
//! and one move of the byte masks into bits. The scan then jumps from stop to stop with
//! `trailing_zeros`.
//!
//! The mask of a block depends on its bytes alone, so a string may start anywhere and the
//! blocks a message's structure skips are never classified. The last block of a message
//! is padded with spaces, which are no stop.

use wide::i8x16;

/// Bytes per block: one bit each in a `u64`.
const BLOCK: usize = 64;

/// The stops of one message, block by block; it keeps the last block it classified.
#[derive(Debug)]
pub(super) struct Stops<'a> {
    bytes: &'a [u8],
    /// The index of the block in `mask`; `usize::MAX` before the first.
    block: usize,
    mask: u64,
}

impl<'a> Stops<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            block: usize::MAX,
            mask: 0,
        }
    }

    /// The index of the first stop at or after `from`; `None` if there is none before the
    /// end of the message.
    #[inline(always)]
    pub(super) fn next(&mut self, from: usize) -> Option<usize> {
        let block = from / BLOCK;
        if block == self.block {
            let ahead = self.mask & (u64::MAX << (from % BLOCK));
            if ahead != 0 {
                return Some(block * BLOCK + ahead.trailing_zeros() as usize);
            }
        }
        self.next_in_new_blocks(from)
    }

    /// [`Self::next`] when it needs blocks not classified yet.
    #[inline(never)]
    fn next_in_new_blocks(&mut self, mut from: usize) -> Option<usize> {
        loop {
            let block = from / BLOCK;
            if block != self.block {
                self.mask = stops_of(self.bytes.get(block * BLOCK..)?);
                self.block = block;
            }
            let ahead = self.mask & (u64::MAX << (from % BLOCK));
            if ahead != 0 {
                return Some(block * BLOCK + ahead.trailing_zeros() as usize);
            }
            from = (block + 1) * BLOCK;
        }
    }
}

/// The stops among the first 64 bytes of `rest` (or all of it, if shorter), one bit each.
fn stops_of(rest: &[u8]) -> u64 {
    match rest.first_chunk::<BLOCK>() {
        Some(block) => stops_in(block),
        None => {
            let mut padded = [b' '; BLOCK];
            padded[..rest.len()].copy_from_slice(rest);
            stops_in(&padded)
        }
    }
}

#[inline(always)]
fn stops_in(block: &[u8; BLOCK]) -> u64 {
    // The bytes as signed: those of 0x80 and above are negative, so one signed compare
    // finds them and the control characters together.
    let quote = i8x16::splat(0x22);
    let backslash = i8x16::splat(0x5c);
    let space = i8x16::splat(0x20);
    let mut mask = 0;
    for (lane, chunk) in block.chunks_exact(16).enumerate() {
        let mut array = [0u8; 16];
        array.copy_from_slice(chunk);
        let v: i8x16 = bytemuck::cast(array);
        let stops = v.simd_eq(quote) | v.simd_eq(backslash) | v.simd_lt(space);
        mask |= u64::from(stops.to_bitmask()) << (lane * 16);
    }
    mask
}
