//! LRANGE replies streamed into items against a model, fed whole, byte by byte and split at
//! random, including malformed and null elements.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use redis::Value;

use super::*;
use crate::redis::raw::item::{Item, Skipped, END_BYTES, SKIPPED_COST};
use crate::redis::raw::resp::tests::encode;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lrange_replies_stream_into_items_however_they_are_split(
        lens in proptest::collection::vec(prop_oneof![0usize..40, 2040usize..2100, 3000usize..9000], 0..12),
        up_to in prop_oneof![Just(usize::MAX), 0usize..5000],
        budget in prop_oneof![Just(usize::MAX), 0usize..40_000],
        chunk in 1usize..3000,
    ) {
        let elements: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| u8::try_from((i * 31 + j * 7) % 251).unwrap()).collect())
            .collect();
        let reply = Value::Array(elements.iter().cloned().map(Value::BulkString).collect());
        let mut wire = Vec::new();
        encode(&reply, &mut wire);
        wire.extend_from_slice(b"+OK\r\n");

        // The model: kept whole while the budget lasts, skipped (ends only) over the limit,
        // and nothing after the first element that does not fit.
        let mut left = budget;
        let mut expected = Vec::new();
        let mut truncated = false;
        for e in &elements {
            let skip = e.len() > up_to && e.len() > 2 * END_BYTES;
            let cost = if skip { SKIPPED_COST } else { e.len() };
            if cost > left {
                truncated = true;
                break;
            }
            left -= cost;
            expected.push(if skip {
                Item::Skipped(Skipped {
                    len: e.len(),
                    head: e[..END_BYTES].to_vec(),
                    tail: e[e.len() - END_BYTES..].to_vec(),
                })
            } else {
                Item::Whole(Bytes::from(e.clone()))
            });
        }

        // Fed `chunk` bytes at a time, as reads would bring them.
        let mut reader = ItemsReply::new(Keep { up_to });
        let mut buf = BytesMut::new();
        let mut budget_left = budget;
        let mut fed = 0;
        let got = loop {
            if let Some(items) = reader.advance(&mut buf, &mut budget_left).unwrap() {
                break items;
            }
            prop_assert!(fed < wire.len(), "wants more than the reply");
            let end = (fed + chunk).min(wire.len());
            buf.extend_from_slice(&wire[fed..end]);
            fed = end;
        };
        prop_assert_eq!(got, Items::Read { items: expected, truncated });
        // Exactly the reply was consumed: the next one is intact.
        buf.extend_from_slice(&wire[fed..]);
        prop_assert_eq!(&buf[..], b"+OK\r\n");
    }
}

#[test]
fn an_lrange_error_or_nil_is_not_an_array() {
    let mut buf = BytesMut::from(&b"-WRONGTYPE Operation against a key\r\n"[..]);
    let got = ItemsReply::new(Keep { up_to: 10 })
        .advance(&mut buf, &mut usize::MAX.clone())
        .unwrap();
    assert!(
        matches!(got, Some(Items::Other(Value::ServerError(_)))),
        "{got:?}"
    );
    let mut buf = BytesMut::from(&b"*-1\r\n"[..]);
    let got = ItemsReply::new(Keep { up_to: 10 })
        .advance(&mut buf, &mut usize::MAX.clone())
        .unwrap();
    assert_eq!(got, Some(Items::Other(Value::Nil)));
}

#[test]
fn malformed_lrange_replies_are_errors() {
    // Elements whole in the buffer (taken in one go) and elements arriving byte by byte
    // (taken a step at a time) are refused alike.
    for wire in [
        &b"*1\r\n:5\r\n"[..],
        b"*2\r\n$1\r\na\r\n$3\r\nabcd\r\n",
        b"*1\r\n$1\r\nab\n",
        b"*1\r\n$-2\r\n",
        b"*1\r\n$1x\r\na\r\n",
    ] {
        let mut whole = BytesMut::from(wire);
        let got = ItemsReply::new(Keep { up_to: 10 }).advance(&mut whole, &mut 100);
        assert!(got.is_err(), "{got:?}");
        let mut reader = ItemsReply::new(Keep { up_to: 10 });
        let mut buf = BytesMut::new();
        let failed = wire.iter().any(|&b| {
            buf.extend_from_slice(&[b]);
            reader.advance(&mut buf, &mut 100).is_err()
        });
        assert!(failed, "{:?}", String::from_utf8_lossy(wire));
    }
}

/// How feeding an `LRANGE` reply to an [`ItemsReply`] ended, once the wire ran out or
/// earlier.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done(Items),
    Failed(Malformed),
    /// The wire ran out first.
    Waiting,
}

/// One reader fed `wire` in reads of `chunks` bytes (cycled): what became of it, the budget
/// left, the bytes consumed and whether kept elements were being copied.
#[derive(Debug, PartialEq)]
struct Run {
    outcome: Outcome,
    budget_left: usize,
    consumed: usize,
    copy_kept: bool,
}

