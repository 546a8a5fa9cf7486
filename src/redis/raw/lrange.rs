//! `LRANGE` replies, streamed into [`Item`]s as their bytes arrive.
//!
//! Each element is sliced out of the read buffer without a copy, and an element longer than
//! the keep limit is skipped as it streams past, keeping only its length and its first and
//! last `END_BYTES` (what the commit's tail fingerprint needs). A
//! byte budget bounds what one reply may hold; past it, elements are dropped as they stream
//! past and the reply says it was cut short.

use bytes::{Buf, Bytes, BytesMut};
use redis::Value;

use super::item::{Item, Skipped, ALWAYS_KEPT, SKIPPED_COST};
use super::resp::{length, line, malformed, parse_value, Malformed};

/// A bulk string's header at the start of `buf`, `$<len>\r\n`: its length and the bytes the
/// header takes; `None` if the header is not all there or is anything else (a null, a bad
/// length), which the general parser then handles.
fn bulk_header(buf: &[u8]) -> Option<(usize, usize)> {
    /// Digits enough for any length a server sends, few enough not to overflow.
    const MAX_DIGITS: usize = 18;
    if buf.first() != Some(&b'$') {
        return None;
    }
    let digits = buf
        .get(1..)?
        .iter()
        .take(MAX_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit());
    let (len, count) = digits.fold((0u64, 0usize), |(len, count), &d| {
        (len * 10 + u64::from(d - b'0'), count + 1)
    });
    if count == 0 || count > MAX_DIGITS || buf.get(1 + count..3 + count)? != b"\r\n" {
        return None;
    }
    Some((usize::try_from(len).ok()?, count + 3))
}

/// The rules a read's elements are kept by.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Longer elements are skipped (their bytes are never held).
    pub up_to: usize,
}

/// What became of an `LRANGE` reply.
#[derive(Debug, PartialEq)]
pub enum Items {
    /// The elements kept, head to tail as Redis sent them.
    Read {
        /// The elements kept.
        items: Vec<Item>,
        /// The byte budget ran out: the elements after the last one kept were dropped as
        /// they streamed past.
        truncated: bool,
    },
    /// Not an array: an error reply, or a reply of another type.
    Other(Value),
}

/// How the element being received is treated.
#[derive(Debug)]
enum Body {
    Keep,
    Skip(Skipped),
    Drop,
}

#[derive(Debug)]
enum State {
    /// Waiting for the array's header.
    Header,
    /// Waiting for an element's header; this many elements still to come.
    Element { left: usize },
    /// Receiving an element's `len` bytes, `done` of them so far.
    Body {
        left: usize,
        len: usize,
        done: usize,
        body: Body,
    },
    /// Its CRLF, after the body.
    End { left: usize, item: Option<Item> },
}

/// One `LRANGE` reply on its way in. The state lives here, not in a future, so a wait for
/// more bytes can be dropped and resumed.
#[derive(Debug)]
pub struct ItemsReply {
    keep: Keep,
    state: State,
    items: Vec<Item>,
    truncated: bool,
    /// Elements kept from here on are copied out of the read buffer instead of sliced:
    /// bytes streamed past went through it, and a slice would keep that whole buffer alive
    /// (one small message pinning a read buffer full of a skipped one).
    copy_kept: bool,
}

impl ItemsReply {
    /// A reply still to come.
    pub fn new(keep: Keep) -> Self {
        ItemsReply {
            keep,
            state: State::Header,
            items: Vec::new(),
            truncated: false,
            copy_kept: false,
        }
    }

    /// Bytes the next step needs at least in `buf` (a hint for the reader).
    pub fn wants(&self) -> usize {
        match &self.state {
            State::Body {
                len,
                done,
                body: Body::Keep,
                ..
            } => len - done + 2,
            _ => 1,
        }
    }

    /// Consume what `buf` holds of the reply, keeping elements while `budget` (bytes) lasts;
    /// `Some` once the reply is complete.
    pub fn advance(
        &mut self,
        buf: &mut BytesMut,
        budget: &mut usize,
    ) -> Result<Option<Items>, Malformed> {
        loop {
            if let State::Element { left } = self.state {
                let left = self.take_whole_elements(left, buf, budget)?;
                self.state = State::Element { left };
            }
            let state = std::mem::replace(&mut self.state, State::Header);
            let Some(next) = self.step(state, buf, budget)? else {
                return Ok(None);
            };
            match next {
                Step::Go(state) => self.state = state,
                Step::Finished(items) => return Ok(Some(items)),
            }
        }
    }

    /// The common case in one go: elements that are whole in `buf` and kept, taken without a
    /// state step each. Stops at the first element that is not (not all there, to be skipped,
    /// over the budget, or not a plain bulk string) and leaves it to [`Self::step`], which
    /// decides it exactly as for any other; returns the elements still to come.
    fn take_whole_elements(
        &mut self,
        mut left: usize,
        buf: &mut BytesMut,
        budget: &mut usize,
    ) -> Result<usize, Malformed> {
        while left > 0 && !self.truncated {
            let Some((len, header)) = bulk_header(buf) else {
                break;
            };
            let skip = len > self.keep.up_to && len > ALWAYS_KEPT;
            let Some(total) = header.checked_add(len).and_then(|n| n.checked_add(2)) else {
                break;
            };
            if skip || len > *budget || buf.len() < total {
                break;
            }
            if &buf[header + len..total] != b"\r\n" {
                return Err(malformed("bulk string not followed by CRLF"));
            }
            *budget -= len;
            buf.advance(header);
            let bytes = self.take_kept(buf, len);
            buf.advance(2);
            self.items.push(Item::Whole(bytes));
            left -= 1;
        }
        Ok(left)
    }

