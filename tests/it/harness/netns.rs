//! A private network namespace per test, for faults that `iptables` makes on a loopback of
//! the test's own: packet loss, a silent partition, a connection reset. Rules there touch
//! nothing outside it, so these tests run in parallel with each other and with the rest.
//!
//! - [`Netns`] holds the namespace (a `cat` started by `unshare --net`, which ends when the
//!   test drops it, panics or dies, because its stdin closes), brings its `lo` up, wraps
//!   commands so they run inside it (`nsenter --net=/proc/PID/ns/net`, which execs: the
//!   child's pid is the program's), and runs closures on a thread moved into it (`setns`).
//! - [`NsRedis`] is a `redis-server` inside it on `127.0.0.1:6379` (the port the daemon
//!   uses, subject to the faults) that also listens on a Unix socket. A Unix socket belongs
//!   to the file system, not to a network namespace, and `iptables` never sees it: the test
//!   produces and audits through it, from outside, whatever the faults do.
//!
//! Creating a namespace needs root (`CAP_SYS_ADMIN`); [`Netns::new`] says why it cannot, and
//! [`netns_or_skip`] prints that as `SKIPPED: <reason>` past the test harness's capture.

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{connect, wait_until};

/// The port `redis-server` listens on inside a namespace (every port is free there).
pub(crate) const NS_REDIS_PORT: u16 = 6379;

/// A private network namespace, gone once nothing runs in it.
pub(crate) struct Netns {
    holder: Child,
}

/// The namespace for `test`, or `None` after printing `SKIPPED: <test>: <reason>` on the
/// real stderr (not captured, so it shows in every run).
pub(crate) fn netns_or_skip(test: &str) -> Option<Netns> {
    match Netns::new() {
        Ok(ns) => Some(ns),
        Err(reason) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
            None
        }
    }
}

/// Run `program args` to completion; `Err` with what it printed when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

impl Netns {
    /// A new namespace with its loopback up, or why none can be made here (not root, no
    /// `unshare`/`nsenter`/`ip`/`iptables`; `scripts/ensure-net-tools` installs them).
    pub(crate) fn new() -> Result<Self, String> {
        run("iptables", &["--version"])
            .map_err(|e| format!("{e} (scripts/ensure-net-tools installs iptables)"))?;
        run("unshare", &["--net", "true"])
            .map_err(|e| format!("no private network namespace: {e}"))?;
        let holder = Command::new("unshare")
            .args(["--net", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let ns = Netns { holder };
        // `unshare` execs `cat` once it is in the namespace: wait for that before entering.
        let own = std::fs::read_link("/proc/self/ns/net").ok();
        let moved = wait_until(Duration::from_secs(5), || {
            std::fs::read_link(ns.path())
                .ok()
                .is_some_and(|l| Some(l) != own)
        });
        if !moved {
            return Err("unshare --net did not enter a new namespace".into());
        }
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `/proc/PID/ns/net` of the holder.
    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// `cmd` (program, arguments and the environment it sets) to be run inside the
    /// namespace. Its environment is cleared first (PATH kept); stdio must be set again.
    pub(crate) fn wrap(&self, cmd: &Command) -> Command {
        let mut wrapped = Command::new("nsenter");
        wrapped
            .arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env_clear()
            // nsenter finds the program on this PATH, unless `cmd` sets its own.
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                wrapped.env(k, v);
            }
        }
        wrapped
    }

    /// Run `program args` inside the namespace to completion.
    fn exec(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut all = vec![
            format!("--net={}", self.path()),
            "--".into(),
            program.into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run("nsenter", &all)
    }

    /// `iptables` with `rule` (its arguments, split at spaces) inside the namespace; panics
    /// when it fails.
    pub(crate) fn iptables(&self, rule: &str) {
        let args: Vec<&str> = rule.split_whitespace().collect();
        self.exec("iptables", &args)
            .unwrap_or_else(|e| panic!("iptables inside the namespace: {e}"));
    }

    /// Drop a random `percent` of the packets to and from `port` (both directions).
    pub(crate) fn lose(&self, port: u16, percent: u32) {
        let p = f64::from(percent) / 100.0;
        for dir in ["--dport", "--sport"] {
            self.iptables(&format!(
                "-A INPUT -p tcp {dir} {port} -m statistic --mode random --probability {p} -j DROP"
            ));
        }
    }

    /// Drop every packet that `port` sends (replies, acknowledgements) except resets:
    /// requests still reach it, and it still executes them, but no reply ever comes back.
    /// Resets pass, so that [`reset`](Self::reset) still reaches the client.
    pub(crate) fn drop_replies(&self, port: u16) {
        self.iptables(&format!(
            "-A INPUT -p tcp --sport {port} ! --tcp-flags RST RST -j DROP"
        ));
    }

    /// Drop every packet to and from `port`, silently (no reset, no ICMP): a partition.
    pub(crate) fn partition(&self, port: u16) {
        self.iptables(&format!("-A INPUT -p tcp --dport {port} -j DROP"));
        self.drop_replies(port);
    }

    /// Answer every packet to `port` with a TCP reset, ahead of the other rules: open
    /// connections fail at their next packet, and new ones are refused.
    pub(crate) fn reset(&self, port: u16) {
        self.iptables(&format!(
            "-I INPUT -p tcp --dport {port} -j REJECT --reject-with tcp-reset"
        ));
    }

    /// Packets the namespace's `DROP` rules have dropped so far (`iptables -L -v -x`).
    pub(crate) fn dropped(&self) -> u64 {
        let mut cmd = Command::new("iptables");
        cmd.args(["-L", "INPUT", "-n", "-v", "-x"]);
        let out = self
            .wrap(&cmd)
            .stdin(Stdio::null())
            .output()
            .expect("iptables -L inside the namespace");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("DROP"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Remove every rule: the link is healthy again.
    pub(crate) fn heal(&self) {
        self.iptables("-F INPUT");
    }

    /// Run `f` on a thread moved into the namespace: the sockets it opens are the
    /// namespace's (`127.0.0.1` is its loopback).
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.file();
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&file);
                f()
            })
            .join()
            .expect("thread inside the namespace panicked")
        })
    }

    /// The namespace as an open file, for [`enter`].
    pub(crate) fn file(&self) -> std::fs::File {
        std::fs::File::open(self.path()).expect("open the namespace")
    }
}

/// Move the calling thread into the namespace `file` (from [`Netns::file`]).
pub(crate) fn enter(file: &std::fs::File) {
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .expect("setns into the test's network namespace");
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A `redis-server` inside a [`Netns`]: TCP on its `127.0.0.1:`[`NS_REDIS_PORT`] for the
/// daemon, a Unix socket for the test. Killed on drop.
pub(crate) struct NsRedis {
    dir: tempfile::TempDir,
    child: Child,
}

impl NsRedis {
    /// A server without persistence inside `ns`.
    pub(crate) fn start(ns: &Netns) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &NS_REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
            .arg("--unixsocket")
            .arg(dir.path().join("redis.sock"))
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path());
        let child = ns
            .wrap(&cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        let server = NsRedis { dir, child };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let pong = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server inside the namespace did not start");
    }

    /// The Unix socket's URL, for connections from the test (outside the namespace).
    pub(crate) fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }

    /// A connection through the Unix socket, untouched by the namespace's faults.
    pub(crate) fn conn(&self) -> redis::Connection {
        connect(&self.url())
    }
}

impl Drop for NsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
