//! The scale-out benchmark (`scripts/bench --cluster`): aggregate drain throughput of 1, 2
//! and 3 pipelines (`REDIS_SHARDS`) on a local Redis Cluster of three primaries (no
//! replicas), the Redis CPU time per message on each node, and one pipeline on a single
//! standalone server for comparison.
//!
//! Each pipeline's source is filled with `--messages` events; one daemon (release build)
//! drains them all. Throughput is all messages over the time from the first poll that sees a
//! source shrink to the first that sees every source empty. Redis CPU is each node's
//! `/proc/PID/stat` user+system time over the drain. Every message is checked to be in an
//! envelope afterwards. Best of `--tries` runs per row.

#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::error::Error;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use batch_processor::scale::{shards, slot::key_slot};
use batch_processor::settings::Queues;
use clap::Parser;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Scale-out benchmark on a local three-primary cluster.
#[derive(Debug, Parser)]
#[command(name = "bench_cluster")]
struct Args {
    /// Events per pipeline.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Event size in bytes.
    #[arg(long, default_value_t = 500)]
    size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Runs per row (the best is reported).
    #[arg(long, default_value_t = 3)]
    tries: usize,
    /// Pipeline counts to measure on the cluster.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    pipelines: Vec<usize>,
    /// The daemon binary.
    #[arg(
        long,
        env = "BENCH_BINARY",
        default_value = "target/release/batch-processor"
    )]
    binary: PathBuf,
}

/// A redis-server process on a free port, killed on drop.
struct Node {
    port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Node {
    fn start(cluster: bool) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("bench-node").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"]);
        if cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let node = Node {
            port,
            _dir: dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while node
            .conn()
            .and_then(|mut c| Ok(redis::cmd("PING").query::<String>(&mut c)?))
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(format!("redis-server on {port} did not start").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(node)
    }

    fn conn(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()?)
    }

    /// User plus system CPU seconds so far.
    fn cpu(&self) -> Result<f64> {
        proc_cpu(self.child.id())
    }

    /// The slot ranges this node owns.
    fn owns(&self, slot: u16) -> Result<bool> {
        let v: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.conn()?)?;
        for range in v {
            if let redis::Value::Array(f) = range {
                let (lo, hi, port) = match (&f[0], &f[1], &f[2]) {
                    (redis::Value::Int(lo), redis::Value::Int(hi), redis::Value::Array(p)) => (
                        *lo,
                        *hi,
                        match p.get(1) {
                            Some(redis::Value::Int(p)) => *p,
                            _ => 0,
                        },
                    ),
                    _ => continue,
                };
                if (lo..=hi).contains(&i64::from(slot)) && port == i64::from(self.port) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// User plus system CPU seconds so far of process `pid` (`/proc/PID/stat`, 100 ticks/s).
fn proc_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').ok_or("odd stat")?.1;
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Ok((f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0)
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured drain.
struct Run {
    throughput: f64,
    /// Redis CPU seconds per node over the drain.
    node_cpu: Vec<f64>,
    /// Messages each node's pipelines held.
    node_messages: Vec<usize>,
    /// The daemon's CPU seconds, start to end of the drain.
    daemon_cpu: f64,
    messages: usize,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("bench_cluster: error: {e}");
        std::process::exit(2);
    }
}

fn run(args: &Args) -> Result<()> {
    let standalone = Node::start(false)?;
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(true)).collect::<Result<_>>()?;
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "bench_cluster: {} events of {} B per pipeline, batch {}, best of {}",
        args.messages, args.size, args.batch, args.tries
    );
    let base = best(args, &[&standalone], 0)?;
    println!("| setup | pipelines | messages | msg/s (aggregate) | Redis CPU µs per message, per node (that node's messages) | Redis CPU µs/msg, all nodes | daemon CPU µs/msg | ratio to standalone |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    print_row("standalone", 1, &base, base.throughput);
    let refs: Vec<&Node> = nodes.iter().collect();
    for &p in &args.pipelines {
        let r = best(args, &refs, p)?;
        print_row("cluster, 3 primaries", p, &r, base.throughput);
    }
    Ok(())
}

fn print_row(setup: &str, pipelines: usize, r: &Run, standalone: f64) {
    let per_node: Vec<String> = r
        .node_cpu
        .iter()
        .zip(&r.node_messages)
        .map(|(c, m)| match m {
            0 => format!("idle ({:.2} s)", c),
            m => format!("{:.2} ({m})", c * 1e6 / *m as f64),
        })
        .collect();
    println!(
        "| {setup} | {pipelines} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} |",
        r.messages,
        r.throughput,
        per_node.join(" / "),
        r.node_cpu.iter().sum::<f64>() * 1e6 / r.messages as f64,
        r.daemon_cpu * 1e6 / r.messages as f64,
        r.throughput / standalone
    );
}

/// The best of `--tries` drains of `shards` pipelines (0: today's single pipeline).
fn best(args: &Args, nodes: &[&Node], shards: usize) -> Result<Run> {
    let mut best: Option<Run> = None;
    for t in 0..args.tries {
        let run = drain(args, nodes, shards, t)?;
        eprintln!(
            "bench_cluster: {} pipeline(s) on {} node(s): {:.0} msg/s",
            shards.max(1),
            nodes.len(),
            run.throughput
        );
        if best.as_ref().is_none_or(|b| run.throughput > b.throughput) {
            best = Some(run);
        }
    }
    best.ok_or_else(|| "no run".into())
}

/// The node owning `key` (the only node when there is one).
fn owner<'a>(nodes: &[&'a Node], key: &str) -> Result<&'a Node> {
    if nodes.len() == 1 {
        return Ok(nodes[0]);
    }
    for n in nodes {
        if n.owns(key_slot(key))? {
            return Ok(n);
        }
    }
    Err(format!("no node owns {key}").into())
}

