//! Small RESP2 replies, parsed from the connection's read buffer.
//!
//! They become [`redis::Value`]s, exactly as redis-rs would give them (its own parser builds
//! the rare error replies, so error codes classify the same way). `LRANGE` arrays are streamed
//! instead, by [`super::lrange`], which reads its headers with the pieces here.

use redis::Value;

/// Nesting allowed in a small reply (an `EXEC` reply holds the script's reply, one level down).
const MAX_DEPTH: usize = 16;

/// The reply does not follow RESP2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed RESP reply: {0}")]
pub struct Malformed(pub String);

pub(super) fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

/// The line at the start of `buf` (without its CRLF) and the bytes it takes with the CRLF;
/// `None` until the whole line is there.
pub(super) fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let lf = buf.iter().position(|&b| b == b'\n')?;
    let end = lf.checked_sub(1).filter(|&cr| buf[cr] == b'\r');
    // A bare LF is malformed; report it as a line the caller rejects.
    Some(end.map_or((&buf[..0], lf + 1), |cr| (&buf[..cr], lf + 1)))
}

fn integer(digits: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(format!("bad integer {:?}", String::from_utf8_lossy(digits))))
}

/// A length header's value: `None` for the null (`-1`).
pub(super) fn length(digits: &[u8]) -> Result<Option<usize>, Malformed> {
    match integer(digits)? {
        -1 => Ok(None),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| malformed(format!("negative length {n}"))),
    }
}

/// One complete value at the start of `buf` and the bytes it takes; `None` until it is all
/// there.
pub(super) fn parse_value(buf: &[u8]) -> Result<Option<(Value, usize)>, Malformed> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Value, usize)>, Malformed> {
    let Some((head, n)) = line(buf) else {
        return Ok(None);
    };
    let Some((&kind, rest)) = head.split_first() else {
        return Err(malformed("empty or unterminated line"));
    };
    let value = match kind {
        b'+' => Value::SimpleString(
            String::from_utf8(rest.to_vec()).map_err(|_| malformed("simple string not UTF-8"))?,
        ),
        b'-' => server_error(&buf[..n])?,
        b':' => Value::Int(integer(rest)?),
        b'$' => {
            let Some(len) = length(rest)? else {
                return Ok(Some((Value::Nil, n)));
            };
            let Some(body) = buf.get(n..n + len + 2) else {
                return Ok(None);
            };
            if &body[len..] != b"\r\n" {
                return Err(malformed("bulk string not followed by CRLF"));
            }
            return Ok(Some((Value::BulkString(body[..len].to_vec()), n + len + 2)));
        }
        b'*' => {
            let Some(count) = length(rest)? else {
                return Ok(Some((Value::Nil, n)));
            };
            if depth >= MAX_DEPTH {
                return Err(malformed("reply nested too deep"));
            }
            let mut items = Vec::with_capacity(count.min(1024));
            let mut at = n;
            for _ in 0..count {
                let Some((item, used)) = parse_at(&buf[at..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            return Ok(Some((Value::Array(items), at)));
        }
        other => return Err(malformed(format!("unknown reply type {:?}", other as char))),
    };
    Ok(Some((value, n)))
}

/// An error reply, built by redis-rs's own parser so its code classifies as redis-rs's would.
fn server_error(line: &[u8]) -> Result<Value, Malformed> {
    match redis::parse_redis_value(line) {
        Ok(v @ Value::ServerError(_)) => Ok(v),
        _ => Err(malformed("bad error reply")),
    }
}

#[cfg(test)]
pub(super) mod tests;
