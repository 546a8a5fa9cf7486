//! Test harness shared by the integration tests: a real `redis-server` on a free port that
//! stops on drop, a random key prefix per test, and the daemon binary run with a clean
//! environment.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A throwaway `redis-server` process. Killed (and its directory removed) on drop.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl RedisServer {
    /// A plain server: no persistence.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server that persists every write (AOF, fsync always), so it can be restarted
    /// without losing data.
    pub fn start_persistent() -> Self {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    /// A server with extra `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Accepting connections; with AOF it may still be loading, so ask.
                if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection())
                {
                    let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                    match pong {
                        Ok(_) => return,
                        // Auth-protected servers answer NOAUTH: they are up.
                        Err(e)
                            if e.code() == Some("NOAUTH")
                                || e.kind() == redis::ErrorKind::AuthenticationFailed =>
                        {
                            return
                        }
                        Err(_) => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A synchronous client connection for setting up and checking tests.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Stop the server the hard way (SIGKILL). With `start_persistent` the data survives.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server stops answering but keeps its connections.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "CONT");
        }
        self.kill();
    }
}

/// Send a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, `INT`).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A random key prefix, so tests can share a server.
pub fn prefix() -> String {
    format!("t{:016x}", fastrand::u64(..))
}

/// Queue names and the daemon's key prefix for one test.
#[derive(Clone, Debug)]
pub struct Names {
    pub source: String,
    pub processing: String,
    pub dead_letter: String,
    pub key_prefix: String,
}

impl Names {
    pub fn new() -> Self {
        let p = prefix();
        Names {
            source: format!("{p}:raw"),
            processing: format!("{p}:processing"),
            dead_letter: format!("{p}:dead"),
            key_prefix: format!("{p}:bp"),
        }
    }
}

/// The built daemon binary, or the one named by `BATCH_PROCESSOR_BIN` when set (a copy
/// taken right after the build, when several worktrees share one target directory and
/// overwrite each other's binary, or a release build for the benchmark script).
pub fn binary() -> PathBuf {
    match std::env::var_os("BATCH_PROCESSOR_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_batch-processor")),
    }
}

