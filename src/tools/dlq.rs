//! `batch-processor dlq`: list, replay and purge the dead-letter list.
//!
//! Daemons LPUSH dead-letter records, so the oldest record is at the tail. Replay walks the
//! tail: it reads a record, decodes the original bytes in Rust, then moves it with
//! `scripts/replay.lua`, which re-checks that the record is still where it was read before
//! pushing the message back and removing the record in one atomic step. A replay that races
//! another replay (or a purge) just sees the check fail and reads again, so each record is put
//! back exactly once, oldest first, while daemons keep pushing new dead letters at the head.
//! Records that cannot be decoded are left where they are and counted; the walk steps past
//! them by index.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::dead_letter::{DeadLetter, DeadLetterError};
use crate::redis::connection;
use crate::settings::Settings;

/// The move of one record; see the header of the file for KEYS and ARGV.
const REPLAY_LUA: &str = include_str!("../redis/scripts/replay.lua");

/// Undecodable records logged one by one after a replay; the rest are counted.
const SKIPS_LOGGED: usize = 20;

/// Longest preview of a record's message in `dlq list`, in characters.
const PREVIEW_CHARS: usize = 80;

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// No connection could be opened.
    #[error(transparent)]
    Connect(#[from] connection::ConnectError),
    /// A command on the dead-letter list failed.
    #[error("cannot {what} {list} on Redis at {addr} ({kind}): {source}")]
    Redis {
        /// What was being done.
        what: &'static str,
        /// The dead-letter list.
        list: String,
        /// Address of the server.
        addr: String,
        /// Short error class, as in the daemon's logs.
        kind: &'static str,
        /// What the client said.
        #[source]
        source: RedisError,
    },
    /// Replay stopped part way; what was moved before stays moved.
    #[error(
        "replay stopped after putting back {replayed} dead letters from {list} on Redis at {addr} ({kind}): {source}"
    )]
    Replay {
        /// Records already put back.
        replayed: u64,
        /// The dead-letter list.
        list: String,
        /// Address of the server.
        addr: String,
        /// Short error class, as in the daemon's logs.
        kind: &'static str,
        /// What the client said.
        #[source]
        source: RedisError,
    },
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records put back on their source queue.
    pub replayed: u64,
    /// Records that could not be decoded and were left in place.
    pub skipped: u64,
    /// Records put back, by the queue they went to.
    pub queues: BTreeMap<String, u64>,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replayed {}", dead_letters(self.replayed))?;
        if !self.queues.is_empty() {
            let per: Vec<String> = self
                .queues
                .iter()
                .map(|(q, n)| format!("{q}: {n}"))
                .collect();
            write!(f, " ({})", per.join(", "))?;
        }
        if self.skipped > 0 {
            write!(
                f,
                "; skipped {} undecodable records, left in place (see dlq list)",
                self.skipped
            )?;
        }
        Ok(())
    }
}

/// Why a record cannot be replayed; it is left in place.
#[derive(Debug, thiserror::Error)]
enum Undecodable {
    #[error(transparent)]
    Record(#[from] DeadLetterError),
    #[error("dead-letter record has an empty source_queue")]
    NoSource,
    #[error("dead-letter record's source_queue is the dead-letter list itself")]
    SourceIsDeadLetter,
}

/// The queue to put a record's message back on and the message's original bytes.
fn decode(record: &[u8], dead_letter: &str) -> Result<(String, Vec<u8>), Undecodable> {
    let rec = DeadLetter::parse(record)?;
    let bytes = rec.original_bytes()?;
    if rec.source_queue.is_empty() {
        return Err(Undecodable::NoSource);
    }
    if rec.source_queue == dead_letter {
        // Replaying it would push it straight back onto the list being walked.
        return Err(Undecodable::SourceIsDeadLetter);
    }
    Ok((rec.source_queue, bytes))
}

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

