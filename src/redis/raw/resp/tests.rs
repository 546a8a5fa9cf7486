//! The small-reply parser against redis-rs's own: generated replies, every cut of them, and
//! arbitrary bytes.

use proptest::prelude::*;
use redis::Value;

use super::*;

/// RESP2 for `v` (error replies as `-<text>`).
pub(in crate::redis::raw) fn encode(v: &Value, out: &mut Vec<u8>) {
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
}
