//! The benchmark: how fast the release daemon drains a backlog, how close that is to what
//! Redis itself can do, the end-to-end latency below saturation, peak memory, and how late a
//! partial batch leaves after its deadline.
//!
//! Run it with `scripts/bench` (which builds the release binary first), or
//! `cargo build --release && cargo run --release --example bench -- [OPTIONS]`. It starts its
//! own `redis-server` on a free port (no persistence) and, for each batch size:
//!
//! 1. **Ceiling**: fills a list and runs `redis-benchmark` for `LMPOP 1 <list> RIGHT COUNT <B>`,
//!    then for `LPUSH` of one envelope-sized value, both pipelined; one batch costs one of
//!    each, so the ceiling is `B / (1/lmpop_ops + 1/lpush_ops)` messages per second. Best of
//!    several tries; the spread is reported.
//! 2. **Drain**: fills the source with N events, starts the daemon, and polls `LLEN` every
//!    millisecond. Throughput is the messages moved between the first poll that sees the
//!    source shrink and the first poll that sees it empty, divided by that time. Every
//!    message is then checked to be in an envelope (sum of `payload.size`).
//!    CPU per message: the daemon's from `/proc/PID/task/*/schedstat`, Redis's from `INFO cpu`, and the
//!    reference: Redis's CPU per message for the ceiling's own commands (`INFO cpu` around
//!    each redis-benchmark run). Dividing by the reference cancels the machine's speed out.
//! 3. **Peak memory**: the daemon's `VmHWM` right after the drain.
//! 4. **Latency**: a producer pushes events stamped with their push time at a steady fraction
//!    of the measured throughput; a consumer `BRPOP`s envelopes and records arrival minus
//!    push for every message (after a warm-up).
//! 5. **Partial batch**: pushes fewer than B events and measures how long after the
//!    processing timeout the envelope arrives.
//!
//! `--memory` drains 1,000,000 messages (unless `--messages` says otherwise) and only
//! reports peak memory, failing if it exceeds `--max-rss-mb`.
//!
//! `--replica` gives the server a replica; `--min-replicas-ack N` also runs the daemon with
//! `REDIS_MIN_REPLICAS_ACK=N`, so two runs side by side show what the `WAIT` costs.

// Measured figures and counts are small and positive; the cast lints guard the library.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::error::Error;
use std::fs::File;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const SOURCE: &str = "bench:raw";
const DESTINATION: &str = "bench:processing";
const DEAD_LETTER: &str = "bench:dead";
const CEILING_LIST: &str = "bench:ceiling";
/// The key redis-benchmark's built-in LPUSH test writes to.
const BENCHMARK_LPUSH_KEY: &str = "mylist";
/// Field every bench event starts with: nanoseconds since the bench's clock base at push.
const TS_FIELD: &[u8] = b"{\"ts_ns\":";

/// Benchmark of the batch-processor daemon against a private redis-server.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Backlog size for the drain (default 300000; 1000000 with --memory).
    #[arg(long, env = "BENCH_MESSAGES")]
    messages: Option<usize>,
    /// Size of each event in bytes (realistic scraper JSON, padded).
    #[arg(long, env = "BENCH_MESSAGE_BYTES", default_value_t = 500)]
    size: usize,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, env = "BENCH_BATCH_SIZES", value_delimiter = ',', default_values_t = [10, 100, 1000])]
    batch_sizes: Vec<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Memory check only: drain the backlog and report peak RSS, fail above --max-rss-mb.
    #[arg(long)]
    memory: bool,
    /// Peak resident memory allowed in --memory mode, MB.
    #[arg(long, default_value_t = 64.0)]
    max_rss_mb: f64,
    /// Exit with status 1 when a target of the performance issue is missed.
    #[arg(long)]
    check: bool,
    /// Drain runs per batch size (the best throughput is reported, with the spread).
    #[arg(long, default_value_t = 3)]
    drain_tries: usize,
    /// Tries of the redis-benchmark ceiling (the best is used).
    #[arg(long, default_value_t = 5)]
    ceiling_tries: usize,
    /// Messages popped by LMPOP in each ceiling try.
    #[arg(long, default_value_t = 1_000_000)]
    ceiling_messages: usize,
    /// redis-benchmark clients (-c) for the ceiling.
    #[arg(long, default_value_t = 1)]
    ceiling_clients: usize,
    /// redis-benchmark pipeline depth (-P) for the ceiling.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Offered load of the latency run, as a fraction of the measured drain throughput.
    #[arg(long, default_value_t = 0.2)]
    latency_load: f64,
    /// Seconds of steady load measured for latency (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 3.0)]
    latency_seconds: f64,
    /// REDIS_PROCESSING_TIMEOUT given to the daemon, seconds.
    #[arg(long, default_value_t = 0.05)]
    processing_timeout: f64,
    /// Partial-batch deadline tries.
    #[arg(long, default_value_t = 5)]
    deadline_tries: usize,
    /// Skip the redis-benchmark ceiling.
    #[arg(long)]
    skip_ceiling: bool,
    /// Skip the latency and partial-batch runs.
    #[arg(long)]
    skip_latency: bool,
    /// Give up when the daemon moves nothing for this many seconds.
    #[arg(long, default_value_t = 30.0)]
    stall_seconds: f64,
    /// The daemon binary (default: target/release/batch-processor next to this example).
    #[arg(long, env = "BENCH_BINARY")]
    binary: Option<PathBuf>,
    /// Priority source lists the backlog is split over, evenly, all backlogged
    /// (`REDIS_RAW_DATA_QUEUE` names them all; 1: the single source).
    #[arg(long, default_value_t = 1)]
    sources: usize,
    /// Extra environment for the daemon, e.g. --daemon-env REDIS_PREFETCH=2000 (repeatable).
    #[arg(long = "daemon-env", value_name = "KEY=VALUE")]
    daemon_env: Vec<String>,
    /// Give the bench's redis-server one replica (another redis-server replicating it), so
    /// the primary pays for replication as in production.
    #[arg(long)]
    replica: bool,
    /// Run the daemon with REDIS_MIN_REPLICAS_ACK=N (WAIT after each commit); implies
    /// --replica. Compare with a --replica run to see what WAIT costs.
    #[arg(long, value_name = "N")]
    min_replicas_ack: Option<u32>,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench: error: {e}");
            std::process::exit(2);
        }
    }
}