fn run(wire: &[u8], up_to: usize, budget: usize, chunks: &[usize]) -> Run {
    let mut reader = ItemsReply::new(Keep { up_to });
    // One allocation for the whole wire, so where a kept element's bytes live tells whether
    // it was sliced out of the read buffer or copied.
    let mut buf = BytesMut::with_capacity(wire.len());
    let start = buf.as_ptr() as usize;
    let end = start + buf.capacity();
    let mut budget_left = budget;
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    let outcome = loop {
        match reader.advance(&mut buf, &mut budget_left) {
            Ok(Some(items)) => break Outcome::Done(items),
            Err(e) => break Outcome::Failed(e),
            Ok(None) if fed == wire.len() => break Outcome::Waiting,
            Ok(None) => {
                let n = *sizes.next().unwrap();
                let to = (fed + n).min(wire.len());
                buf.extend_from_slice(&wire[fed..to]);
                fed = to;
            }
        }
    };
    if let Outcome::Done(Items::Read { items, .. }) = &outcome {
        // Sliced while nothing streamed past, copied (all of them) once something did.
        for item in items {
            if let Item::Whole(bytes) = item {
                let at = bytes.as_ptr() as usize;
                let sliced = (start..end).contains(&at);
                assert!(
                    bytes.is_empty() || sliced != reader.copy_kept,
                    "element of {} bytes sliced: {sliced}, copy_kept: {}",
                    bytes.len(),
                    reader.copy_kept
                );
            }
        }
    }
    Run {
        outcome,
        budget_left,
        consumed: fed - buf.len(),
        copy_kept: reader.copy_kept,
    }
}

/// The same wire whole (elements taken in one go where they can be), one byte at a time
/// (every element through the state steps: its header is taken as soon as it is complete, so
/// no element is ever whole in the buffer) and in `chunks`: the same outcome, budget left,
/// bytes consumed. For a completed reply, the budget spent is exactly what is held.
fn assert_fed_alike(wire: &[u8], up_to: usize, budget: usize, chunks: &[usize]) {
    // A malformed reply ends the connection: what was consumed or charged before the error
    // does not matter (the whole-element path finds a bad CRLF before taking the element,
    // the steps after), only that it is an error, and which.
    let settled = |mut run: Run| {
        if matches!(run.outcome, Outcome::Failed(_)) {
            (run.budget_left, run.consumed, run.copy_kept) = (0, 0, false);
        }
        run
    };
    let bytewise = settled(run(wire, up_to, budget, &[1]));
    let whole = settled(run(wire, up_to, budget, &[wire.len().max(1)]));
    let chunked = settled(run(wire, up_to, budget, chunks));
    let shown = String::from_utf8_lossy(&wire[..wire.len().min(200)]).into_owned();
    assert_eq!(
        whole, bytewise,
        "whole, up_to {up_to}, budget {budget}: {shown:?}"
    );
    assert_eq!(
        chunked, bytewise,
        "{chunks:?}, up_to {up_to}, budget {budget}: {shown:?}"
    );
    if let Outcome::Done(Items::Read { items, .. }) = &bytewise.outcome {
        let held: usize = items
            .iter()
            .map(|i| match i {
                Item::Whole(b) => b.len(),
                Item::Skipped(_) => SKIPPED_COST,
            })
            .sum();
        assert_eq!(budget - bytewise.budget_left, held, "{shown:?}");
    }
}

/// Elements a server would not send, or that only the general parser takes.
const ODD_ELEMENTS: &[&[u8]] = &[
    b"$-1\r\n",
    b"$-0\r\n",
    b"$\r\n",
    b"$1x\r\na\r\n",
    b"$ 1\r\na\r\n",
    b"$1 \r\na\r\n",
    b"$1\na\r\n",
    b"$1\r\r\na\r\n",
    b":5\r\n",
    b"+OK\r\n",
    b"-ERR no\r\n",
    b"*1\r\n$1\r\na\r\n",
    b"$+1\r\na\r\n",
    b"$0\r\n\r\n",
    b"$999999999999999999\r\n",
    b"$1000000000000000000\r\n",
    b"$9223372036854775807\r\n",
    b"$9223372036854775808\r\n",
    b"$18446744073709551615\r\n",
    b"$18446744073709551616\r\n",
    b"$99999999999999999999999\r\n",
    b"$-18446744073709551616\r\n",
    b"$000000000000000001\r\na\r\n",
    b"$0000000000000000001\r\na\r\n",
    b"$00000000000000000001\r\na\r\n",
    b"$000000000000000000000000000000000000000000001\r\na\r\n",
];

