//! The reply parser against redis-rs's own: generated replies, every split of them across
//! reads, and arbitrary bytes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use redis::Value;

use super::*;

/// RESP2 for `v` (error replies as `-<text>`).
fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::BulkString(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            items.iter().for_each(|i| encode(i, out));
        }
        other => panic!("not generated: {other:?}"),
    }
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<i64>().prop_map(Value::Int),
        "[a-zA-Z0-9 _:.-]{0,20}".prop_map(Value::SimpleString),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::BulkString),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
    })
}

/// An error reply as redis-rs reads it.
fn error_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(&b"WRONGTYPE Operation against a key"[..]),
        Just(&b"NOSCRIPT No matching script"[..]),
        Just(&b"ERR unknown command"[..]),
        Just(&b"EXECABORT Transaction discarded"[..]),
        Just(&b"OOM command not allowed"[..]),
        Just(&b"NOPERM no permissions"[..]),
    ]
    .prop_map(|text| [b"-", text, b"\r\n"].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn values_parse_as_redis_rs_parses_them(v in value(), cut in any::<prop::sample::Index>()) {
        let mut wire = Vec::new();
        encode(&v, &mut wire);
        wire.extend_from_slice(b":7\r\n"); // the next reply stays unread
        let theirs = redis::parse_redis_value(&wire).unwrap();
        let (ours, used) = parse_value(&wire).unwrap().unwrap();
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(used, wire.len() - 4);
        // Any prefix short of the whole value is incomplete, never an error or a value.
        let short = cut.index(used);
        prop_assert_eq!(parse_value(&wire[..short]).unwrap(), None);
    }

    #[test]
    fn error_replies_are_redis_rs_errors(line in error_line()) {
        let (ours, used) = parse_value(&line).unwrap().unwrap();
        prop_assert_eq!(used, line.len());
        prop_assert_eq!(ours, redis::parse_redis_value(&line).unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_agree_when_parsed(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some((ours, used))) = parse_value(&bytes) {
            prop_assert_eq!(ours, redis::parse_redis_value(&bytes[..used]).unwrap());
        }
    }

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
fn malformed_replies_are_errors() {
    for wire in [
        &b"?x\r\n"[..],
        b"$3\r\nabcd\r\n",
        b":12a\r\n",
        b"$-2\r\n",
        b"\n",
    ] {
        assert!(
            parse_value(wire).is_err(),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
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