/// One row of the table.
#[derive(Debug, Default)]
struct Row {
    batch: usize,
    messages: usize,
    drains: Vec<Drained>,
    ceiling: Option<Ceiling>,
    latency: Option<Latency>,
    deadline: Option<Deadline>,
}

impl Row {
    /// Best drain throughput over the tries.
    fn throughput(&self) -> Option<f64> {
        self.drains.iter().map(|d| d.throughput).reduce(f64::max)
    }

    /// Worst drain throughput over the tries.
    fn throughput_worst(&self) -> Option<f64> {
        self.drains.iter().map(|d| d.throughput).reduce(f64::min)
    }

    /// Highest peak RSS over the tries.
    fn rss_mb(&self) -> Option<f64> {
        self.drains.iter().map(|d| d.rss_mb).reduce(f64::max)
    }

    fn ratio(&self) -> Option<f64> {
        Some(self.throughput()? / self.ceiling.as_ref()?.best)
    }

    /// The daemon's CPU µs per message, median over the tries.
    fn daemon_us(&self) -> Option<f64> {
        median(
            &self
                .drains
                .iter()
                .map(|d| d.daemon_us_per_msg)
                .collect::<Vec<_>>(),
        )
    }

    /// Redis's CPU µs per message during the drains, median over the tries.
    fn redis_us(&self) -> Option<f64> {
        median(
            &self
                .drains
                .iter()
                .map(|d| d.redis_us_per_msg)
                .collect::<Vec<_>>(),
        )
    }

    /// Redis's CPU µs per message for the minimal work (see [`Ceiling::reference`]).
    fn reference_us(&self) -> Option<f64> {
        self.ceiling.as_ref()?.reference()
    }

    /// The daemon's CPU per message over the reference.
    fn daemon_cpu_ratio(&self) -> Option<f64> {
        Some(self.daemon_us()? / self.reference_us()?)
    }

    /// Redis's CPU per message during the drain over the reference.
    fn redis_cpu_ratio(&self) -> Option<f64> {
        Some(self.redis_us()? / self.reference_us()?)
    }
}

fn run(args: &Args) -> Result<bool> {
    let messages = args
        .messages
        .unwrap_or(if args.memory { 1_000_000 } else { 300_000 });
    if args.batch_sizes.is_empty() || args.batch_sizes.contains(&0) {
        return Err("--batch-sizes: give one or more sizes above 0".into());
    }
    if messages == 0 || args.size < 64 {
        return Err("--messages must be above 0 and --size at least 64".into());
    }
    if args.sources == 0 || args.sources > 16 {
        return Err("--sources must be from 1 to 16".into());
    }
    let binary = daemon_binary(args)?;
    let server = RedisServer::start(&[])?;
    let mut conn = server.conn()?;
    let _replica = match args.replica || args.min_replicas_ack.is_some() {
        true => Some(start_replica(&server, &mut conn)?),
        false => None,
    };
    let machine = machine(&mut conn)?;
    eprintln!(
        "bench: {} x {} B events over {} source list(s), batch sizes {:?}, redis {} on port {}, {} cores ({}), load average {:.2}",
        messages,
        args.size,
        args.sources,
        args.batch_sizes,
        machine.redis_version,
        server.port,
        machine.cores,
        machine.cpu,
        machine.load_at_start,
    );
    if machine.load_at_start > 1.0 {
        eprintln!("bench: warning: the machine is busy (load average {:.2}); figures will be low and noisy", machine.load_at_start);
    }

    let mut rows = Vec::new();
    for &batch in &args.batch_sizes {
        let mut row = Row {
            batch,
            messages,
            ..Row::default()
        };
        if !args.memory && !args.skip_ceiling {
            row.ceiling = Some(ceiling(args, &server, &mut conn, batch)?);
        }
        let tries = if args.memory {
            1
        } else {
            args.drain_tries.max(1)
        };
        let mut daemon: Option<Daemon> = None;
        for t in 0..tries {
            // One daemon at a time: the previous one must not see the next fill.
            if let Some(mut previous) = daemon.take() {
                previous.stop();
            }
            flushall(&mut conn)?;
            fill_sources(&mut conn, &sources(args), messages, args.size)?;
            let mut d = Daemon::spawn(&binary, args, &server, batch)?;
            let drained = match drain(args, &server, &mut conn, &mut d, messages, batch) {
                Ok(drained) => drained,
                Err(e) => {
                    d.stop();
                    return Err(format!("B={batch}: {e}\n{}", d.log_tail()).into());
                }
            };
            eprintln!(
                "bench: B={batch}: drain try {}/{tries}: {messages} in {:.3} s: {:.0} msg/s, peak RSS {:.1} MB, CPU busy: redis {:.0}%, daemon {:.0}%; CPU µs/msg: redis {:.3}, daemon {:.3}",
                t + 1,
                drained.seconds,
                drained.throughput,
                drained.rss_mb,
                drained.redis_cpu * 100.0,
                drained.daemon_cpu * 100.0,
                drained.redis_us_per_msg,
                drained.daemon_us_per_msg,
            );
            row.drains.push(drained);
            daemon = Some(d);
        }
        let mut daemon = daemon.ok_or("no drain ran")?;
        if !args.memory && !args.skip_latency {
            let throughput = row.throughput().unwrap_or(1.0);
            let measured = latency(args, &server, &mut conn, &mut daemon, throughput, batch)
                .and_then(|l| Ok((l, deadline(args, &mut conn, &mut daemon, batch)?)));
            match measured {
                Ok((l, d)) => {
                    row.latency = Some(l);
                    row.deadline = d;
                }
                Err(e) => {
                    daemon.stop();
                    return Err(format!("B={batch}: {e}\n{}", daemon.log_tail()).into());
                }
            }
        }
        daemon.stop();
        rows.push(row);
    }
    flushall(&mut conn)?;

    let table = table(&rows, args.memory);
    println!("{table}");
    let verdicts = verdicts(args, &rows);
    for (what, ok) in &verdicts {
        println!("{} {what}", if *ok { "PASS" } else { "MISS" });
    }
    if let Some(path) = &args.json {
        let doc = to_json(args, &machine, messages, &rows, &verdicts);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    let all_ok = verdicts.iter().all(|(_, ok)| *ok);
    Ok(all_ok || !(args.check || args.memory))
}

// --- Redis server --------------------------------------------------------------------------

/// A private redis-server on a free port; killed on drop.
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl RedisServer {
    fn start(extra: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("bench-redis").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server ({e}); run scripts/ensure-redis"))?;
        let server = RedisServer { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = server.conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} did not start").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn conn(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica of `primary`, in sync (`WAIT 1` answered) before it is returned.
fn start_replica(primary: &RedisServer, conn: &mut redis::Connection) -> Result<RedisServer> {
    let port = primary.port.to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &port])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("WAIT").arg(1).arg(100).query::<i64>(conn)? < 1 {
        if Instant::now() > deadline {
            return Err("the bench's replica did not sync".into());
        }
    }
    eprintln!("bench: replica on port {} in sync", replica.port);
    Ok(replica)
}

fn flushall(conn: &mut redis::Connection) -> Result<()> {
    redis::cmd("FLUSHALL").query::<()>(conn)?;
    Ok(())
}

fn llen(conn: &mut redis::Connection, key: &str) -> Result<usize> {
    Ok(redis::cmd("LLEN").arg(key).query(conn)?)
}

struct Machine {
    cores: usize,
    cpu: String,
    redis_version: String,
    /// The 1-minute load average when the bench started: other work skews the figures.
    load_at_start: f64,
}

fn machine(conn: &mut redis::Connection) -> Result<Machine> {
    let info: String = redis::cmd("INFO").arg("server").query(conn)?;
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load_at_start = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        redis_version,
        load_at_start,
    })
}

