//! The reference check: one pass of serde_json's own parser with a visitor that keeps
//! nothing. It is slower than the scan but obviously right, so it decides every
//! message the fast scan refuses (and names the reason), the few numbers the scan cannot
//! decide alone, and it is what the tests compare the scan with.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{trim_whitespace, Profile, Rejection};

/// The strict profile by serde_json's parser; `profile.max_bytes` is not looked at.
pub(super) fn check(bytes: &[u8], profile: Profile) -> Result<&[u8], Rejection> {
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

/// Whether `token`, one JSON number alone, is finite as a double by serde_json's parser.
/// The scan asks only for numbers whose value lies in [1e308, 1e309).
pub(super) fn number_is_finite(token: &[u8]) -> bool {
    let scalar = Profile {
        max_bytes: usize::MAX,
        max_depth: 0,
    };
    check(token, scalar).is_ok()
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
