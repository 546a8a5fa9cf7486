//! Per-test queue names and the daemon's own keys, and helpers that put messages on the
//! lists and read them back.

use std::time::{Duration, Instant};

use batch_processor::redis::keys::Keys;

use super::{connect, wait_until, Workload};

/// A random key prefix, so tests can share a server.
fn prefix() -> String {
    format!("t{:016x}", fastrand::u64(..))
}

/// Queue names and the daemon's key prefix for one test.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub source: String,
    pub processing: String,
    pub dead_letter: String,
    pub key_prefix: String,
}

impl Names {
    pub(crate) fn new() -> Self {
        let p = prefix();
        Names {
            source: format!("{p}:raw"),
            processing: format!("{p}:processing"),
            dead_letter: format!("{p}:dead"),
            key_prefix: format!("{p}:bp"),
        }
    }

    /// The daemon's own keys for this test's source, named as the daemon names them.
    pub(crate) fn keys(&self) -> Keys {
        Keys::new(&self.key_prefix, &[&self.source])
    }

    /// `n` source lists for a priority test, highest priority first (the last is
    /// [`Names::source`]).
    pub(crate) fn sources(&self, n: usize) -> Vec<String> {
        let mut sources: Vec<String> = (1..n).map(|i| format!("{}:p{i}", self.source)).collect();
        sources.push(self.source.clone());
        sources
    }
}

/// LPUSH `messages` onto `list` in order (the first pushed is the oldest).
pub(crate) fn push_all(conn: &mut redis::Connection, list: &str, messages: &[Vec<u8>]) {
    for chunk in messages.chunks(1000) {
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(list);
        for m in chunk {
            cmd.arg(&m[..]);
        }
        let _: i64 = cmd.query(conn).expect("LPUSH");
    }
}

/// Every element of `list`, oldest (tail) first.
pub(crate) fn read_all(conn: &mut redis::Connection, list: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(list)
        .arg(0)
        .arg(-1)
        .query(conn)
        .expect("LRANGE");
    v.reverse();
    v
}

pub(crate) fn llen(conn: &mut redis::Connection, list: &str) -> usize {
    redis::cmd("LLEN").arg(list).query(conn).expect("LLEN")
}

/// The envelopes on `list`, oldest first, parsed.
pub(crate) fn envelopes(conn: &mut redis::Connection, list: &str) -> Vec<serde_json::Value> {
    read_all(conn, list)
        .iter()
        .map(|e| serde_json::from_slice(e).expect("envelope is JSON"))
        .collect()
}

/// The raw bytes of each message inside an envelope, as spliced (found by scanning the
/// envelope's `batch` array with serde_json's RawValue).
pub(crate) fn batch_raw(envelope: &[u8]) -> Vec<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Env<'a> {
        #[serde(borrow)]
        payload: Payload<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        batch: Vec<&'a serde_json::value::RawValue>,
    }
    let e: Env = serde_json::from_slice(envelope).expect("envelope shape");
    e.payload
        .batch
        .iter()
        .map(|r| r.get().as_bytes().to_vec())
        .collect()
}

/// A realistic scraper event of about `size` bytes with a unique sequence number.
pub(crate) fn event(seq: u64, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"seq":{seq},"source":"scraper","url":"https://example.com/item/{seq}","title":"Item \u00e9 {seq}","body":""#
    );
    let pad = size.saturating_sub(head.len() + 2);
    let mut s = head.into_bytes();
    s.extend(std::iter::repeat_n(b'x', pad));
    s.extend_from_slice(b"\"}");
    s
}

/// The `seq` of an event made by [`event`].
pub(crate) fn seq_of(raw: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(raw).expect("event JSON");
    v["seq"].as_u64().expect("seq")
}

/// Wait until the source list is empty.
pub(crate) fn wait_drained(conn: &mut redis::Connection, names: &Names, limit: Duration) -> bool {
    wait_until(limit, || llen(conn, &names.source) == 0)
}

/// The consumer name holding the lease, if any.
pub(crate) fn lease_holder(conn: &mut redis::Connection, names: &Names) -> Option<String> {
    let v: Option<String> = redis::cmd("GET")
        .arg(names.keys().lease())
        .query(conn)
        .expect("GET lease");
    v.map(|s| batch_processor::mover::lease::lease_holder(&s).to_string())
}

/// Push from a thread: `messages` in chunks of `chunk`, sleeping `pause` between chunks.
pub(crate) fn spawn_producer(
    url: String,
    list: String,
    messages: Vec<Vec<u8>>,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = connect(&url);
        for part in messages.chunks(chunk) {
            push_all(&mut c, &list, part);
            std::thread::sleep(pause);
        }
    })
}

/// Push the next messages of `w` (from `*pushed` on) until the source holds at least
/// `backlog` messages or the workload is exhausted, so that a daemon started now has a
/// drain in progress when it is killed.
pub(crate) fn top_up(
    conn: &mut redis::Connection,
    names: &Names,
    w: &Workload,
    pushed: &mut usize,
    backlog: usize,
) {
    let pending = llen(conn, &names.source);
    if pending < backlog {
        let n = (backlog - pending).min(w.messages.len() - *pushed);
        push_all(conn, &names.source, &w.messages[*pushed..*pushed + n]);
        *pushed += n;
    }
}

/// Wait until the daemon has moved a random part (at least one message, not all) of what
/// the source holds now, polling every millisecond: a random moment in the middle of a
/// drain, whatever the daemon's speed. Returns how many were waiting and the target.
/// With fewer than two messages waiting it returns at once.
pub(crate) fn wait_random_progress(
    conn: &mut redis::Connection,
    names: &Names,
    limit: Duration,
) -> (usize, usize) {
    let pending = llen(conn, &names.source);
    if pending < 2 {
        return (pending, pending);
    }
    let target = pending - fastrand::usize(1..pending);
    let deadline = Instant::now() + limit;
    while llen(conn, &names.source) > target {
        assert!(
            Instant::now() < deadline,
            "the daemon did not move {} of {pending} waiting messages within {limit:?}",
            pending - target
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    (pending, target)
}