// --- Events --------------------------------------------------------------------------------

/// Writes one realistic scraper event of exactly `size` bytes (when `size` leaves room for
/// the fixed fields) into `out`. The event starts with `{"ts_ns":<ts>` so the latency
/// consumer can find the push time without parsing.
fn write_event(out: &mut Vec<u8>, seq: u64, ts_ns: u64, size: usize) {
    let start = out.len();
    // `io::Write` for a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"ts_ns":{ts_ns},"seq":{seq},"event":"product_scraped","url":"https://www.example-shop.de/p/kaffeevollautomat-creme-{sku}","title":"Kaffeevollautomat Crème 3000 – Edelstahl","price":{{"amount":{euros}.{cents:02},"currency":"EUR"}},"in_stock":{stock},"scraped_at":"2025-03-14T09:26:53.{micros:06}+00:00","scraper":{{"name":"shop-spider","version":"2.3.1"}},"description":"Caf\u00e9-Qualit\u00e4t f\u00fcr zu Hause, Lieferung in 2\u20133 Werktagen. "#,
        sku = 100_000 + seq % 900_000,
        euros = 300 + seq % 300,
        cents = seq % 100,
        stock = !seq.is_multiple_of(7),
        micros = seq % 1_000_000,
    );
    const FILLER: &[u8] =
        b"Mahlwerk aus Keramik, 15 bar Pumpendruck, Milchschaumduese, Tassenwaermer. ";
    let closing = b"\"}";
    let used = out.len() - start;
    let pad = size.saturating_sub(used + closing.len());
    for i in 0..pad {
        out.push(FILLER[i % FILLER.len()]);
    }
    out.extend_from_slice(closing);
}

/// The source lists of the drain, highest priority first. With one, [`SOURCE`]; the latency
/// and deadline runs always push onto [`SOURCE`], the last.
fn sources(args: &Args) -> Vec<String> {
    let mut lists: Vec<String> = (1..args.sources).map(|i| format!("{SOURCE}:{i}")).collect();
    lists.push(SOURCE.to_owned());
    lists
}

/// Split `n` events evenly over `lists` (the last takes the remainder).
fn fill_sources(
    conn: &mut redis::Connection,
    lists: &[String],
    n: usize,
    size: usize,
) -> Result<()> {
    let share = n / lists.len();
    for (i, list) in lists.iter().enumerate() {
        let count = if i + 1 == lists.len() {
            n - share * i
        } else {
            share
        };
        fill(conn, list, count, size, None)?;
    }
    Ok(())
}

/// Messages left in all of `lists`, in one round trip.
fn backlog(conn: &mut redis::Connection, lists: &[String]) -> Result<usize> {
    let mut pipe = redis::pipe();
    for list in lists {
        pipe.cmd("LLEN").arg(list);
    }
    let lengths: Vec<usize> = pipe.query(conn)?;
    Ok(lengths.iter().sum())
}

