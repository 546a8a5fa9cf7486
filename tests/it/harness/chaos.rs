//! Fault injection for the chaos test: the faults themselves (what each does to Redis or to
//! the daemon), a record of which were injected, and a producer that pushes every message
//! exactly once, in order, while connections are killed, Redis restarts or refuses writes.
//!
//! Every connection the test opens is named `chaos-test-*` (`CLIENT SETNAME`), so that
//! killing "every client but the test's" is a filter on `CLIENT LIST`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{start_daemon, Daemon, Names, RedisServer};

/// The name prefix of every connection the chaos test opens itself.
pub(crate) const TEST_CLIENT: &str = "chaos-test";

/// `redis-server` arguments for the chaos test: every write persisted (AOF, fsync always),
/// so a restart loses nothing acknowledged, and `DEBUG SLEEP` allowed.
pub(crate) const CHAOS_SERVER_ARGS: &[&str] = &[
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--enable-debug-command",
    "yes",
];

/// A connection named `chaos-test-<role>`, retried for up to 20 s (Redis may be
/// restarting or loading its AOF). Replies wait at most 10 s: every fault ends sooner.
pub(crate) fn chaos_conn(url: &str, role: &str) -> redis::Connection {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(format!("{TEST_CLIENT}-{role}"))
                    .query::<()>(&mut c)?;
                Ok(c)
            });
        match attempt {
            Ok(c) => return c,
            Err(e) if Instant::now() >= deadline => {
                panic!("{role}: cannot reach {url} for 20 s: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Kill every client connection that is not one of the test's own; returns how many.
pub(crate) fn kill_other_clients(conn: &mut redis::Connection) -> redis::RedisResult<usize> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(conn)?;
    let mut killed = 0;
    for line in list.lines() {
        let field = |k: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("")
        };
        if field("name").starts_with(TEST_CLIENT) {
            continue;
        }
        // A client may be gone already: that is no error, it just does not count.
        let n: usize = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(field("id"))
            .query(conn)
            .unwrap_or(0);
        killed += n;
    }
    Ok(killed)
}

/// `used_memory` from `INFO memory`.
pub(crate) fn used_memory(conn: &mut redis::Connection) -> redis::RedisResult<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query(conn)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory"))
}

/// Push `messages` onto `list` in order, exactly once each, in chunks of random size with
/// random pauses, from a thread. Each chunk goes in one `MULTI`/`EXEC` with a `SET` of
/// `counter` to the number of messages pushed so far; when a reply is lost (connection
/// killed, Redis restarted) the counter, read on a new connection, says whether the chunk
/// landed; a refused chunk (out of memory) is sent again after a pause. Returns how many
/// chunks had to be retried.
pub(crate) fn spawn_exactly_once_producer(
    url: String,
    list: String,
    counter: String,
    messages: Vec<Vec<u8>>,
    seed: u64,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut conn = chaos_conn(&url, "producer");
        let mut pushed = 0usize;
        let mut retries = 0u64;
        while pushed < messages.len() {
            // Mostly a steady trickle; now and then a burst that makes a backlog.
            let size = if rng.u32(0..20) == 0 {
                rng.usize(1000..=3000)
            } else {
                rng.usize(1..=150)
            };
            let end = (pushed + size).min(messages.len());
            let mut pipe = redis::pipe();
            pipe.atomic();
            let lpush = pipe.cmd("LPUSH").arg(&list);
            for m in &messages[pushed..end] {
                lpush.arg(&m[..]);
            }
            pipe.ignore().cmd("SET").arg(&counter).arg(end).ignore();
            loop {
                let Err(e) = pipe.query::<()>(&mut conn) else {
                    break;
                };
                retries += 1;
                std::thread::sleep(Duration::from_millis(20));
                match read_counter(&url, &mut conn, &counter) {
                    n if n == end => break,
                    n if n == pushed => continue,
                    n => panic!("producer: counter {n} after {e}, expected {pushed} or {end}"),
                }
            }
            pushed = end;
            std::thread::sleep(Duration::from_millis(rng.u64(40..=160)));
        }
        retries
    })
}

