//! `batch-processor dlq`: list, replay and purge the dead-letter list.
//!
//! Daemons LPUSH dead-letter records, so the oldest record is at the tail. Replay walks the
//! tail: it reads a record, decodes the original bytes in Rust, then moves it with
//! `scripts/replay.lua`, which re-checks that the record is still where it was read before
//! pushing the message back and removing the record in one atomic step. A replay that races
//! another replay (or a purge) just sees the check fail and reads again, so each record is put
//! back exactly once, oldest first, while daemons keep pushing new dead letters at the head.
//! Records that cannot be decoded, that the filters leave out, or that were dead-lettered
//! after the replay started are left where they are and counted; the walk steps past them by
//! index (see [`replay`] for how concurrent runs stay within the records present at their
//! start).

mod age;
mod filter;
mod list;
mod record;
mod replay;
mod walk;

use redis::aio::MultiplexedConnection;
use redis::RedisError;

use crate::redis::connection;
use crate::redis::RedisFailure;
use crate::settings::Settings;

pub use age::parse_age;
pub use filter::ReplayFilter;
pub use list::{list, ListOptions, DEFAULT_SCAN_LIMIT};
pub use replay::{replay, ReplayReport};

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// No connection could be opened.
    #[error(transparent)]
    Connect(#[from] connection::ConnectError),
    /// A command on the dead-letter list failed.
    #[error(
        "cannot {what} {} on Redis at {} ({}): {}",
        list_name(.failure),
        .failure.addr,
        .failure.kind(),
        .failure.source
    )]
    Redis {
        /// What was being done.
        what: &'static str,
        /// The command, the dead-letter list and what Redis said.
        #[source]
        failure: RedisFailure,
    },
    /// Replay stopped part way; what was moved before stays moved.
    #[error(
        "replay stopped after putting back {replayed} dead letters from {} on Redis at {} ({}): {}",
        list_name(.failure),
        .failure.addr,
        .failure.kind(),
        .failure.source
    )]
    Replay {
        /// Records already put back.
        replayed: u64,
        /// The command, the dead-letter list and what Redis said.
        #[source]
        failure: RedisFailure,
    },
    /// An age on the command line (`--older-than`) is not `<number><s|m|h|d>`.
    #[error("invalid age {input:?}: {why} (examples: 30s, 15m, 2h, 1d)")]
    Age {
        /// What was given.
        input: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Options that cannot be used together; exit code 2, like any usage error.
    #[error("{0}")]
    Usage(String),
}

/// The dead-letter list a failure was about ([`Session::failure`] always names it).
fn list_name(failure: &RedisFailure) -> &str {
    failure.key.as_deref().unwrap_or("the dead-letter list")
}

/// A connection to Redis and the dead-letter list it works on.
struct Session {
    conn: MultiplexedConnection,
    addr: String,
    list: String,
}

impl Session {
    async fn open(settings: &Settings) -> Result<Self, DlqError> {
        let (conn, connector) = connection::connect_once(&settings.redis).await?;
        Ok(Session {
            conn,
            addr: connector.addr(),
            list: settings.queues.dead_letter.clone(),
        })
    }

    /// `command` on the dead-letter list failed.
    fn failure(&self, command: &'static str, source: RedisError) -> RedisFailure {
        RedisFailure::new(self.addr.clone(), command, source).with_key(self.list.clone())
    }

    /// Turns a failure of `command` into the error for "cannot `what` the list".
    fn error(
        &self,
        what: &'static str,
        command: &'static str,
    ) -> impl FnOnce(RedisError) -> DlqError + '_ {
        move |source| DlqError::Redis {
            what,
            failure: self.failure(command, source),
        }
    }
}

/// Delete every dead letter; returns how many there were.
///
/// The list is first renamed aside in one atomic step, so records a daemon writes meanwhile
/// land on a fresh list and survive. Then the lists that hold the messages of records written
/// by reference are deleted, exactly those the purged records name, and the renamed list last
/// (a purge cut short leaves `<list>:purging:<uuid>`, which a second purge does not touch).
pub async fn purge(s: &Settings) -> Result<u64, DlqError> {
    let mut session = Session::open(s).await?;
    let aside = format!("{}:purging:{}", session.list, uuid::Uuid::new_v4());
    let count: u64 = redis::Script::new(PURGE_LUA)
        .key(&session.list)
        .key(&aside)
        .invoke_async(&mut session.conn)
        .await
        .map_err(session.error("purge", "EVALSHA purge.lua"))?;
    let mut start = 0u64;
    while start < count {
        let page: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&aside)
            .arg(start)
            .arg(start + PURGE_PAGE - 1)
            .query_async(&mut session.conn)
            .await
            .map_err(session.error("purge", "LRANGE"))?;
        // Only lists the daemon made for this dead-letter list: a hand-edited record must not
        // make a purge delete any other key (the source, say).
        let own = format!("{}:oversized:", session.list);
        let lists: Vec<String> = page
            .iter()
            .filter_map(|r| record::View::parse(r).ok().and_then(|v| v.raw_key))
            .filter(|key| key.starts_with(&own))
            .collect();
        if !lists.is_empty() {
            let _: u64 = redis::cmd("DEL")
                .arg(&lists)
                .query_async(&mut session.conn)
                .await
                .map_err(session.error("purge", "DEL"))?;
        }
        start += PURGE_PAGE;
    }
    let _: u64 = redis::cmd("DEL")
        .arg(&aside)
        .query_async(&mut session.conn)
        .await
        .map_err(session.error("purge", "DEL"))?;
    tracing::info!(list = %session.list, count, "dead letters purged");
    Ok(count)
}

/// Records read per round trip while purging.
const PURGE_PAGE: u64 = 500;

const PURGE_LUA: &str = include_str!("../../redis/scripts/purge.lua");

/// "1 dead letter", "2 dead letters".
pub fn dead_letters(n: u64) -> String {
    if n == 1 {
        "1 dead letter".to_string()
    } else {
        format!("{n} dead letters")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dead_letter::DeadLetter;
    use crate::message::{check_message, Profile};

    /// A dead-letter record for `raw`, which must be an invalid message, from `source`.
    pub(in crate::tools::dlq) fn record(raw: &[u8], source: &str) -> Vec<u8> {
        let reason = check_message(raw, Profile::default()).unwrap_err();
        DeadLetter::new(raw, &reason, source, "2026-01-01T00:00:00.000000+00:00").to_bytes()
    }

    #[test]
    fn errors_name_the_list_address_and_kind() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let failure = RedisFailure::new("h:1", "LLEN, DEL", refused).with_key("dead");
        let e = DlqError::Redis {
            what: "purge",
            failure,
        };
        assert!(
            e.to_string()
                .starts_with("cannot purge dead on Redis at h:1 (io): "),
            "{e}"
        );
        assert_eq!(dead_letters(1), "1 dead letter");
        assert_eq!(dead_letters(2), "2 dead letters");
    }
}