/// LPUSH `n` events onto `key` (oldest first), 1000 values per command, several commands
/// per round trip. With `clock`, each event carries its push time.
fn fill(
    conn: &mut redis::Connection,
    key: &str,
    n: usize,
    size: usize,
    clock: Option<Instant>,
) -> Result<()> {
    const PER_COMMAND: usize = 1000;
    const COMMANDS_PER_TRIP: usize = 8;
    let mut buf = Vec::with_capacity(PER_COMMAND * (size + 16));
    let mut offsets = Vec::with_capacity(PER_COMMAND + 1);
    let mut seq = 0usize;
    while seq < n {
        let mut pipe = redis::pipe();
        for _ in 0..COMMANDS_PER_TRIP {
            if seq >= n {
                break;
            }
            let count = PER_COMMAND.min(n - seq);
            buf.clear();
            offsets.clear();
            offsets.push(0);
            let ts = clock.map_or(0, |c| c.elapsed().as_nanos() as u64);
            for i in 0..count {
                write_event(&mut buf, (seq + i) as u64, ts, size);
                offsets.push(buf.len());
            }
            let cmd = pipe.cmd("LPUSH").arg(key);
            for w in offsets.windows(2) {
                cmd.arg(&buf[w[0]..w[1]]);
            }
            cmd.ignore();
            seq += count;
        }
        pipe.query::<()>(conn)?;
    }
    Ok(())
}

/// The bytes of one envelope holding `batch` events of `size` bytes (the envelope format of
/// the README: fixed fields around the events joined by commas).
fn envelope_size(batch: usize, size: usize) -> usize {
    let mut events = Vec::new();
    for i in 0..batch {
        write_event(&mut events, i as u64, 0, size);
    }
    let head = r#"{"event_id":"00000000-0000-4000-8000-000000000000","event_type":"batch_processing","payload":{"batch":["#;
    let tail = format!(
        r#"],"size":{batch}}},"timestamp":"2025-03-14T09:26:53.123456+00:00","service":"batch_processor"}}"#
    );
    head.len() + events.len() + batch.saturating_sub(1) + tail.len()
}

// --- Ceiling -------------------------------------------------------------------------------

#[derive(Debug)]
struct Ceiling {
    /// Best combined messages per second.
    best: f64,
    /// Worst combined messages per second.
    worst: f64,
    /// (LMPOP ops/s, LPUSH ops/s, combined msg/s) per try.
    tries: Vec<(f64, f64, f64)>,
    envelope_bytes: usize,
    /// Redis's CPU microseconds per message for one `LMPOP ... COUNT B` plus one envelope
    /// `LPUSH` per batch (from `INFO cpu` around each redis-benchmark run), per try.
    reference_us: Vec<f64>,
}

impl Ceiling {
    /// The reference: the median of the tries' Redis CPU per message.
    fn reference(&self) -> Option<f64> {
        median(&self.reference_us)
    }
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn ceiling(
    args: &Args,
    server: &RedisServer,
    conn: &mut redis::Connection,
    batch: usize,
) -> Result<Ceiling> {
    let group = args.pipeline.max(1) * args.ceiling_clients.max(1);
    // redis-benchmark rounds the request count up to whole pipelines per client.
    let ops = ((args.ceiling_messages / batch / group).max(1)) * group;
    let envelope_bytes = envelope_size(batch, args.size);
    let mut tries = Vec::new();
    let mut reference_us = Vec::new();
    for t in 0..args.ceiling_tries.max(1) {
        flushall(conn)?;
        let prefill = (ops + group) * batch;
        fill(conn, CEILING_LIST, prefill, args.size, None)?;
        let count = batch.to_string();
        let cpu_before = redis_cpu_info(conn)?;
        let lmpop = redis_benchmark(
            args,
            server,
            ops,
            &["LMPOP", "1", CEILING_LIST, "RIGHT", "COUNT", &count],
        )?;
        let lmpop_cpu = redis_cpu_info(conn)? - cpu_before;
        let left = llen(conn, CEILING_LIST)?;
        if left == 0 || prefill - left < ops * batch {
            return Err(format!(
                "ceiling: LMPOP popped {} of {prefill} (expected at least {}); the list ran empty",
                prefill - left,
                ops * batch
            )
            .into());
        }
        flushall(conn)?;
        let data = envelope_bytes.to_string();
        let cpu_before = redis_cpu_info(conn)?;
        let lpush = redis_benchmark(args, server, ops, &["-t", "lpush", "-d", &data])?;
        let lpush_cpu = redis_cpu_info(conn)? - cpu_before;
        let pushed = llen(conn, BENCHMARK_LPUSH_KEY)?;
        if pushed < ops {
            return Err(format!("ceiling: redis-benchmark LPUSH made {pushed} of {ops}").into());
        }
        let combined = batch as f64 / (1.0 / lmpop + 1.0 / lpush);
        // Both runs made `ops` batches' worth: one LMPOP and one LPUSH per batch.
        let us = (lmpop_cpu + lpush_cpu) * 1e6 / (ops * batch) as f64;
        eprintln!(
            "bench: B={batch}: ceiling try {}/{}: LMPOP {lmpop:.0} ops/s, LPUSH {envelope_bytes} B {lpush:.0} ops/s => {combined:.0} msg/s; Redis CPU {us:.3} µs/msg",
            t + 1,
            args.ceiling_tries.max(1)
        );
        tries.push((lmpop, lpush, combined));
        reference_us.push(us);
    }
    flushall(conn)?;
    let best = tries.iter().map(|t| t.2).fold(f64::MIN, f64::max);
    let worst = tries.iter().map(|t| t.2).fold(f64::MAX, f64::min);
    Ok(Ceiling {
        best,
        worst,
        tries,
        envelope_bytes,
        reference_us,
    })
}

/// Run redis-benchmark with `-n ops` and the given test; returns requests per second.
fn redis_benchmark(args: &Args, server: &RedisServer, ops: usize, test: &[&str]) -> Result<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-c", &args.ceiling_clients.max(1).to_string()])
        .args(["-P", &args.pipeline.max(1).to_string()])
        .args(["-n", &ops.to_string(), "--csv"])
        .args(test)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-benchmark ({e}); run scripts/ensure-redis"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "redis-benchmark {test:?} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // CSV: a header line, then "test","rps",...
    stdout
        .lines()
        .filter(|l| !l.starts_with("\"test\""))
        .filter_map(|l| l.split(',').nth(1))
        .find_map(|f| f.trim_matches('"').parse::<f64>().ok())
        .ok_or_else(|| format!("cannot read redis-benchmark output: {stdout:?}").into())
}