/// The producer's counter, read on `conn` or, when that fails, on new connections, for up
/// to 20 s (Redis may be restarting or loading its AOF).
fn read_counter(url: &str, conn: &mut redis::Connection, counter: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match redis::cmd("GET").arg(counter).query::<Option<usize>>(conn) {
            Ok(n) => return n.unwrap_or(0),
            Err(e) if Instant::now() >= deadline => panic!("producer: GET {counter}: {e}"),
            Err(e) => {
                std::thread::sleep(Duration::from_millis(20));
                if e.code().is_none() {
                    *conn = chaos_conn(url, "producer");
                }
            }
        }
    }
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// `CLIENT KILL` of every connection but the test's own (the daemon's, all of them).
    ClientKill,
    /// `SCRIPT FLUSH`: the daemon's cached scripts are gone.
    ScriptFlush,
    /// `CONFIG SET maxmemory` to the memory in use (writes refused with OOM), back to 0
    /// 100–500 ms later.
    MaxMemory,
    /// `DEBUG SLEEP` past the daemon's command timeout.
    DebugSleep,
    /// Both lease keys deleted.
    LeaseDelete,
    /// Both lease keys set to another holder's value with a TTL of 0.3–1.5 s.
    LeaseSteal,
    /// SIGSTOP the daemon past its lease TTL, then SIGCONT.
    DaemonStop,
    /// SIGKILL the daemon and start a new one (same consumer name or a new one).
    DaemonKill,
    /// SIGKILL Redis and start it again on the same AOF.
    RedisRestart,
}

impl Fault {
    /// Every kind, in a fixed order.
    pub(crate) const ALL: [Fault; 9] = [
        Fault::ClientKill,
        Fault::ScriptFlush,
        Fault::MaxMemory,
        Fault::DebugSleep,
        Fault::LeaseDelete,
        Fault::LeaseSteal,
        Fault::DaemonStop,
        Fault::DaemonKill,
        Fault::RedisRestart,
    ];
}

/// Which faults were injected, when (ms from the start) and with what detail.
#[derive(Debug, Default)]
pub(crate) struct FaultLog {
    pub entries: Vec<(u128, Fault, String)>,
}

impl FaultLog {
    pub(crate) fn counts(&self) -> BTreeMap<Fault, usize> {
        let mut counts: BTreeMap<Fault, usize> = Fault::ALL.iter().map(|f| (*f, 0)).collect();
        for (_, f, _) in &self.entries {
            *counts.entry(*f).or_default() += 1;
        }
        counts
    }

    /// One line per fault.
    pub(crate) fn report(&self) -> String {
        let mut s = String::new();
        for (ms, f, detail) in &self.entries {
            s.push_str(&format!("  {ms:>6} ms  {f:?} {detail}\n"));
        }
        s.push_str(&self.summary());
        s
    }

    /// How many faults of each kind.
    pub(crate) fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("{} faults:", self.entries.len()));
        for (f, n) in self.counts() {
            s.push_str(&format!(" {f:?}={n}"));
        }
        s
    }
}

/// The daemon under test, the Redis it works against and the means to hurt both.
pub(crate) struct ChaosRig {
    pub server: RedisServer,
    pub names: Names,
    pub settings: Vec<(String, String)>,
    pub daemon: Daemon,
    /// The daemons killed so far (kept for their logs).
    pub dead: Vec<Daemon>,
    pub conn: redis::Connection,
    pub log: FaultLog,
    pub started: Instant,
    /// The daemon's lease TTL.
    pub lease_ttl: Duration,
    /// The daemon's command timeout.
    pub command_timeout: Duration,
    restarts: u64,
    /// The source's length when the current fault began.
    source_len: usize,
}

impl ChaosRig {
    /// Start a daemon with `settings` plus a consumer name against `server`.
    pub(crate) fn new(
        server: RedisServer,
        names: Names,
        settings: &[(&str, &str)],
        lease_ttl: Duration,
        command_timeout: Duration,
    ) -> Self {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conn = chaos_conn(&server.url(), "injector");
        let daemon = start_with_name(&server, &names, &settings, "chaos-0");
        ChaosRig {
            server,
            names,
            settings,
            daemon,
            dead: Vec::new(),
            conn,
            log: FaultLog::default(),
            started: Instant::now(),
            lease_ttl,
            command_timeout,
            restarts: 0,
            source_len: 0,
        }
    }

    fn record(&mut self, fault: Fault, detail: String) {
        let ms = self.started.elapsed().as_millis();
        let detail = format!("{detail} (source held {})", self.source_len);
        eprintln!("chaos: {ms:>6} ms  {fault:?} {detail}");
        self.log.entries.push((ms, fault, detail));
    }

    /// Run `f` on the injector's connection, reconnecting once if the connection broke.
    fn on_redis<T>(&mut self, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>) -> T {
        match f(&mut self.conn) {
            Ok(v) => v,
            Err(_) => {
                self.conn = chaos_conn(&self.server.url(), "injector");
                f(&mut self.conn).expect("injector command after reconnecting")
            }
        }
    }

