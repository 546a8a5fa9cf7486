//! The fast check: one pass over the bytes, no allocation, no recursion, no value built.
//!
//! It decides exactly what the reference decides (the unit tests compare the two on
//! generated and mutated messages), but only answers yes or no: a message it refuses goes
//! to the reference, which names the reason.
//!
//! - Strings jump from stop to stop (`"`, `\`, control characters and non-ASCII bytes, marked
//!   64 bytes at a time by [`Stops`]); a non-ASCII byte starts a UTF-8 sequence that is
//!   checked on the spot (shortest form, no surrogate code points, at most U+10FFFF), so the
//!   input is never validated as a whole. `\u` escapes must pair their surrogates.
//! - Nesting is a counter and a bit per level (object or array): serde_json refuses the
//!   128th level whatever the profile says, so at most 127 bits are ever needed.
//! - A number is finite when its decimal magnitude (the power of ten of its first non-zero
//!   digit) is below 308 and infinite above; within [1e308, 1e309) serde_json's own parser
//!   decides, as it rounds.

use super::reference;
use super::stops::Stops;

/// Deepest nesting serde_json's parser takes: it refuses the 128th level.
const SERDE_JSON_DEPTH: usize = 127;

/// Explicit exponents saturate here: far past any double, far from overflowing an `i64`.
const EXPONENT_CAP: i64 = 1 << 40;

/// The span of the value (surrounding whitespace left out) if `bytes` is one JSON value in
/// the profile, nested at most `max_depth` levels; `None` otherwise.
pub(super) fn scan(bytes: &[u8], max_depth: usize) -> Option<(usize, usize)> {
    let limit = max_depth.min(SERDE_JSON_DEPTH);
    let mut i = skip_whitespace(bytes, 0);
    let start = i;
    let mut stops = Stops::new(bytes);
    let mut depth = 0;
    // Bit 0 is the innermost open container: 1 for an object, 0 for an array.
    let mut objects: u128 = 0;
    loop {
        // A value starts at `i`.
        match *bytes.get(i)? {
            b'"' => i = string(bytes, &mut stops, i + 1)?,
            b'{' => {
                depth += 1;
                if depth > limit {
                    return None;
                }
                objects = objects << 1 | 1;
                i = skip_whitespace(bytes, i + 1);
                if bytes.get(i) == Some(&b'}') {
                    i += 1;
                    depth -= 1;
                    objects >>= 1;
                } else {
                    i = member_name(bytes, &mut stops, i)?;
                    continue;
                }
            }
            b'[' => {
                depth += 1;
                if depth > limit {
                    return None;
                }
                objects <<= 1;
                i = skip_whitespace(bytes, i + 1);
                if bytes.get(i) == Some(&b']') {
                    i += 1;
                    depth -= 1;
                    objects >>= 1;
                } else {
                    continue;
                }
            }
            b't' => i = word(bytes, i, b"true")?,
            b'f' => i = word(bytes, i, b"false")?,
            b'n' => i = word(bytes, i, b"null")?,
            _ => i = number(bytes, i)?,
        }
        // A value ends at `i`: close containers until one has a next element.
        loop {
            if depth == 0 {
                return (skip_whitespace(bytes, i) == bytes.len()).then_some((start, i));
            }
            i = skip_whitespace(bytes, i);
            let in_object = objects & 1 == 1;
            match *bytes.get(i)? {
                b',' => {
                    i = skip_whitespace(bytes, i + 1);
                    if in_object {
                        i = member_name(bytes, &mut stops, i)?;
                    }
                    break;
                }
                b']' if !in_object => {}
                b'}' if in_object => {}
                _ => return None,
            }
            i += 1;
            depth -= 1;
            objects >>= 1;
        }
    }
}

#[inline(always)]
fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    // Every whitespace byte is at most a space: one compare settles the usual case.
    while let Some(&b) = bytes.get(i) {
        if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// A member name at `i` and its colon; returns where the member's value starts.
#[inline(always)]
fn member_name(bytes: &[u8], stops: &mut Stops<'_>, i: usize) -> Option<usize> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_whitespace(bytes, string(bytes, stops, i + 1)?);
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    Some(skip_whitespace(bytes, i + 1))
}

fn word(bytes: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    let end = i + word.len();
    (bytes.get(i..end)? == word).then_some(end)
}

/// The rest of a string whose opening quote is just before `i`; returns the index after
/// the closing quote.
#[inline(always)]
fn string(bytes: &[u8], stops: &mut Stops<'_>, mut i: usize) -> Option<usize> {
    loop {
        i = stops.next(i)?;
        match *bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i = escape(bytes, i + 1)?,
            0x80..=0xff => i = utf8_sequence(bytes, i)?,
            // A control character: only stops reach here.
            _ => return None,
        }
    }
}