// --- Daemon --------------------------------------------------------------------------------

fn daemon_binary(args: &Args) -> Result<PathBuf> {
    let path = match &args.binary {
        Some(p) => p.clone(),
        None => {
            // target/<profile>/examples/bench -> target/<profile>/batch-processor
            let exe = std::env::current_exe()?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("cannot locate the target directory")?;
            profile_dir.join("batch-processor")
        }
    };
    if !path.is_file() {
        return Err(format!(
            "daemon binary {} not found; run `cargo build --release` (or use scripts/bench)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(binary: &Path, args: &Args, server: &RedisServer, batch: usize) -> Result<Self> {
        let log = server.dir.path().join(format!("daemon-{batch}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_PORT", server.port.to_string())
            .env("REDIS_RAW_DATA_QUEUE", sources(args).join(","))
            .env("REDIS_PROCESSING_QUEUE", DESTINATION)
            .env("REDIS_DEAD_LETTER_QUEUE", DEAD_LETTER)
            .env("REDIS_KEY_PREFIX", "bench")
            .env("REDIS_CONSUMER_NAME", "bench")
            .env("REDIS_BATCH_SIZE", batch.to_string())
            .env(
                "REDIS_PROCESSING_TIMEOUT",
                args.processing_timeout.to_string(),
            )
            .env("REDIS_HTTP_ADDR", "off")
            .env("REDIS_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn");
        if let Some(n) = args.min_replicas_ack {
            cmd.env("REDIS_MIN_REPLICAS_ACK", n.to_string());
        }
        for kv in &args.daemon_env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--daemon-env {kv:?}: expected KEY=VALUE"))?;
            cmd.env(k, v);
        }
        let child = cmd
            .arg("run")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Daemon { child, log })
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            return Err(format!("the daemon exited early ({status})").into());
        }
        Ok(())
    }

    /// Peak resident set size so far, MB (from /proc/PID/status VmHWM).
    fn peak_rss_mb(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or("no VmHWM in /proc/PID/status")?;
        Ok(kb / 1024.0)
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!(
            "daemon output (last lines of {}):\n{tail}",
            self.log.display()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

// --- Drain ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Drained {
    throughput: f64,
    seconds: f64,
    rss_mb: f64,
    /// CPU time used by redis-server and by the daemon during the drain, as a fraction of
    /// the wall time from the daemon's start to the end of the drain.
    redis_cpu: f64,
    daemon_cpu: f64,
    /// CPU microseconds per message moved: the daemon's (from `/proc/PID/task/*/schedstat`,
    /// its whole life, start-up included) and Redis's (from `INFO cpu`, from the daemon's start to the
    /// end of the drain; the bench's own `LLEN` polls are in it, about 1% at B=100).
    daemon_us_per_msg: f64,
    redis_us_per_msg: f64,
}

fn drain(
    args: &Args,
    server: &RedisServer,
    conn: &mut redis::Connection,
    daemon: &mut Daemon,
    n: usize,
    batch: usize,
) -> Result<Drained> {
    let stall = Duration::from_secs_f64(args.stall_seconds);
    let began = Instant::now();
    let redis_cpu_before = cpu_seconds(server.child.id())?;
    let redis_info_before = redis_cpu_info(conn)?;
    let mut first: Option<(Instant, usize)> = None;
    let mut last_len = n;
    let mut last_change = Instant::now();
    let end = loop {
        let len = backlog(conn, &sources(args))?;
        let now = Instant::now();
        if len != last_len {
            last_len = len;
            last_change = now;
        }
        if first.is_none() && len < n {
            first = Some((now, n - len));
        }
        if len == 0 {
            break now;
        }
        if now - last_change > stall {
            return Err(format!(
                "the daemon moved nothing for {:.0} s ({len} of {n} messages left in the source)",
                args.stall_seconds
            )
            .into());
        }
        daemon.check_alive()?;
        std::thread::sleep(Duration::from_millis(1));
    };
    let rss_mb = daemon.peak_rss_mb()?;
    let wall = began.elapsed().as_secs_f64();
    let redis_cpu = (cpu_seconds(server.child.id())? - redis_cpu_before) / wall;
    let daemon_cpu_seconds =
        run_seconds(daemon.child.id()).or_else(|_| cpu_seconds(daemon.child.id()))?;
    let daemon_cpu = daemon_cpu_seconds / wall;
    let redis_info_seconds = redis_cpu_info(conn)? - redis_info_before;
    let (start, moved_before) = first.ok_or("the source was never seen shrinking")?;
    let seconds = (end - start).as_secs_f64();
    let throughput = if seconds > 0.0 {
        (n - moved_before) as f64 / seconds
    } else {
        f64::INFINITY
    };
    // Every message must be in an envelope: the commit is atomic, so the source being empty
    // means they all are, but check rather than trust.
    let dead = llen(conn, DEAD_LETTER)?;
    let (envelopes, total) = count_enveloped(conn, batch, args.size)?;
    if dead != 0 || total != n {
        return Err(format!(
            "after the drain: {total} messages in {envelopes} envelopes and {dead} dead letters; expected {n} messages"
        )
        .into());
    }
    redis::cmd("DEL").arg(DESTINATION).query::<()>(conn)?;
    Ok(Drained {
        throughput,
        seconds,
        rss_mb,
        redis_cpu,
        daemon_cpu,
        daemon_us_per_msg: daemon_cpu_seconds * 1e6 / n as f64,
        redis_us_per_msg: redis_info_seconds * 1e6 / n as f64,
    })
}

/// Redis's own CPU seconds so far (`used_cpu_sys` + `used_cpu_user` of `INFO cpu`): what a
/// remote Redis would report too.
fn redis_cpu_info(conn: &mut redis::Connection) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn)?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field("used_cpu_sys"), field("used_cpu_user")) {
        (Some(sys), Some(user)) => Ok(sys + user),
        _ => Err(format!("no used_cpu_sys/used_cpu_user in INFO cpu: {info:?}").into()),
    }
}

