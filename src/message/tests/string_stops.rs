//! Strings and their stops: the SIMD marks of the bytes a string cannot skip against the
//! scalar definition, and every byte value at every offset of a block through the scan
//! against the reference.

use super::{check_message, check_message_reference, scan_agrees, stops, Profile, PROFILE};

/// The string scan looks at 64-byte blocks: a byte that needs a look is found at any offset
/// of a long string, whatever the offset of the string itself, and a stop of several bytes
/// may straddle two blocks.
#[test]
fn a_stop_at_any_offset_of_a_long_string_is_seen() {
    let profile = Profile::default();
    for lead in [0, 1, 30, 61, 62, 63, 64] {
        for stop in [
            &b"\""[..],
            b"\\n",
            b"\\u00e9",
            b"\x01",
            "é".as_bytes(),
            b"\xff",
            b"\\q",
            b"\\\\",
            b"\\\\\\\"",
            b"\\ud83d\\ude00",
            b"\\ud83d\\u0041",
            "😀".as_bytes(),
            b"\xf0\x9f\x98",
        ] {
            for at in 0..140 {
                let mut m = vec![b' '; lead];
                m.extend_from_slice(b"[\"");
                m.extend(std::iter::repeat_n(b'a', at));
                m.extend_from_slice(stop);
                m.extend(std::iter::repeat_n(b'b', 75 - at % 7));
                m.extend_from_slice(b"\"]");
                assert_eq!(
                    check_message(&m, profile).map(<[u8]>::len),
                    check_message_reference(&m, profile).map(<[u8]>::len),
                    "{}",
                    String::from_utf8_lossy(&m)
                );
            }
        }
    }
}

/// The scalar definition of a stop: a byte a string cannot skip.
fn is_stop(b: u8) -> bool {
    b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b)
}

/// The first stop at or after `from`, by the scalar definition.
fn scalar_next(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| is_stop(b))
        .map(|p| from + p)
}

/// Every byte value at every offset of a block (and of the padded last block), against the
/// scalar definition: the SIMD range test must mark exactly `"`, `\`, bytes below 0x20 and
/// bytes from 0x80, and so leave DEL (0x7f) and the space alone.
#[test]
fn stops_mark_every_byte_value_as_the_scalar_definition_does() {
    for len in [1usize, 2, 17, 63, 64, 65, 128, 130] {
        for at in 0..len {
            let mut bytes = vec![b'a'; len];
            // Where to ask from: the ends, around the byte, around every block edge.
            let mut froms = vec![0, len, at.saturating_sub(1), at, at + 1];
            froms.extend(
                [63, 64, 65, 127, 128, 129]
                    .into_iter()
                    .filter(|&f| f <= len),
            );
            froms.sort_unstable();
            froms.dedup();
            for b in 0..=255u8 {
                bytes[at] = b;
                let want = |from: usize| (from <= at && is_stop(b)).then_some(at);
                for &from in &froms {
                    assert_eq!(
                        stops::Stops::new(&bytes).next(from),
                        want(from),
                        "byte {b:#04x} at {at} of {len}, from {from}"
                    );
                }
                // One `Stops` asked forwards, then backwards, so that `from` is often in a
                // block before the cached one.
                let mut shared = stops::Stops::new(&bytes);
                for &from in froms.iter().chain(froms.iter().rev()) {
                    assert_eq!(
                        shared.next(from),
                        want(from),
                        "byte {b:#04x} at {at} of {len}, from {from} (shared)"
                    );
                }
            }
        }
    }
}

/// Random bytes, dense and sparse in stops, asked in random order with one `Stops`: the
/// cached block must never answer for another block.
#[test]
fn stops_answer_any_order_of_queries() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let fillers: &[u8] = b"a \x7f~!#[]{}:,0123456789";
    for round in 0..4000 {
        let len = rng.usize(0..=260);
        // Percent of random bytes (about half of them stops) among plain ones.
        let density = [0, 1, 3, 10, 30, 100][rng.usize(..6)];
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.u32(0..100) < density {
                    rng.u8(..)
                } else {
                    fillers[rng.usize(..fillers.len())]
                }
            })
            .collect();
        let mut stops = stops::Stops::new(&bytes);
        for _ in 0..200 {
            let from = rng.usize(0..=len);
            assert_eq!(
                stops.next(from),
                scalar_next(&bytes, from),
                "round {round}, from {from} of {bytes:?}"
            );
        }
    }
}

/// Every byte value right after `"` plus 0..=130 plain bytes, so at every offset of three
/// blocks: alone, followed by continuation bytes or escape tails, with the string closed,
/// left open, or closed and padded so that the message is a multiple of 64 bytes.
#[test]
fn every_byte_value_at_every_offset_of_a_string_is_decided_alike() {
    let tails: &[&[u8]] = &[
        b"",
        b"\x80",
        b"\xbf",
        b"\x80\x80",
        b"\xa0\x80",
        b"\x9f\xbf",
        b"\x80\x80\x80",
        b"\x90\x80\x80",
        b"\x8f\xbf\xbf",
        b"\xbf\xbf\xbf",
        b"\x80\x7f",
        b"n",
        b"u00e9",
        b"ud83d\\ude00",
        b"ud83d",
        b"\"",
    ];
    let mut failures = Vec::new();
    for plain in 0..=130usize {
        for b in 0..=255u8 {
            for tail in tails {
                for end in 0..3 {
                    // A value alone, or a member name.
                    for open in [&b"\""[..], b"{\""] {
                        let mut m = open.to_vec();
                        m.extend(std::iter::repeat_n(b'a', plain));
                        m.push(b);
                        m.extend_from_slice(tail);
                        if end > 0 {
                            m.push(b'"');
                        }
                        let closer: &[u8] = if open.len() == 1 { b"" } else { b":1}" };
                        if end == 2 {
                            // Pad so that the whole message is a multiple of 64 bytes.
                            let pad = (64 - (m.len() + closer.len()) % 64) % 64;
                            m.extend(std::iter::repeat_n(b' ', pad));
                        }
                        m.extend_from_slice(closer);
                        assert!(end != 2 || m.len() % 64 == 0);
                        if let Err(e) = scan_agrees(&m, PROFILE) {
                            failures.push(e);
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures, first: {}",
        failures.len(),
        failures[0]
    );
}