#[test]
fn odd_elements_are_decided_alike_whole_and_split() {
    let fine = b"$3\r\nabc\r\n";
    for odd in ODD_ELEMENTS {
        for (count, before, after) in [(1, 0, 0), (2, 1, 0), (2, 0, 1), (3, 1, 1), (4, 2, 1)] {
            let mut wire = format!("*{count}\r\n").into_bytes();
            (0..before).for_each(|_| wire.extend_from_slice(fine));
            wire.extend_from_slice(odd);
            (0..after).for_each(|_| wire.extend_from_slice(fine));
            wire.extend_from_slice(b"+OK\r\n");
            for up_to in [0, 1, 3, ALWAYS_KEPT, usize::MAX] {
                for budget in [0, 1, 3, 4, 6, 7, usize::MAX] {
                    assert_fed_alike(&wire, up_to, budget, &[2, 3]);
                }
            }
        }
    }
}

/// An element's wire bytes and, when it is a well-formed bulk string, its length.
fn wire_element() -> impl Strategy<Value = (Vec<u8>, Option<usize>)> {
    let len = prop_oneof![
        0usize..8,
        8usize..40,
        (ALWAYS_KEPT - 8)..(ALWAYS_KEPT + 8),
        2900usize..3100
    ];
    let header = prop_oneof![
        6 => Just(None),
        2 => (1usize..=21).prop_map(Some), // zero-padded to this many digits
        1 => Just(Some(0)),                // a plus sign
    ];
    let end = prop_oneof![
        150 => Just(&b"\r\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b"\n"[..]),
        1 => Just(&b""[..]),
        1 => Just(&b"\rX"[..]),
        1 => Just(&b"X\n"[..]),
        1 => Just(&b"\n\r"[..]),
    ];
    let bulk = (len, header, end, any::<usize>()).prop_map(|(len, header, end, seed)| {
        let head = match header {
            None => format!("${len}\r\n"),
            Some(0) => format!("$+{len}\r\n"),
            Some(width) => format!("${len:0width$}\r\n"),
        };
        // Bodies full of what headers and line ends are made of.
        let body = (0..len).map(|i| b"$\r\n0a*:"[seed.wrapping_add(i * 7919) % 7]);
        let mut wire = head.into_bytes();
        wire.extend(body);
        wire.extend_from_slice(end);
        let whole = end == b"\r\n";
        (wire, whole.then_some(len))
    });
    prop_oneof![
        60 => bulk,
        1 => prop::sample::select(ODD_ELEMENTS).prop_map(|w| (w.to_vec(), None)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn lrange_replies_are_decided_alike_whole_byte_by_byte_and_split(
        elements in proptest::collection::vec(wire_element(), 0..10),
        count in prop_oneof![4 => Just("sent"), 1 => Just("more"), 1 => Just("fewer"), 1 => Just("null")],
        up_to in prop_oneof![
            Just(usize::MAX),
            Just(0),
            Just(ALWAYS_KEPT),
            Just(ALWAYS_KEPT + 1),
            0usize..4000,
        ],
        up_to_pick in proptest::option::of((any::<prop::sample::Index>(), -1isize..=1)),
        budget in prop_oneof![Just(usize::MAX), 0usize..12_000],
        budget_pick in proptest::option::of((any::<prop::sample::Index>(), -1isize..=1)),
        chunks in proptest::collection::vec(prop_oneof![1usize..8, 1usize..4000], 1..6),
        cut in proptest::option::weighted(0.2, any::<prop::sample::Index>()),
    ) {
        let lens: Vec<usize> = elements.iter().filter_map(|e| e.1).collect();
        let nudge = |n: usize, by: isize| n.saturating_add_signed(by);
        // Limits exactly at (or one off) an element's length, budgets exactly at (or one off)
        // what the elements before some point cost.
        let up_to = match up_to_pick {
            Some((i, by)) if !lens.is_empty() => nudge(lens[i.index(lens.len())], by),
            _ => up_to,
        };
        let budget = match budget_pick {
            Some((i, by)) => {
                let spent: usize = lens[..i.index(lens.len() + 1)]
                    .iter()
                    .map(|&n| if n > up_to && n > ALWAYS_KEPT { SKIPPED_COST } else { n })
                    .sum();
                nudge(spent, by)
            }
            None => budget,
        };
        // The count as sent, or one more (the reply is not over when the wire is) or one
        // fewer (an element is left for the next reply), or a null array.
        let header = match count {
            "sent" => format!("*{}\r\n", elements.len()),
            "more" => format!("*{}\r\n", elements.len() + 1),
            "fewer" => format!("*{}\r\n", elements.len().saturating_sub(1)),
            _ => "*-1\r\n".to_owned(),
        };
        let mut wire = header.into_bytes();
        elements.iter().for_each(|(e, _)| wire.extend_from_slice(e));
        if count != "more" {
            wire.extend_from_slice(b"+OK\r\n");
        }
        // Or the wire stops anywhere.
        if let Some(cut) = cut {
            wire.truncate(cut.index(wire.len()));
        }
        assert_fed_alike(&wire, up_to, budget, &chunks);
    }
}