    /// The `len` bytes at the start of `buf`, an element kept whole: sliced out of the read
    /// buffer, or copied once bytes have streamed past (see `copy_kept`).
    fn take_kept(&self, buf: &mut BytesMut, len: usize) -> Bytes {
        if self.copy_kept {
            let copy = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            copy
        } else {
            buf.split_to(len).freeze()
        }
    }

    /// One step from `state`; `None` (state kept) when `buf` holds too little.
    fn step(
        &mut self,
        state: State,
        buf: &mut BytesMut,
        budget: &mut usize,
    ) -> Result<Option<Step>, Malformed> {
        match state {
            State::Header => self.header(buf),
            State::Element { left: 0 } => Ok(Some(Step::Finished(Items::Read {
                items: std::mem::take(&mut self.items),
                truncated: self.truncated,
            }))),
            State::Element { left } => self.element(left, buf, budget),
            State::Body {
                left,
                len,
                done,
                body: Body::Keep,
            } => {
                if buf.len() < len {
                    let body = Body::Keep;
                    return self.wait(State::Body {
                        left,
                        len,
                        done,
                        body,
                    });
                }
                let item = Some(Item::Whole(self.take_kept(buf, len)));
                Ok(Some(Step::Go(State::End { left, item })))
            }
            State::Body {
                left,
                len,
                done,
                body,
            } => self.stream_past(left, len, done, body, buf),
            State::End { left, item } => {
                if buf.len() < 2 {
                    return self.wait(State::End { left, item });
                }
                if &buf[..2] != b"\r\n" {
                    return Err(malformed("bulk string not followed by CRLF"));
                }
                buf.advance(2);
                self.items.extend(item);
                Ok(Some(Step::Go(State::Element { left })))
            }
        }
    }

    /// The reply's header: an array's count, or (not an array) the whole reply.
    fn header(&mut self, buf: &mut BytesMut) -> Result<Option<Step>, Malformed> {
        let Some((head, n)) = line(buf) else {
            return self.wait(State::Header);
        };
        if head.first() != Some(&b'*') {
            // Not an array: parse the whole value as a small reply.
            let Some((value, used)) = parse_value(buf)? else {
                return self.wait(State::Header);
            };
            buf.advance(used);
            return Ok(Some(Step::Finished(Items::Other(value))));
        }
        let count = length(&head[1..])?;
        buf.advance(n);
        Ok(Some(match count {
            None => Step::Finished(Items::Other(Value::Nil)),
            Some(left) => {
                self.items.reserve(left.min(64 * 1024));
                Step::Go(State::Element { left })
            }
        }))
    }

    /// An element's header: its length decides how its body is received.
    fn element(
        &mut self,
        left: usize,
        buf: &mut BytesMut,
        budget: &mut usize,
    ) -> Result<Option<Step>, Malformed> {
        let Some((head, n)) = line(buf) else {
            return self.wait(State::Element { left });
        };
        if head.first() != Some(&b'$') {
            return Err(malformed("LRANGE element is not a bulk string"));
        }
        let len = length(&head[1..])?.ok_or_else(|| malformed("null LRANGE element"))?;
        buf.advance(n);
        let body = self.body_for(len, budget);
        if !matches!(body, Body::Keep) && !self.copy_kept {
            self.own_kept_items();
        }
        Ok(Some(Step::Go(State::Body {
            left: left - 1,
            len,
            done: 0,
            body,
        })))
    }

    /// The body of an element that is not kept: consumed as it arrives, keeping its ends
    /// when it is skipped.
    fn stream_past(
        &mut self,
        left: usize,
        len: usize,
        done: usize,
        mut body: Body,
        buf: &mut BytesMut,
    ) -> Result<Option<Step>, Malformed> {
        let take = (len - done).min(buf.len());
        if let Body::Skip(skipped) = &mut body {
            skipped.saw(&buf[..take]);
        }
        buf.advance(take);
        let done = done + take;
        if done < len {
            return self.wait(State::Body {
                left,
                len,
                done,
                body,
            });
        }
        let item = match body {
            Body::Skip(skipped) => Some(Item::Skipped(skipped)),
            Body::Keep | Body::Drop => None,
        };
        Ok(Some(Step::Go(State::End { left, item })))
    }

    /// How an element of `len` bytes is received: kept while the budget lasts, skipped when
    /// over the keep limit; once the budget ran out, this and every later element is dropped.
    fn body_for(&mut self, len: usize, budget: &mut usize) -> Body {
        if self.truncated {
            return Body::Drop;
        }
        let skip = len > self.keep.up_to && len > ALWAYS_KEPT;
        let cost = if skip { SKIPPED_COST } else { len };
        if cost > *budget {
            self.truncated = true;
            return Body::Drop;
        }
        *budget -= cost;
        if skip {
            Body::Skip(Skipped::new(len))
        } else {
            Body::Keep
        }
    }

    /// An element is about to stream past: copy what this reply kept so far into memory of
    /// its own, and copy what it keeps from now on, so no kept slice holds a read buffer that
    /// skipped bytes went through. Only replies with skipped or dropped elements pay this.
    fn own_kept_items(&mut self) {
        self.copy_kept = true;
        for item in &mut self.items {
            if let Item::Whole(bytes) = item {
                *bytes = Bytes::copy_from_slice(bytes);
            }
        }
    }

    fn wait(&mut self, state: State) -> Result<Option<Step>, Malformed> {
        self.state = state;
        Ok(None)
    }
}

enum Step {
    Go(State),
    Finished(Items),
}

#[cfg(test)]
mod tests;
