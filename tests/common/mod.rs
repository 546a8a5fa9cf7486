//! Test harness shared by the integration tests: a real `redis-server` on a free port that
//! stops on drop, a random key prefix per test, and the daemon binary run with a clean
//! environment.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
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
    pub destination: String,
    pub dead_letter: String,
    pub key_prefix: String,
}

impl Names {
    pub fn new() -> Self {
        let p = prefix();
        Names {
            source: format!("{p}:raw"),
            destination: format!("{p}:processing"),
            dead_letter: format!("{p}:dead"),
            key_prefix: format!("{p}:bp"),
        }
    }
}

/// The built daemon binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_batch-processor"))
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
        ("REDIS_PROCESSING_QUEUE", names.destination.clone()),
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

/// Run the binary with exactly `env` (plus PATH) and `args`, capturing output.
pub fn spawn_daemon(env: &[(String, String)], args: &[&str]) -> Daemon {
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
    let mut child = cmd.spawn().expect("spawn batch-processor");
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

/// Path of a file relative to the crate root.
pub fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