/// A running daemon process with its stdout captured line by line.
pub struct Daemon {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// The environment a test daemon gets: queues, a fast lease, no HTTP unless asked.
pub fn daemon_env(server: &RedisServer, names: &Names) -> Vec<(String, String)> {
    [
        ("REDIS_PORT", server.port.to_string()),
        ("REDIS_RAW_DATA_QUEUE", names.source.clone()),
        ("REDIS_PROCESSING_QUEUE", names.processing.clone()),
        ("REDIS_DEAD_LETTER_QUEUE", names.dead_letter.clone()),
        ("REDIS_KEY_PREFIX", names.key_prefix.clone()),
        ("REDIS_HTTP_ADDR", "off".to_string()),
        ("REDIS_LOG_FORMAT", "json".to_string()),
        ("REDIS_RETRY_MAX_DELAY", "0.5".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The binary with exactly `env` (plus PATH) and `args`, stdout and stderr piped.
pub fn binary_command(env: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Run the binary with exactly `env` (plus PATH) and `args`, capturing output.
pub fn spawn_daemon(env: &[(String, String)], args: &[&str]) -> Daemon {
    let mut child = binary_command(env, args)
        .spawn()
        .expect("spawn batch-processor");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    pump(child.stdout.take().expect("stdout"), lines.clone());
    pump(child.stderr.take().expect("stderr"), stderr.clone());
    Daemon {
        child,
        lines,
        stderr,
    }
}

fn pump<R: std::io::Read + Send + 'static>(r: R, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; returns the exit code and how long it took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        signal(self.pid(), "TERM");
        let status = self.wait_timeout(Duration::from_secs(15));
        (status, started.elapsed())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait up to `limit` for exit; `None` if it is still running (then it is killed).
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        None
    }

    /// Stdout lines so far, parsed as JSON (every line must be JSON).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    /// Wait until a stdout line contains `needle`.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `f` every 10 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// LPUSH `messages` onto `list` in order (the first pushed is the oldest).
pub fn push_all(conn: &mut redis::Connection, list: &str, messages: &[Vec<u8>]) {
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
pub fn read_all(conn: &mut redis::Connection, list: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(list)
        .arg(0)
        .arg(-1)
        .query(conn)
        .expect("LRANGE");
    v.reverse();
    v
}

pub fn llen(conn: &mut redis::Connection, list: &str) -> usize {
    redis::cmd("LLEN").arg(list).query(conn).expect("LLEN")
}

/// The envelopes on `list`, oldest first, parsed.
pub fn envelopes(conn: &mut redis::Connection, list: &str) -> Vec<serde_json::Value> {
    read_all(conn, list)
        .iter()
        .map(|e| serde_json::from_slice(e).expect("envelope is JSON"))
        .collect()
}

/// The raw bytes of each message inside an envelope, as spliced (found by scanning the
/// envelope's `batch` array with serde_json's RawValue).
pub fn batch_raw(envelope: &[u8]) -> Vec<Vec<u8>> {
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
pub fn event(seq: u64, size: usize) -> Vec<u8> {
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
pub fn seq_of(raw: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(raw).expect("event JSON");
    v["seq"].as_u64().expect("seq")
}

// ---------------------------------------------------------------------------------------
// Additions for the core and reliability tests.
// ---------------------------------------------------------------------------------------

/// A synchronous connection to `url` (for threads that cannot borrow the server).
pub fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to test redis")
}

impl RedisServer {
    /// The URL with credentials (`user` `None` means the default user).
    pub fn url_auth(&self, user: Option<&str>, password: &str) -> String {
        format!(
            "redis://{}:{}@127.0.0.1:{}/",
            user.unwrap_or(""),
            password,
            self.port
        )
    }

    /// A connection that authenticates first.
    pub fn conn_auth(&self, user: Option<&str>, password: &str) -> redis::Connection {
        connect(&self.url_auth(user, password))
    }

    /// Whether the server process is still alive (not reaped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// [`daemon_env`] with `extra` settings added or replacing the defaults.
pub fn env_with(
    server: &RedisServer,
    names: &Names,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = daemon_env(server, names);
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// `batch-processor run` against `server` with the test's queues plus `extra` settings.
pub fn start_daemon(server: &RedisServer, names: &Names, extra: &[(&str, &str)]) -> Daemon {
    spawn_daemon(&env_with(server, names, extra), &["run"])
}

impl Daemon {
    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything written so far on stdout and stderr, one line each.
    pub fn all_output(&self) -> String {
        let mut s = self.lines.lock().unwrap().join("\n");
        s.push('\n');
        s.push_str(&self.stderr.lock().unwrap().join("\n"));
        s
    }

    /// Stdout lines so far (raw).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Stdout lines parsed as JSON whose `message` is `msg`.
    pub fn events(&self, msg: &str) -> Vec<serde_json::Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["message"] == msg)
            .collect()
    }

    /// Peak resident memory (`VmHWM`) in kB, read from /proc while the process runs.
    pub fn vm_hwm_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    }

    /// SIGTERM, then assert the exit is code 0 within 5 seconds (issue 2 item 7).
    pub fn terminate_ok(&mut self) {
        let (code, took) = self.terminate();
        assert_eq!(
            code,
            Some(0),
            "SIGTERM must exit 0 (took {took:?}); stderr: {:?}",
            self.stderr.lock().unwrap()
        );
        assert!(
            took <= Duration::from_secs(5),
            "SIGTERM exit took {took:?}, more than 5 s"
        );
    }
}

/// Log lines at WARN or ERROR level (JSON format), raw.
pub fn problem_lines(d: &Daemon) -> Vec<String> {
    d.stdout_lines()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect()
}

/// Size limit the [`workload`] assumes (set `REDIS_MAX_MESSAGE_BYTES` to this): its
/// too-large messages are 5,000 bytes, its good ones much smaller.
pub const WORKLOAD_MAX_BYTES: &str = "4096";

/// A bad message of one of five kinds, unique by `seq`: truncated JSON, binary (not
/// UTF-8), plain text, valid JSON followed by garbage, too large (needs
/// [`WORKLOAD_MAX_BYTES`]).
pub fn bad_message(seq: u64, kind: u64) -> Vec<u8> {
    match kind % 5 {
        0 => format!(r#"{{"seq":{seq},"source":"scraper","title":"trunc"#).into_bytes(),
        1 => {
            let mut b = vec![0xff, 0xfe, 0x00];
            b.extend_from_slice(format!("bin{seq}").as_bytes());
            b.extend_from_slice(&[0x80, 0xc3]);
            b
        }
        2 => format!("plain text message number {seq}").into_bytes(),
        3 => format!(r#"{{"seq":{seq}}} x"#).into_bytes(),
        _ => event(seq, 5000),
    }
}

/// Messages in push order, with what each should become.
pub struct Workload {
    /// Every message, oldest first.
    pub messages: Vec<Vec<u8>>,
    /// Seqs of the good messages, in push order.
    pub good: Vec<u64>,
    /// The exact bytes of every good message by seq.
    pub good_bytes: std::collections::HashMap<u64, Vec<u8>>,
    /// The bad messages, in push order.
    pub bad: Vec<Vec<u8>>,
}

/// `n` messages of about `size` bytes; every `bad_every`-th (0: none) is bad, cycling
/// through the kinds of [`bad_message`].
pub fn workload(n: u64, bad_every: u64, size: usize) -> Workload {
    let mut w = Workload {
        messages: Vec::with_capacity(n as usize),
        good: Vec::new(),
        good_bytes: Default::default(),
        bad: Vec::new(),
    };
    for seq in 0..n {
        if bad_every > 0 && seq % bad_every == bad_every - 1 {
            let m = bad_message(seq, seq / bad_every);
            w.bad.push(m.clone());
            w.messages.push(m);
        } else {
            let m = event(seq, size);
            w.good.push(seq);
            w.good_bytes.insert(seq, m.clone());
            w.messages.push(m);
        }
    }
    w
}

/// One dead-letter record, checked for format and decoded.
#[derive(Debug, Clone)]
pub struct DeadRecord {
    /// The original bytes (from `raw` or `raw_b64`).
    pub original: Vec<u8>,
    /// Whether it was stored as `raw_b64`.
    pub base64: bool,
    /// `reason`.
    pub reason: String,
    /// `source_queue`.
    pub source_queue: String,
    /// `failed_at`.
    pub failed_at: String,
}

/// Parse and check one stored dead-letter record: a JSON object with `reason`,
/// `source_queue`, `failed_at` (RFC 3339) and exactly one of `raw` / `raw_b64`.
pub fn parse_dead_letter(bytes: &[u8]) -> DeadRecord {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "dead letter is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    let obj = v.as_object().expect("dead letter is an object");
    let s = |k: &str| -> String {
        obj.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| panic!("dead letter lacks string {k}: {v}"))
            .to_string()
    };
    let (original, base64) = match (obj.get("raw"), obj.get("raw_b64")) {
        (Some(raw), None) => (
            raw.as_str().expect("raw is a string").as_bytes().to_vec(),
            false,
        ),
        (None, Some(b)) => (
            base64::engine::general_purpose::STANDARD
                .decode(b.as_str().expect("raw_b64 is a string"))
                .expect("raw_b64 is base64"),
            true,
        ),
        _ => panic!("dead letter must have exactly one of raw / raw_b64: {v}"),
    };
    let failed_at = s("failed_at");
    chrono::DateTime::parse_from_rfc3339(&failed_at)
        .unwrap_or_else(|e| panic!("failed_at {failed_at:?} is not RFC 3339: {e}"));
    DeadRecord {
        original,
        base64,
        reason: s("reason"),
        source_queue: s("source_queue"),
        failed_at,
    }
}

/// Check every envelope rule of issue 2 item 4 on one parsed envelope.
pub fn assert_envelope_format(v: &serde_json::Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("envelope is not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["event_id", "event_type", "payload", "service", "timestamp"],
        "{v}"
    );
    assert_eq!(v["event_type"], "batch_processing");
    assert_eq!(v["service"], "batch_processor");
    let id = v["event_id"].as_str().expect("event_id string");
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("event_id {id:?}: {e}"));
    assert_eq!(uuid.get_version_num(), 4, "event_id {id} is not a v4 uuid");
    let payload = v["payload"].as_object().expect("payload object");
    let mut pkeys: Vec<&str> = payload.keys().map(|k| k.as_str()).collect();
    pkeys.sort();
    assert_eq!(pkeys, ["batch", "size"], "{v}");
    let batch = payload["batch"].as_array().expect("batch array");
    assert!(!batch.is_empty(), "an empty batch was sent");
    assert_eq!(
        payload["size"].as_u64(),
        Some(batch.len() as u64),
        "size != batch length"
    );
    let ts = v["timestamp"].as_str().expect("timestamp string");
    // 2026-11-23T10:00:00.123456+00:00
    let b = ts.as_bytes();
    assert_eq!(
        b.len(),
        32,
        "timestamp {ts:?} is not YYYY-MM-DDTHH:MM:SS.ffffff+00:00"
    );
    assert!(
        ts.ends_with("+00:00"),
        "timestamp {ts:?} must end with +00:00"
    );
    assert_eq!(b[10], b'T', "{ts}");
    assert_eq!(b[19], b'.', "{ts}");
    assert!(
        b[20..26].iter().all(u8::is_ascii_digit),
        "timestamp {ts:?} needs 6 fraction digits"
    );
    let t = chrono::DateTime::parse_from_rfc3339(ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
    let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs();
    assert!(skew < 600, "timestamp {ts} is not the current UTC time");
}

/// Everything the daemon produced for one test, oldest first.
pub struct Outcome {
    /// Raw envelopes, oldest first.
    pub envelopes: Vec<Vec<u8>>,
    /// The messages of each envelope, as spliced, oldest envelope first.
    pub batches: Vec<Vec<Vec<u8>>>,
    /// Dead letters, oldest first.
    pub dead: Vec<DeadRecord>,
    /// What is still in the source, oldest first.
    pub source: Vec<Vec<u8>>,
}

/// Read the processing, dead-letter and source lists.
pub fn outcome(conn: &mut redis::Connection, names: &Names) -> Outcome {
    let envelopes = read_all(conn, &names.processing);
    let batches = envelopes.iter().map(|e| batch_raw(e)).collect();
    let dead = read_all(conn, &names.dead_letter)
        .iter()
        .map(|d| parse_dead_letter(d))
        .collect();
    let source = read_all(conn, &names.source);
    Outcome {
        envelopes,
        batches,
        dead,
        source,
    }
}

/// Check that every message of `w` is accounted for exactly once: each good one in exactly
/// one envelope (byte for byte) or still in the source, each bad one exactly once in the
/// dead-letter list (exact bytes, this source) or still in the source; nothing else
/// anywhere. With `ordered` (one daemon), the envelopes hold a prefix of the good messages
/// in push order and the source holds exactly the untouched suffix of the workload.
/// With `complete`, the source must be empty.
pub fn assert_accounted(out: &Outcome, w: &Workload, names: &Names, ordered: bool, complete: bool) {
    use std::collections::HashMap;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut in_envelopes = Vec::new();
    for (i, batch) in out.batches.iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_slice(&out.envelopes[i]).expect("envelope JSON");
        assert_envelope_format(&v);
        for m in batch {
            let seq = seq_of(m);
            let expected = w.good_bytes.get(&seq).unwrap_or_else(|| {
                panic!("envelope {i} holds a message that is not good: seq {seq}")
            });
            assert_eq!(m, expected, "message seq {seq} changed inside envelope {i}");
            *seen.entry(seq).or_default() += 1;
            in_envelopes.push(seq);
        }
    }
    let dups: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    assert!(
        dups.is_empty(),
        "messages in more than one envelope (seq, times): {:?}",
        &dups[..dups.len().min(20)]
    );

    let mut expected_bad: HashMap<&[u8], i64> = HashMap::new();
    for b in &w.bad {
        *expected_bad.entry(&b[..]).or_default() += 1;
    }
    for d in &out.dead {
        assert_eq!(d.source_queue, names.source, "dead letter source_queue");
        assert!(
            !d.reason.trim().is_empty(),
            "dead letter has an empty reason"
        );
        assert_eq!(
            d.base64,
            std::str::from_utf8(&d.original).is_err(),
            "raw_b64 must be used exactly when the bytes are not UTF-8: {d:?}"
        );
        let n = expected_bad.entry(&d.original[..]).or_default();
        *n -= 1;
    }
    // Whatever is left in the source counts as not yet processed.
    for m in &out.source {
        let good_seq = serde_json::from_slice::<serde_json::Value>(m)
            .ok()
            .and_then(|v| v["seq"].as_u64())
            .filter(|seq| w.good_bytes.get(seq) == Some(m));
        match good_seq {
            Some(seq) => *seen.entry(seq).or_default() += 1,
            None => match expected_bad.get_mut(&m[..]) {
                Some(n) if *n > 0 => *n -= 1,
                _ => panic!(
                    "the source holds a message that is unknown or already dead-lettered: {:?}",
                    String::from_utf8_lossy(m)
                        .chars()
                        .take(80)
                        .collect::<String>()
                ),
            },
        }
    }
    let wrong_bad: Vec<_> = expected_bad
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(b, n)| {
            (
                String::from_utf8_lossy(b)
                    .chars()
                    .take(60)
                    .collect::<String>(),
                *n,
            )
        })
        .collect();
    assert!(
        wrong_bad.is_empty(),
        "bad messages not exactly once in the dead-letter list (message, missing(+)/extra(-)): {:?}",
        &wrong_bad[..wrong_bad.len().min(20)]
    );
    let missing: Vec<u64> = w
        .good
        .iter()
        .filter(|s| seen.get(s).copied().unwrap_or(0) != 1)
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} good messages not in exactly one envelope or the source (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    if complete {
        assert!(
            out.source.is_empty(),
            "{} messages still in the source",
            out.source.len()
        );
    }
    if ordered {
        assert_eq!(
            in_envelopes,
            w.good[..in_envelopes.len()].to_vec(),
            "good messages left out of push order across envelopes"
        );
        let k = w.messages.len() - out.source.len();
        assert_eq!(
            out.source,
            w.messages[k..].to_vec(),
            "the source must hold the untouched tail of the workload, in order"
        );
    }
}

/// Wait until the source list is empty.
pub fn wait_drained(conn: &mut redis::Connection, names: &Names, limit: Duration) -> bool {
    wait_until(limit, || llen(conn, &names.source) == 0)
}

/// The lease key of the test's source (`<key_prefix>:lease:<source>`).
pub fn lease_key(names: &Names) -> String {
    format!("{}:lease:{}", names.key_prefix, names.source)
}

/// The consumer name holding the lease, if any.
pub fn lease_holder(conn: &mut redis::Connection, names: &Names) -> Option<String> {
    let v: Option<String> = redis::cmd("GET")
        .arg(lease_key(names))
        .query(conn)
        .expect("GET lease");
    v.map(|s| s.rsplit_once('/').map_or(s.clone(), |(c, _)| c.to_string()))
}

/// The daemon's stats hash of the test's source.
pub fn stats(
    conn: &mut redis::Connection,
    names: &Names,
) -> std::collections::HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("{}:stats:{}", names.key_prefix, names.source))
        .query(conn)
        .expect("HGETALL stats")
}

/// A random duration between `lo` and `hi` milliseconds.
pub fn random_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(fastrand::u64(lo..=hi))
}

/// Push from a thread: `messages` in chunks of `chunk`, sleeping `pause` between chunks.
pub fn spawn_producer(
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
pub fn top_up(
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
pub fn wait_random_progress(
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

/// A blocking HTTP/1.1 GET; returns the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read http");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled series (or a full `name{labels}` key) in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// What one CLI run printed.
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A CLI process started but not yet waited for.
pub struct CliRun {
    child: Child,
    started: Instant,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

fn read_to_string_thread<R: std::io::Read + Send + 'static>(
    mut r: R,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        s
    })
}

/// Start the binary with exactly `env` (plus PATH) and `args`.
pub fn start_cli(env: &[(String, String)], args: &[&str]) -> CliRun {
    let started = Instant::now();
    let mut child = binary_command(env, args)
        .spawn()
        .expect("spawn batch-processor");
    let out = read_to_string_thread(child.stdout.take().expect("stdout"));
    let err = read_to_string_thread(child.stderr.take().expect("stderr"));
    CliRun {
        child,
        started,
        out,
        err,
    }
}

impl CliRun {
    /// Wait up to `limit` for exit; past it the process is killed and `code` is `None`.
    pub fn finish(mut self, limit: Duration) -> CliOutput {
        let mut code = None;
        while self.started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                code = status.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = self.started.elapsed();
        if code.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        CliOutput {
            code,
            stdout: self.out.join().unwrap(),
            stderr: self.err.join().unwrap(),
            elapsed,
        }
    }
}

/// Run the CLI to completion (30 s at most).
pub fn run_cli(env: &[(String, String)], args: &[&str]) -> CliOutput {
    start_cli(env, args).finish(Duration::from_secs(30))
}