/// An escape whose backslash is just before `i`; returns the index after it. A `\u` escape
/// of a leading surrogate must be followed at once by one of a trailing surrogate.
fn escape(bytes: &[u8], i: usize) -> Option<usize> {
    match *bytes.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => match hex4(bytes, i + 1)? {
            0xdc00..=0xdfff => None,
            0xd800..=0xdbff => {
                if bytes.get(i + 5..i + 7)? != b"\\u" {
                    return None;
                }
                matches!(hex4(bytes, i + 7)?, 0xdc00..=0xdfff).then_some(i + 11)
            }
            _ => Some(i + 5),
        },
        _ => None,
    }
}

/// Each byte's value as a hex digit; 0xff for a byte that is none.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut c: u8 = 0;
    loop {
        table[c as usize] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        };
        if c == u8::MAX {
            break table;
        }
        c += 1;
    }
};

fn hex4(bytes: &[u8], i: usize) -> Option<u32> {
    let &[a, b, c, d] = bytes.get(i..)?.first_chunk::<4>()?;
    let [a, b, c, d] = [a, b, c, d].map(|x| HEX_DIGITS[usize::from(x)]);
    if (a | b | c | d) & 0xf0 != 0 {
        return None;
    }
    Some(u32::from(a) << 12 | u32::from(b) << 8 | u32::from(c) << 4 | u32::from(d))
}

/// A UTF-8 sequence whose first byte, at `i`, is not ASCII; returns the index after it.
/// The ranges are those of RFC 3629: shortest form, no surrogates, at most U+10FFFF.
#[inline(never)]
fn utf8_sequence(bytes: &[u8], i: usize) -> Option<usize> {
    let (len, second) = match bytes[i] {
        0xc2..=0xdf => (2, 0x80..=0xbf),
        0xe0 => (3, 0xa0..=0xbf),
        0xe1..=0xec | 0xee..=0xef => (3, 0x80..=0xbf),
        0xed => (3, 0x80..=0x9f),
        0xf0 => (4, 0x90..=0xbf),
        0xf1..=0xf3 => (4, 0x80..=0xbf),
        0xf4 => (4, 0x80..=0x8f),
        _ => return None,
    };
    let sequence = bytes.get(i..i + len)?;
    let continued = sequence[2..].iter().all(|&c| c & 0xc0 == 0x80);
    (second.contains(&sequence[1]) && continued).then_some(i + len)
}

fn digits(bytes: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = bytes.get(i) {
        i += 1;
    }
    i
}

/// A number at `start` (RFC 8259 grammar); returns the index after it if it is finite as
/// a double.
#[inline]
fn number(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    let integer = i;
    match *bytes.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(bytes, i + 1),
        _ => return None,
    }
    let integer_digits = i - integer;
    let integer_is_zero = bytes[integer] == b'0';
    let mut fraction = i..i;
    if bytes.get(i) == Some(&b'.') {
        let end = digits(bytes, i + 1);
        if end == i + 1 {
            return None;
        }
        fraction = i + 1..end;
        i = end;
    }
    let mut exponent: i64 = 0;
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        let negative = bytes.get(i) == Some(&b'-');
        if let Some(b'-' | b'+') = bytes.get(i) {
            i += 1;
        }
        let first = i;
        while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
            exponent = (exponent * 10 + i64::from(c - b'0')).min(EXPONENT_CAP);
            i += 1;
        }
        if i == first {
            return None;
        }
        if negative {
            exponent = -exponent;
        }
    }
    // The power of ten of the first non-zero digit.
    let magnitude = if integer_is_zero {
        if exponent <= 308 {
            return Some(i);
        }
        match bytes[fraction].iter().position(|&c| c != b'0') {
            // Zero, however it is written, and whatever its exponent.
            None => return Some(i),
            Some(zeros) => exponent
                .saturating_sub(saturating_i64(zeros))
                .saturating_sub(1),
        }
    } else {
        saturating_i64(integer_digits)
            .saturating_sub(1)
            .saturating_add(exponent)
    };
    match magnitude {
        ..308 => Some(i),
        308 => reference::number_is_finite(&bytes[start..i]).then_some(i),
        _ => None,
    }
}
/// A digit count as a power of ten; counts past `i64::MAX` (not possible in memory) saturate.
fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