fn drain(args: &Args, nodes: &[&Node], shard_count: usize, t: usize) -> Result<Run> {
    // Names of their own per run: a finished run's replica stays in its fleet for a lease
    // TTL, and would take a share of the next run's pipelines.
    let run = format!("b{shard_count}-{t}");
    let base = Queues {
        sources: vec![format!("{run}:raw")],
        processing: format!("{run}:processing"),
        dead_letter: format!("{run}:dead"),
    };
    let pipelines = shards::pipelines(&base, shard_count);
    for q in &pipelines {
        fill(
            &mut owner(nodes, &q.sources[0])?.conn()?,
            &q.sources[0],
            args.messages,
            args.size,
        )?;
    }
    let total = args.messages * pipelines.len();
    let cpu_before: Vec<f64> = nodes.iter().map(|n| n.cpu()).collect::<Result<_>>()?;
    let mut daemon = Command::new(&args.binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDIS_PORT", nodes[0].port.to_string())
        .env("REDIS_RAW_DATA_QUEUE", &base.sources[0])
        .env("REDIS_PROCESSING_QUEUE", &base.processing)
        .env("REDIS_DEAD_LETTER_QUEUE", &base.dead_letter)
        .env("REDIS_SHARDS", shard_count.to_string())
        .env("REDIS_KEY_PREFIX", &run)
        .env("REDIS_BATCH_SIZE", args.batch.to_string())
        .env("REDIS_HTTP_ADDR", "off")
        .env("RUST_LOG", "warn")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut conns: Vec<(redis::Connection, String)> = pipelines
        .iter()
        .map(|q| Ok((owner(nodes, &q.sources[0])?.conn()?, q.sources[0].clone())))
        .collect::<Result<_>>()?;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        let mut left = 0;
        for (c, list) in &mut conns {
            left += redis::cmd("LLEN").arg(&*list).query::<usize>(c)?;
        }
        let now = Instant::now();
        if first.is_none() && left < total {
            first = Some((now, total - left));
        }
        if left == 0 {
            break now;
        }
        if now > deadline {
            let _ = daemon.kill();
            return Err("the drain did not finish in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let cpu_after: Vec<f64> = nodes.iter().map(|n| n.cpu()).collect::<Result<_>>()?;
    let daemon_cpu = proc_cpu(daemon.id())?;
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let mut node_messages = vec![0; nodes.len()];
    for q in &pipelines {
        let port = owner(nodes, &q.processing)?.port;
        if let Some(i) = nodes.iter().position(|n| n.port == port) {
            node_messages[i] += args.messages;
        }
    }
    let mut enveloped = 0;
    for q in &pipelines {
        let mut c = owner(nodes, &q.processing)?.conn()?;
        let envelopes: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&q.processing)
            .arg(0)
            .arg(-1)
            .query(&mut c)?;
        for e in &envelopes {
            let v: serde_json::Value = serde_json::from_slice(e)?;
            enveloped += v["payload"]["size"].as_u64().unwrap_or(0) as usize;
        }
        redis::cmd("DEL").arg(&q.processing).query::<()>(&mut c)?;
    }
    if enveloped != total {
        return Err(format!("{enveloped} of {total} messages enveloped").into());
    }
    let (start, before) = first.ok_or("never saw the drain start")?;
    let seconds = (end - start).as_secs_f64().max(1e-9);
    Ok(Run {
        throughput: (total - before) as f64 / seconds,
        node_cpu: cpu_after
            .iter()
            .zip(&cpu_before)
            .map(|(a, b)| a - b)
            .collect(),
        node_messages,
        daemon_cpu,
        messages: total,
    })
}

/// LPUSH `n` events of about `size` bytes onto `list`, 1000 per command.
fn fill(conn: &mut redis::Connection, list: &str, n: usize, size: usize) -> Result<()> {
    let mut seq = 0;
    while seq < n {
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(list);
        for _ in 0..1000.min(n - seq) {
            let head = format!(
                r#"{{"seq":{seq},"event":"product_scraped","url":"https://example.com/p/{seq}","body":""#
            );
            let mut e = head.into_bytes();
            e.resize(size.saturating_sub(2).max(e.len()), b'x');
            e.extend_from_slice(b"\"}");
            cmd.arg(e);
            seq += 1;
        }
        cmd.query::<()>(conn)?;
    }
    Ok(())
}