/// CPU seconds used so far by the threads of process `pid`, in nanoseconds from
/// `/proc/PID/task/*/schedstat` (`/proc/PID/stat` counts in clock ticks of 10 ms: too coarse
/// for a drain of a few tenths of a second). Threads that already ended are not counted; the
/// daemon's runtime threads live as long as it does.
fn run_seconds(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or("odd schedstat")?;
    }
    Ok(ns as f64 / 1e9)
}

/// User plus system CPU seconds used so far by process `pid` (all its threads).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name in parentheses may hold spaces; the fields after it are fixed.
    let after = stat.rsplit_once(')').ok_or("odd /proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum::<Option<f64>>()
        .ok_or("odd /proc/PID/stat")?;
    Ok(ticks / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (envelopes, messages) on the processing list, from each envelope's `"size":` field.
fn count_enveloped(
    conn: &mut redis::Connection,
    batch: usize,
    size: usize,
) -> Result<(usize, usize)> {
    let len = llen(conn, DESTINATION)?;
    let chunk = (8_000_000 / (batch * size).max(1)).max(1);
    let mut total = 0;
    let mut start = 0;
    while start < len {
        let stop = (start + chunk).min(len) - 1;
        let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(DESTINATION)
            .arg(start)
            .arg(stop)
            .query(conn)?;
        for e in &items {
            total += envelope_count(e).ok_or("an envelope without a payload size")?;
        }
        start = stop + 1;
    }
    Ok((len, total))
}

/// The `payload.size` of an envelope: the last `"size":` in it (it follows the batch).
fn envelope_count(envelope: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"size\":";
    let at = envelope.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = envelope[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

// --- Latency -------------------------------------------------------------------------------

#[derive(Debug)]
struct Latency {
    offered: f64,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(
    args: &Args,
    server: &RedisServer,
    conn: &mut redis::Connection,
    daemon: &mut Daemon,
    throughput: f64,
    batch: usize,
) -> Result<Latency> {
    let rate = (throughput * args.latency_load).max(1.0);
    let warmup = Duration::from_millis(500);
    let total = warmup + Duration::from_secs_f64(args.latency_seconds);
    eprintln!(
        "bench: B={batch}: latency at {rate:.0} msg/s for {:.1} s",
        args.latency_seconds
    );
    let clock = Instant::now();
    let pushed = Arc::new(AtomicU64::new(0));
    let producing = Arc::new(AtomicBool::new(true));

    let mut consumer_conn = server.conn()?;
    let consumer = {
        let pushed = pushed.clone();
        let producing = producing.clone();
        let warmup_ns = warmup.as_nanos() as u64;
        let quiet_limit = Duration::from_secs_f64(args.processing_timeout + 5.0);
        std::thread::spawn(move || -> Result<(Vec<u64>, u64)> {
            let mut samples = Vec::new();
            let mut received = 0u64;
            let mut last_arrival = Instant::now();
            loop {
                let done_pushing = !producing.load(Ordering::Acquire);
                if done_pushing && received >= pushed.load(Ordering::Acquire) {
                    break;
                }
                if done_pushing && last_arrival.elapsed() > quiet_limit {
                    return Err(format!(
                        "latency: {received} of {} messages arrived",
                        pushed.load(Ordering::Acquire)
                    )
                    .into());
                }
                // Up to 1000 envelopes per round trip, so the consumer keeps up at any rate;
                // it blocks only while the processing list is empty.
                let got: Option<(String, Vec<Vec<u8>>)> = redis::cmd("BLMPOP")
                    .arg(0.2)
                    .arg(1)
                    .arg(DESTINATION)
                    .arg("RIGHT")
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut consumer_conn)?;
                let Some((_, envelopes)) = got else { continue };
                let now = clock.elapsed().as_nanos() as u64;
                last_arrival = Instant::now();
                for ts in envelopes.iter().flat_map(|e| push_times(e)) {
                    received += 1;
                    if ts >= warmup_ns {
                        samples.push(now.saturating_sub(ts));
                    }
                }
            }
            Ok((samples, received))
        })
    };

    let produced = produce(args, conn, daemon, clock, total, rate, &pushed);
    producing.store(false, Ordering::Release);
    let consumed = consumer.join().map_err(|_| "latency consumer panicked")?;
    produced?;
    let (mut samples, _) = consumed.map_err(|e| e.to_string())?;
    if samples.is_empty() {
        return Err("latency: no samples".into());
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] as f64 / 1e6
    };
    Ok(Latency {
        offered: rate,
        samples: samples.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    })
}

/// The latency producer: every millisecond, push what is due so far in one LPUSH, each event
/// stamped with the push time.
fn produce(
    args: &Args,
    conn: &mut redis::Connection,
    daemon: &mut Daemon,
    clock: Instant,
    total: Duration,
    rate: f64,
    pushed: &AtomicU64,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut offsets = Vec::new();
    let mut seq = 0u64;
    let tick = Duration::from_millis(1);
    let mut next = clock + tick;
    loop {
        let elapsed = clock.elapsed();
        if elapsed >= total {
            return Ok(());
        }
        let due = (rate * elapsed.as_secs_f64()) as u64;
        if due > seq {
            buf.clear();
            offsets.clear();
            offsets.push(0);
            let ts = clock.elapsed().as_nanos() as u64;
            for s in seq..due {
                write_event(&mut buf, s, ts, args.size);
                offsets.push(buf.len());
            }
            let mut cmd = redis::cmd("LPUSH");
            cmd.arg(SOURCE);
            for w in offsets.windows(2) {
                cmd.arg(&buf[w[0]..w[1]]);
            }
            cmd.query::<()>(conn)?;
            pushed.fetch_add(due - seq, Ordering::AcqRel);
            seq = due;
        }
        daemon.check_alive()?;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += tick;
    }
}

/// The `ts_ns` of every bench event spliced into an envelope.
fn push_times(envelope: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let mut rest = envelope;
    std::iter::from_fn(move || {
        let at = rest.windows(TS_FIELD.len()).position(|w| w == TS_FIELD)? + TS_FIELD.len();
        rest = &rest[at..];
        let mut v = 0u64;
        let mut digits = 0;
        for b in rest.iter().take_while(|b| b.is_ascii_digit()) {
            v = v * 10 + u64::from(b - b'0');
            digits += 1;
        }
        rest = &rest[digits..];
        Some(v)
    })
}

// --- Partial batch deadline ----------------------------------------------------------------

#[derive(Debug)]
struct Deadline {
    /// How far after the processing timeout each partial envelope arrived, ms.
    late_ms: Vec<f64>,
}

impl Deadline {
    fn max(&self) -> f64 {
        self.late_ms.iter().copied().fold(f64::MIN, f64::max)
    }
}

fn deadline(
    args: &Args,
    conn: &mut redis::Connection,
    daemon: &mut Daemon,
    batch: usize,
) -> Result<Option<Deadline>> {
    if batch < 2 {
        return Ok(None);
    }
    let timeout = Duration::from_secs_f64(args.processing_timeout);
    let mut late_ms = Vec::new();
    for t in 0..args.deadline_tries {
        // Let the daemon settle into its idle wait first.
        std::thread::sleep(Duration::from_millis(200));
        daemon.check_alive()?;
        let mut buf = Vec::new();
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(SOURCE);
        let partial = batch / 2;
        let mut offsets = vec![0];
        for i in 0..partial {
            write_event(&mut buf, i as u64, 0, args.size);
            offsets.push(buf.len());
        }
        for w in offsets.windows(2) {
            cmd.arg(&buf[w[0]..w[1]]);
        }
        let pushed_at = Instant::now();
        cmd.query::<()>(conn)?;
        let got: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
            .arg(DESTINATION)
            .arg(timeout.as_secs_f64() + 5.0)
            .query(conn)?;
        let waited = pushed_at.elapsed();
        let Some((_, envelope)) = got else {
            return Err(format!("partial batch {t}: no envelope within the timeout + 5 s").into());
        };
        if envelope_count(&envelope) != Some(partial) {
            return Err(format!(
                "partial batch {t}: envelope holds {:?} messages, expected {partial}",
                envelope_count(&envelope)
            )
            .into());
        }
        late_ms.push((waited.as_secs_f64() - timeout.as_secs_f64()) * 1e3);
    }
    Ok(Some(Deadline { late_ms }))
}

// --- Report --------------------------------------------------------------------------------

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn table(rows: &[Row], memory: bool) -> String {
    let mut out = String::new();
    if memory {
        out += "| batch size | messages | drain msg/s | peak RSS MB |\n";
        out += "|-----------:|---------:|------------:|------------:|\n";
        for r in rows {
            out += &format!(
                "| {} | {} | {} | {} |\n",
                r.batch,
                r.messages,
                fmt_opt(r.throughput(), 0),
                fmt_opt(r.rss_mb(), 1)
            );
        }
        return out;
    }
    out += "| batch size | throughput msg/s (spread) | ceiling msg/s (spread) | ratio | daemon CPU µs/msg | Redis CPU µs/msg | reference µs/msg | daemon/ref | Redis/ref | p50 ms | p99 ms | peak RSS MB | partial batch late ms (max) |\n";
    out += "|-----------:|--------------------------:|-----------------------:|------:|------------------:|-----------------:|-----------------:|-----------:|----------:|-------:|-------:|------------:|----------------------------:|\n";
    for r in rows {
        let throughput = match (r.throughput(), r.throughput_worst()) {
            (Some(best), Some(worst)) => format!("{best:.0} ({worst:.0}–{best:.0})"),
            _ => "-".to_string(),
        };
        let ceiling = r.ceiling.as_ref().map_or_else(
            || "-".to_string(),
            |c| format!("{:.0} ({:.0}–{:.0})", c.best, c.worst, c.best),
        );
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.batch,
            throughput,
            ceiling,
            fmt_opt(r.ratio(), 2),
            fmt_opt(r.daemon_us(), 3),
            fmt_opt(r.redis_us(), 3),
            fmt_opt(r.reference_us(), 3),
            fmt_opt(r.daemon_cpu_ratio(), 2),
            fmt_opt(r.redis_cpu_ratio(), 2),
            fmt_opt(r.latency.as_ref().map(|l| l.p50_ms), 1),
            fmt_opt(r.latency.as_ref().map(|l| l.p99_ms), 1),
            fmt_opt(r.rss_mb(), 1),
            fmt_opt(r.deadline.as_ref().map(Deadline::max), 1),
        );
    }
    out
}

/// The targets of the performance issue that this run can judge.
fn verdicts(args: &Args, rows: &[Row]) -> Vec<(String, bool)> {
    let mut v = Vec::new();
    for r in rows {
        if let Some(rss) = r.rss_mb() {
            let limit = if args.memory { args.max_rss_mb } else { 64.0 };
            v.push((
                format!("B={}: peak RSS {rss:.1} MB < {limit} MB", r.batch),
                rss < limit,
            ));
        }
        let target = match r.batch {
            10 => Some(0.6),
            100 => Some(0.8),
            _ => None,
        };
        if let (Some(target), Some(ratio)) = (target, r.ratio()) {
            v.push((
                format!("B={}: throughput/ceiling {ratio:.2} >= {target}", r.batch),
                ratio >= target,
            ));
        }
        if r.batch == 100 {
            if let Some(ratio) = r.daemon_cpu_ratio() {
                v.push((
                    format!("B=100: daemon CPU per message {ratio:.2} of the reference <= 0.6"),
                    ratio <= 0.6,
                ));
            }
            if let Some(ratio) = r.redis_cpu_ratio() {
                v.push((
                    format!("B=100: Redis CPU per message {ratio:.2} of the reference <= 1.0"),
                    ratio <= 1.0,
                ));
            }
        }
        if let Some(d) = &r.deadline {
            let late = d.max();
            v.push((
                format!(
                    "B={}: partial batch left {late:.1} ms after its deadline (<= 20 ms)",
                    r.batch
                ),
                late <= 20.0,
            ));
        }
    }
    v
}

fn to_json(
    args: &Args,
    machine: &Machine,
    messages: usize,
    rows: &[Row],
    verdicts: &[(String, bool)],
) -> serde_json::Value {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "batch_size": r.batch,
                "messages": r.messages,
                "throughput_msgs_per_s": r.throughput(),
                "throughput_worst_msgs_per_s": r.throughput_worst(),
                "drains": r.drains.iter().map(|d| json!({
                    "msgs_per_s": d.throughput,
                    "seconds": d.seconds,
                    "peak_rss_mb": d.rss_mb,
                    "redis_cpu_busy": d.redis_cpu,
                    "daemon_cpu_busy": d.daemon_cpu,
                    "daemon_cpu_us_per_msg": d.daemon_us_per_msg,
                    "redis_cpu_us_per_msg": d.redis_us_per_msg,
                })).collect::<Vec<_>>(),
                "daemon_cpu_us_per_msg": r.daemon_us(),
                "redis_cpu_us_per_msg": r.redis_us(),
                "reference_redis_cpu_us_per_msg": r.reference_us(),
                "reference_tries_us_per_msg": r.ceiling.as_ref().map(|c| c.reference_us.clone()),
                "daemon_cpu_over_reference": r.daemon_cpu_ratio(),
                "redis_cpu_over_reference": r.redis_cpu_ratio(),
                "ceiling_msgs_per_s": r.ceiling.as_ref().map(|c| c.best),
                "ceiling_worst_msgs_per_s": r.ceiling.as_ref().map(|c| c.worst),
                "ceiling_envelope_bytes": r.ceiling.as_ref().map(|c| c.envelope_bytes),
                "ceiling_tries": r.ceiling.as_ref().map(|c| c.tries.iter().map(|t| json!({
                    "lmpop_ops_per_s": t.0, "lpush_ops_per_s": t.1, "msgs_per_s": t.2
                })).collect::<Vec<_>>()),
                "ratio": r.ratio(),
                "latency_offered_msgs_per_s": r.latency.as_ref().map(|l| l.offered),
                "latency_samples": r.latency.as_ref().map(|l| l.samples),
                "latency_p50_ms": r.latency.as_ref().map(|l| l.p50_ms),
                "latency_p99_ms": r.latency.as_ref().map(|l| l.p99_ms),
                "latency_max_ms": r.latency.as_ref().map(|l| l.max_ms),
                "peak_rss_mb": r.rss_mb(),
                "partial_batch_late_ms": r.deadline.as_ref().map(|d| d.late_ms.clone()),
            })
        })
        .collect();
    json!({
        "machine": {
            "cores": machine.cores,
            "cpu": machine.cpu,
            "redis_version": machine.redis_version,
            "load_average_at_start": machine.load_at_start,
        },
        "settings": {
            "messages": messages,
            "message_bytes": args.size,
            "sources": args.sources,
            "processing_timeout_s": args.processing_timeout,
            "drain_tries": args.drain_tries,
            "ceiling_tries": args.ceiling_tries,
            "ceiling_messages": args.ceiling_messages,
            "ceiling_clients": args.ceiling_clients,
            "pipeline": args.pipeline,
            "latency_load": args.latency_load,
            "latency_seconds": args.latency_seconds,
            "daemon_env": args.daemon_env,
            "replica": args.replica || args.min_replicas_ack.is_some(),
            "min_replicas_ack": args.min_replicas_ack,
            "memory_mode": args.memory,
        },
        "rows": rows,
        "targets": verdicts.iter().map(|(what, ok)| json!({"check": what, "met": ok})).collect::<Vec<_>>(),
    })
}
