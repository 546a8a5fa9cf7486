//! What a commit's `EXEC` reply says: the pushes' results and the commit script's verdict
//! turned into `Ok` or the [`CommitError`] that tells the mover what to do next.

use redis::Value;

use super::commit::CommitError;
use crate::redis::ErrorKind;
use crate::settings::Queues;

/// The verdict of a commit's `EXEC` reply (`envelopes` and `dead_letters` say which pushes
/// precede the script's result).
pub(super) fn check_exec(
    exec: Value,
    envelopes: usize,
    dead_letters: usize,
    queues: &Queues,
) -> Result<(), CommitError> {
    let results = match exec {
        Value::Array(results) => results,
        Value::ServerError(e) => return Err(refused("EXEC", queues.sources_label(), &e)),
        other => return Err(CommitError::Protocol(format!("EXEC reply {other:?}"))),
    };
    // Results: [LPUSH processing]?, [LPUSH dead-letter]?, EVAL, [EVAL ledger]? (the ledger
    // script follows the commit's verdict and cannot fail on its own).
    let mut it = results.into_iter();
    let mut push_error = None;
    for (present, key) in [
        (envelopes > 0, &queues.processing),
        (dead_letters > 0, &queues.dead_letter),
    ] {
        if present {
            if let Some(Value::ServerError(e)) = it.next() {
                push_error.get_or_insert_with(|| refused("LPUSH", key.clone(), &e));
            }
        }
    }
    let verdict = match it.next() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(Value::SimpleString(s)) => s,
        Some(Value::ServerError(e)) => {
            return Err(refused("EVAL commit", queues.sources_label(), &e))
        }
        other => {
            return Err(CommitError::Protocol(format!(
                "commit script reply {other:?}"
            )))
        }
    };
    if let Some(source) = verdict.strip_prefix("tail_changed:") {
        return Err(CommitError::TailChanged {
            source_queue: source.to_owned(),
        });
    }
    match verdict.as_str() {
        "ok" => Ok(()),
        "fenced" => Err(CommitError::Fenced {
            source_queue: queues.sources_label(),
        }),
        "paused" => Err(CommitError::Paused {
            source_queue: queues.sources_label(),
        }),
        reason => Err(push_error.unwrap_or_else(|| CommitError::Refused {
            command: "EVAL commit",
            key: queues.sources_label(),
            kind: ErrorKind::Server,
            detail: reason.to_string(),
        })),
    }
}

/// A command of the request was refused with the server error `e`.
pub(super) fn refused(command: &'static str, key: String, e: &redis::ServerError) -> CommitError {
    let detail = match (e.code(), e.details()) {
        (code, Some(d)) => format!("{code} {d}"),
        (code, None) => code.to_string(),
    };
    CommitError::Refused {
        command,
        key,
        kind: ErrorKind::from_code(e.code()).unwrap_or(ErrorKind::Server),
        detail,
    }
}