    fn error(&self, what: &'static str) -> impl FnOnce(RedisError) -> DlqError + '_ {
        move |source| DlqError::Redis {
            what,
            list: self.list.clone(),
            addr: self.addr.clone(),
            kind: connection::error_kind(&source),
            source,
        }
    }
}

/// Render up to `limit` dead letters (all when `None`), oldest first: a header line and one
/// line per record as text, or `{"total":N,"records":[...]}` with `json`.
pub async fn list(s: &Settings, limit: Option<usize>, json: bool) -> Result<String, DlqError> {
    let mut session = Session::open(s).await?;
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("LLEN").arg(&session.list);
    // LRANGE -0 -1 would be the whole list, so a limit of 0 reads nothing.
    let start = match limit {
        Some(0) => None,
        Some(n) => Some(-i64::try_from(n).unwrap_or(i64::MAX)),
        None => Some(0),
    };
    if let Some(start) = start {
        pipe.cmd("LRANGE").arg(&session.list).arg(start).arg(-1);
    }
    let (total, mut records): (u64, Vec<Vec<u8>>) = if start.is_some() {
        pipe.query_async(&mut session.conn)
            .await
            .map_err(session.error("read"))?
    } else {
        let (total,): (u64,) = pipe
            .query_async(&mut session.conn)
            .await
            .map_err(session.error("read"))?;
        (total, Vec::new())
    };
    records.reverse();
    if json {
        Ok(render_json(total, &records))
    } else {
        Ok(render_text(&session.list, total, &records))
    }
}

/// `{"total":N,"records":[...]}` with each record exactly as stored; a record that is not
/// JSON is shown as `{"invalid_record": <its text>, "error": <why>}`.
fn render_json(total: u64, records: &[Vec<u8>]) -> String {
    #[derive(serde::Serialize)]
    struct Doc {
        total: u64,
        records: Vec<Box<RawValue>>,
    }
    let records = records
        .iter()
        .filter_map(|r| {
            let verbatim = std::str::from_utf8(r)
                .ok()
                .and_then(|text| RawValue::from_string(text.to_string()).ok());
            verbatim.or_else(|| {
                let error = serde_json::from_slice::<&RawValue>(r)
                    .err()
                    .map_or_else(|| "not UTF-8".to_string(), |e| e.to_string());
                serde_json::value::to_raw_value(&serde_json::json!({
                    "invalid_record": String::from_utf8_lossy(r),
                    "error": error,
                }))
                .ok()
            })
        })
        .collect();
    // Strings, numbers and already valid raw JSON always serialise.
    serde_json::to_string_pretty(&Doc { total, records }).unwrap_or_default()
}

fn render_text(list: &str, total: u64, records: &[Vec<u8>]) -> String {
    let mut out = if total == 0 {
        format!("{list}: no dead letters")
    } else if (records.len() as u64) < total {
        format!(
            "{list}: {}, showing the oldest {}",
            dead_letters(total),
            records.len()
        )
    } else {
        format!("{list}: {}", dead_letters(total))
    };
    for record in records {
        // Writing into a String cannot fail.
        let _ = write!(out, "\n{}", record_line(record));
    }
    out
}

/// `failed_at  source_queue  reason  preview`, one line whatever the record holds.
fn record_line(record: &[u8]) -> String {
    match DeadLetter::parse(record) {
        Ok(rec) => {
            let preview = match (&rec.raw, &rec.raw_b64) {
                (Some(raw), _) => preview(raw),
                (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(bytes) => format!("<{} bytes binary>", bytes.len()),
                    Err(_) => "<invalid raw_b64>".to_string(),
                },
                (None, None) => "<no raw>".to_string(),
            };
            format!(
                "{}  {}  {}  {}",
                rec.failed_at,
                rec.source_queue,
                one_line(&rec.reason),
                preview
            )
        }
        Err(e) => format!(
            "<unreadable record: {}>  {}",
            one_line(&e.to_string()),
            preview(&String::from_utf8_lossy(record))
        ),
    }
}

/// The text quoted and escaped (so it stays on one line), cut to [`PREVIEW_CHARS`].
fn preview(text: &str) -> String {
    let mut cut: String = text.chars().take(PREVIEW_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Put up to `limit` dead letters back on their source queues, oldest first; all of them
/// when `None` (the records present when the replay starts, so records dead-lettered again
/// meanwhile are not chased forever).
pub async fn replay(s: &Settings, limit: Option<usize>) -> Result<ReplayReport, DlqError> {
    let mut session = Session::open(s).await?;
    // Only records present at the start are replayed: a message that is still bad comes back
    // to the dead-letter list while the replay runs and must not be replayed again.
    let present: u64 = redis::cmd("LLEN")
        .arg(&session.list)
        .query_async(&mut session.conn)
        .await
        .map_err(session.error("read the length of"))?;
    let budget = limit.map_or(present, |n| {
        present.min(u64::try_from(n).unwrap_or(u64::MAX))
    });
    let script = Script::new(REPLAY_LUA);
    let placeholder = format!("batch-processor:replay-placeholder:{}", Uuid::new_v4());
    let mut report = ReplayReport::default();
    // The undecodable records walked past, tail first: they sit at indexes -1, -2, ...
    let mut skipped: Vec<(Vec<u8>, Undecodable)> = Vec::new();
    // Records another replay (or a purge) took first. The replay stops once it has dealt with
    // as many records as were there at the start, however each one went.
    let mut taken_by_others = 0u64;
    let seen_all_present =
        |replayed: u64, skipped: usize, taken: u64| replayed + skipped as u64 + taken >= present;
    while report.replayed < budget
        && !seen_all_present(report.replayed, skipped.len(), taken_by_others)
    {
        let index = -i64::try_from(skipped.len()).unwrap_or(i64::MAX) - 1;
        let record: Option<Vec<u8>> = match redis::cmd("LINDEX")
            .arg(&session.list)
            .arg(index)
            .query_async(&mut session.conn)
            .await
        {
            Ok(r) => r,
            Err(source) => return Err(interrupted(&session, &report, source)),
        };
        let Some(record) = record else { break };
        let (target, original) = match decode(&record, &session.list) {
            Ok(decoded) => decoded,
            Err(why) => {
                skipped.push((record, why));
                continue;
            }
        };
        let moved: i64 = match script
            .key(&session.list)
            .key(&target)
            .arg(&record[..])
            .arg(&original[..])
            .arg(index)
            .arg(&placeholder)
            .invoke_async(&mut session.conn)
            .await
        {
            Ok(m) => m,
            Err(source) => return Err(interrupted(&session, &report, source)),
        };
        if moved == 1 {
            tracing::debug!(index, queue = %target, "dead letter replayed");
            report.replayed += 1;
            *report.queues.entry(target).or_default() += 1;
        } else {
            // Someone else moved the record (another replay) or emptied the list (a purge).
            tracing::debug!(index, "dead letter moved by someone else; reading again");
            taken_by_others += 1;
            if !skipped.is_empty() {
                let tail = match read_tail(&mut session, skipped.len()).await {
                    Ok(t) => t,
                    Err(source) => return Err(interrupted(&session, &report, source)),
                };
                // Replays never remove undecodable records, so normally they are all still
                // there and the walk resumes at the same index. If not, start again from the
                // tail so nothing is taken out of order or left behind.
                if !tail.iter().eq(skipped.iter().map(|(r, _)| r)) {
                    skipped.clear();
                }
            }
        }
    }
    for (i, (_, why)) in skipped.iter().enumerate().take(SKIPS_LOGGED) {
        let index = -i64::try_from(i).unwrap_or(i64::MAX) - 1;
        tracing::warn!(list = %session.list, index, error = %why, "dead letter left in place");
    }
    if skipped.len() > SKIPS_LOGGED {
        tracing::warn!(
            list = %session.list,
            more = skipped.len() - SKIPS_LOGGED,
            "more dead letters left in place"
        );
    }
    report.skipped = skipped.len() as u64;
    tracing::info!(
        list = %session.list,
        replayed = report.replayed,
        skipped = report.skipped,
        "dead letters replayed"
    );
    Ok(report)
}

/// The last `n` records of the dead-letter list, tail first.
async fn read_tail(session: &mut Session, n: usize) -> Result<Vec<Vec<u8>>, RedisError> {
    let start = -i64::try_from(n).unwrap_or(i64::MAX);
    let mut tail: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(&session.list)
        .arg(start)
        .arg(-1)
        .query_async(&mut session.conn)
        .await?;
    tail.reverse();
    Ok(tail)
}

fn interrupted(session: &Session, report: &ReplayReport, source: RedisError) -> DlqError {
    DlqError::Replay {
        replayed: report.replayed,
        list: session.list.clone(),
        addr: session.addr.clone(),
        kind: connection::error_kind(&source),
        source,
    }
}

/// Delete every dead letter; returns how many there were (read and deleted atomically).
pub async fn purge(s: &Settings) -> Result<u64, DlqError> {
    let mut session = Session::open(s).await?;
    let (count, _deleted): (u64, u64) = redis::pipe()
        .atomic()
        .cmd("LLEN")
        .arg(&session.list)
        .cmd("DEL")
        .arg(&session.list)
        .query_async(&mut session.conn)
        .await
        .map_err(session.error("purge"))?;
    tracing::info!(list = %session.list, count, "dead letters purged");
    Ok(count)
}

/// "1 dead letter", "2 dead letters".
pub fn dead_letters(n: u64) -> String {
    if n == 1 {
        "1 dead letter".to_string()
    } else {
        format!("{n} dead letters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::check_message;

    fn record(raw: &[u8], source: &str) -> Vec<u8> {
        let reason = check_message(raw, 1 << 20).unwrap_err();
        DeadLetter::new(raw, &reason, source, "2026-01-01T00:00:00.000000+00:00").to_bytes()
    }

    #[test]
    fn decode_gives_target_and_exact_bytes() {
        let (q, b) = decode(&record(b"\xff\x00x", "raw"), "dead").unwrap();
        assert_eq!((q.as_str(), &b[..]), ("raw", &b"\xff\x00x"[..]));
        assert!(matches!(
            decode(b"nope", "dead"),
            Err(Undecodable::Record(_))
        ));
        assert!(matches!(
            decode(&record(b"x", ""), "dead"),
            Err(Undecodable::NoSource)
        ));
        assert!(matches!(
            decode(&record(b"x", "dead"), "dead"),
            Err(Undecodable::SourceIsDeadLetter)
        ));
        let no_raw = br#"{"reason":"r","source_queue":"raw","failed_at":"t"}"#;
        assert!(matches!(
            decode(no_raw, "dead"),
            Err(Undecodable::Record(DeadLetterError::MissingRaw))
        ));
    }

    #[test]
    fn record_lines_preview_text_and_describe_binary() {
        let long = "y".repeat(200);
        let line = record_line(&record(long.as_bytes(), "raw"));
        assert!(
            line.starts_with("2026-01-01T00:00:00.000000+00:00  raw  message is not valid JSON")
        );
        assert!(
            line.ends_with(&format!("\"{}…\"", "y".repeat(80))),
            "{line}"
        );
        let line = record_line(&record(b"\xff\xfe\x00", "raw"));
        assert!(line.ends_with("<3 bytes binary>"), "{line}");
        let line = record_line(&record(b"a\nb", "raw"));
        assert!(
            !line.contains('\n') && line.ends_with(r#""a\nb""#),
            "{line}"
        );
        assert!(record_line(b"garbage").starts_with("<unreadable record:"));
    }

    #[test]
    fn report_summary_names_queues_and_skips() {
        let mut r = ReplayReport::default();
        assert_eq!(r.to_string(), "replayed 0 dead letters");
        r.replayed = 3;
        r.queues.insert("a".into(), 2);
        r.queues.insert("b".into(), 1);
        r.skipped = 1;
        assert_eq!(
            r.to_string(),
            "replayed 3 dead letters (a: 2, b: 1); skipped 1 undecodable records, left in place (see dlq list)"
        );
    }
}
