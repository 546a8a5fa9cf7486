//! What makes a message good: JSON that every mainstream parser accepts.
//!
//! The profile is I-JSON (RFC 7493) less its rule on duplicate names: valid UTF-8, no
//! unpaired surrogate escapes (`"\ud83d"`), every number finite as an IEEE 754 double
//! (`1e999999999` is not), and nesting at most `max_depth` levels. Duplicate member names
//! stay allowed, since every mainstream parser accepts them (the last one wins). A message
//! outside the profile would make orjson, serde_json, jq or Python's `json` refuse the whole
//! envelope, and with it every good message inside.
//!
//! The check is one pass of serde_json's parser with a visitor that keeps nothing: no value
//! tree is built, strings without escapes are borrowed, and the message's own bytes are
//! what goes into the envelope.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Deepest nesting a message may have, whatever `REDIS_MAX_JSON_DEPTH` says. The envelope
/// adds three levels (envelope, payload, batch), and serde_json by default refuses a
/// document whose nesting reaches 128, so 124 + 3 = 127 is the most it parses.
pub const MAX_DEPTH_LIMIT: usize = 124;

/// Why a message was refused. Its `Display` is the dead-letter `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Larger than `max_message_bytes`.
    #[error("message is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Not valid UTF-8.
    #[error("message is not valid UTF-8")]
    NotUtf8,
    /// Not valid JSON; carries serde_json's description (position included).
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but a string holds an escaped UTF-16 surrogate without its partner.
    #[error("message is not interoperable JSON: unpaired surrogate escape ({0})")]
    UnpairedSurrogate(String),
    /// Valid JSON, but a number is beyond the range of a double.
    #[error("message is not interoperable JSON: number out of double range ({0})")]
    NumberOutOfRange(String),
    /// Valid JSON, but nested deeper than allowed.
    #[error("message is not interoperable JSON: nested deeper than {limit} levels")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
}

/// Limits a message must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Largest message, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects; a scalar has depth 0, `[1]` depth 1.
    pub max_depth: usize,
}

/// Check one message. On success returns the JSON value's bytes (surrounding whitespace
/// removed), which is what goes into the envelope.
pub fn check_message(bytes: &[u8], profile: Profile) -> Result<&[u8], Rejection> {
    if bytes.len() > profile.max_bytes {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            limit: profile.max_bytes,
        });
    }
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let checked = Strict {
        depth_left: profile.max_depth,
        too_deep: &too_deep,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match checked {
        Ok(()) => Ok(trim_whitespace(bytes)),
        Err(_) if too_deep.get() => Err(Rejection::TooDeep {
            limit: profile.max_depth,
        }),
        Err(e) => Err(classify(bytes, e)),
    }
}

/// Name the rule a refused message breaks. Runs only for refused messages.
fn classify(bytes: &[u8], strict: serde_json::Error) -> Rejection {
    if std::str::from_utf8(bytes).is_err() {
        return Rejection::NotUtf8;
    }
    if let Err(syntax) = serde_json::from_slice::<&RawValue>(bytes) {
        return Rejection::NotJson(syntax.to_string());
    }
    // The syntax is fine, so the strict pass failed on a rule of the profile: a number
    // serde_json cannot hold in a double, or a string escape it cannot decode to UTF-8 (an
    // unpaired surrogate: the only escape that passes the syntax check and fails decoding).
    let detail = strict.to_string();
    if detail.starts_with("number out of range") {
        Rejection::NumberOutOfRange(detail)
    } else {
        Rejection::UnpairedSurrogate(detail)
    }
}

/// `bytes` without JSON whitespace around the value.
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Visits one value and everything inside it, keeping nothing. serde_json itself refuses
/// unpaired surrogates while decoding strings, and numbers beyond a double while parsing
/// them; the visitor adds the depth limit.
#[derive(Clone, Copy)]
struct Strict<'a> {
    depth_left: usize,
    too_deep: &'a Cell<bool>,
}