    /// Inject one fault of kind `fault`, drawing its details from `rng`. Returns when the
    /// fault is over (a lease stolen stays stolen for its TTL).
    pub(crate) fn inject(&mut self, fault: Fault, rng: &mut fastrand::Rng) {
        let source = self.names.source.clone();
        self.source_len = self.on_redis(|c| redis::cmd("LLEN").arg(&source).query(c));
        let keys = self.names.keys();
        let (lease, legacy) = (keys.lease(), keys.legacy_lease());
        match fault {
            Fault::ClientKill => {
                let n = self.on_redis(kill_other_clients);
                self.record(fault, format!("{n} clients"));
            }
            Fault::ScriptFlush => {
                self.on_redis(|c| redis::cmd("SCRIPT").arg("FLUSH").query::<()>(c));
                self.record(fault, String::new());
            }
            Fault::MaxMemory => {
                let used = self.on_redis(used_memory);
                self.on_redis(|c| config_set(c, "maxmemory", &used.to_string()));
                let hold = Duration::from_millis(rng.u64(100..=500));
                self.record(fault, format!("{used} bytes for {hold:?}"));
                std::thread::sleep(hold);
                self.on_redis(|c| config_set(c, "maxmemory", "0"));
            }
            Fault::DebugSleep => {
                let secs = self.command_timeout.as_secs_f64() + 0.2;
                self.record(fault, format!("{secs} s"));
                self.on_redis(|c| {
                    redis::cmd("DEBUG")
                        .arg("SLEEP")
                        .arg(format!("{secs}"))
                        .query::<()>(c)
                });
            }
            Fault::LeaseDelete => {
                let n: i64 = self.on_redis(|c| redis::cmd("DEL").arg(&lease).arg(&legacy).query(c));
                self.record(fault, format!("{n} keys"));
            }
            Fault::LeaseSteal => {
                let ttl = rng.u64(300..=1500);
                let value = format!("chaos-thief/{:016x}.0", rng.u64(..));
                self.on_redis(|c| {
                    redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg(&lease)
                        .arg(&value)
                        .arg("PX")
                        .arg(ttl)
                        .ignore()
                        .cmd("SET")
                        .arg(&legacy)
                        .arg(&value)
                        .arg("PX")
                        .arg(ttl)
                        .ignore()
                        .query::<()>(c)
                });
                self.record(fault, format!("for {ttl} ms"));
            }
            Fault::DaemonStop => {
                let stop = self.lease_ttl + Duration::from_millis(rng.u64(200..=700));
                self.record(fault, format!("for {stop:?}"));
                super::signal(self.daemon.pid(), "STOP");
                std::thread::sleep(stop);
                super::signal(self.daemon.pid(), "CONT");
            }
            Fault::DaemonKill => {
                self.daemon.kill();
                // Half the time the same name (takes its own lease back at once), else a
                // new one (waits for the dead one's lease to expire).
                let name = if rng.bool() {
                    "chaos-0".to_string()
                } else {
                    format!("chaos-{}", self.dead.len() + 1)
                };
                self.record(fault, format!("restarted as {name}"));
                let fresh = start_with_name(&self.server, &self.names, &self.settings, &name);
                self.dead.push(std::mem::replace(&mut self.daemon, fresh));
            }
            Fault::RedisRestart => {
                // A marker written just before proves the AOF was loaded on the way back.
                self.restarts += 1;
                let marker = format!("{}:chaos:restarts", self.names.key_prefix);
                let n = self.restarts;
                self.on_redis(|c| redis::cmd("SET").arg(&marker).arg(n).query::<()>(c));
                self.server.restart();
                self.conn = chaos_conn(&self.server.url(), "injector");
                let back: Option<u64> = self.on_redis(|c| redis::cmd("GET").arg(&marker).query(c));
                assert_eq!(back, Some(n), "Redis restarted without its AOF data");
                self.record(fault, String::new());
            }
        }
    }

    /// Every daemon's stdout and stderr so far, oldest daemon first.
    pub(crate) fn all_logs(&self) -> String {
        let mut s = String::new();
        for (i, d) in self
            .dead
            .iter()
            .chain(std::iter::once(&self.daemon))
            .enumerate()
        {
            s.push_str(&format!("===== daemon {i} (pid {}) =====\n", d.pid()));
            s.push_str(&d.all_output());
            s.push('\n');
        }
        s
    }
}

fn config_set(c: &mut redis::Connection, name: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(c)
}

fn start_with_name(
    server: &RedisServer,
    names: &Names,
    settings: &[(String, String)],
    name: &str,
) -> Daemon {
    let mut extra: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    extra.push(("REDIS_CONSUMER_NAME", name));
    start_daemon(server, names, &extra)
}