impl Strict<'_> {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(Strict { depth_left, ..self }),
            None => {
                self.too_deep.set(true);
                Err(E::custom("nested too deep"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json already refuses overflow; this keeps the rule if that ever changes.
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.nested()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.nested()?;
        // Keys are strings; visiting them decodes their escapes like any string.
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: Profile = Profile {
        max_bytes: 1 << 20,
        max_depth: 64,
    };

    fn check(m: &[u8]) -> Result<&[u8], Rejection> {
        check_message(m, PROFILE)
    }

    #[test]
    fn valid_messages_pass_unchanged() {
        for m in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"x":1.50e3,"u":"\u00e9\ud83d\ude00","s":"caf\u00e9 \"q\""}"#,
            "{\"raw\":\"é😀\"}".as_bytes(),
            b"[1,2,3]",
            b"42",
            b"-0.0",
            b"1e308",
            b"1e-400",
            b"123456789012345678901234567890",
            b"\"str\"",
            b"null",
            br#"{"a":1,"a":2}"#,
        ] {
            assert_eq!(check(m).unwrap(), m);
        }
        assert_eq!(check(b"  {\"a\":1}\n").unwrap(), b"{\"a\":1}");
        assert_eq!(check(b"\t\r\n 7 \n").unwrap(), b"7");
    }

    #[test]
    fn bad_messages_are_rejected_with_a_reason() {
        for m in [
            &b"{\"a\":"[..],
            b"hello world",
            b"{\"a\":1} x",
            b"",
            b"  ",
            b"[1,]",
        ] {
            assert!(matches!(check(m), Err(Rejection::NotJson(_))), "{m:?}");
        }
        assert_eq!(check(b"\xff\xfe{}"), Err(Rejection::NotUtf8));
        assert_eq!(check(b"\"\xc3\""), Err(Rejection::NotUtf8));
        let small = Profile {
            max_bytes: 3,
            ..PROFILE
        };
        assert_eq!(
            check_message(b"[1,2,3]", small),
            Err(Rejection::TooLarge { size: 7, limit: 3 })
        );
    }

    #[test]
    fn unpaired_surrogates_are_refused() {
        for m in [
            &br#""\ud83d""#[..],
            br#""\ude00""#,
            br#"{"k":"abc\ud83dxyz"}"#,
            br#"{"\ud83d":1}"#,
            br#"["\ud83d\u0041"]"#,
            br#""\udc00\ud800""#,
        ] {
            let r = check(m);
            assert!(
                matches!(r, Err(Rejection::UnpairedSurrogate(_))),
                "{m:?}: {r:?}"
            );
        }
    }

    #[test]
    fn numbers_beyond_a_double_are_refused() {
        for m in [
            &b"1e999999999"[..],
            b"-1e309",
            b"[1,2e400]",
            br#"{"n":1e309}"#,
        ] {
            let r = check(m);
            assert!(
                matches!(r, Err(Rejection::NumberOutOfRange(_))),
                "{m:?}: {r:?}"
            );
        }
    }

    #[test]
    fn depth_is_limited_and_deep_input_cannot_overflow_the_stack() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check(nested(64).as_bytes()).is_ok());
        assert_eq!(
            check(nested(65).as_bytes()),
            Err(Rejection::TooDeep { limit: 64 })
        );
        let objects = format!("{}1{}", "{\"a\":".repeat(65), "}".repeat(65));
        assert_eq!(
            check(objects.as_bytes()),
            Err(Rejection::TooDeep { limit: 64 })
        );
        // Far past any limit: refused, not a stack overflow.
        let deep = nested(100_000);
        assert!(check_message(
            deep.as_bytes(),
            Profile {
                max_bytes: 1 << 20,
                max_depth: MAX_DEPTH_LIMIT
            }
        )
        .is_err());
        assert!(check(b"0").is_ok());
        let flat = Profile {
            max_depth: 0,
            ..PROFILE
        };
        assert!(check_message(b"[]", flat).is_err());
        assert!(check_message(b"\"s\"", flat).is_ok());
    }

    #[test]
    fn the_deepest_message_still_makes_an_envelope_serde_json_accepts() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let max = Profile {
            max_bytes: 1 << 20,
            max_depth: MAX_DEPTH_LIMIT,
        };
        let m = nested(MAX_DEPTH_LIMIT);
        let value = check_message(m.as_bytes(), max).unwrap();
        let mut envelope = Vec::new();
        crate::envelope::write_envelope(&mut envelope, uuid::Uuid::nil(), "ts", [value]).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&envelope).is_ok());
        // One level more and serde_json would refuse the envelope: the limit is tight.
        let m = nested(MAX_DEPTH_LIMIT + 1);
        let mut envelope = Vec::new();
        crate::envelope::write_envelope(&mut envelope, uuid::Uuid::nil(), "ts", [m.as_bytes()])
            .unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&envelope).is_err());
    }
}
