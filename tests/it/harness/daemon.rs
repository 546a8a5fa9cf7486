//! The daemon binary run as a child process with a clean environment: long-running
//! (`run`, output captured line by line) or as a one-shot CLI command.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{signal, wait_until, Names, RedisServer};

/// The built daemon binary, or the one named by `BATCH_PROCESSOR_BIN` when set (a copy
/// taken right after the build, when several worktrees share one target directory and
/// overwrite each other's binary, or a release build for the benchmark script).
pub(crate) fn binary() -> PathBuf {
    match std::env::var_os("BATCH_PROCESSOR_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_batch-processor")),
    }
}

/// A running daemon process with its stdout captured line by line.
pub(crate) struct Daemon {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// The environment a test daemon gets: queues, a fast lease, no HTTP unless asked.
pub(crate) fn daemon_env(server: &RedisServer, names: &Names) -> Vec<(String, String)> {
    daemon_env_at(server.port, names)
}

/// [`daemon_env`] for a Redis on `127.0.0.1:port`.
pub(crate) fn daemon_env_at(port: u16, names: &Names) -> Vec<(String, String)> {
    [
        ("REDIS_PORT", port.to_string()),
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

/// [`daemon_env`] with `extra` settings added or replacing the defaults.
pub(crate) fn env_with(
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
pub(crate) fn start_daemon(server: &RedisServer, names: &Names, extra: &[(&str, &str)]) -> Daemon {
    spawn_daemon(&env_with(server, names, extra), &["run"])
}

/// The binary with exactly `env` (plus PATH) and `args`, stdout and stderr piped.
pub(crate) fn binary_command(env: &[(String, String)], args: &[&str]) -> Command {
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
pub(crate) fn spawn_daemon(env: &[(String, String)], args: &[&str]) -> Daemon {
    spawn_command(binary_command(env, args))
}

/// Start `cmd` (the binary, maybe wrapped), capturing its stdout and stderr line by line.
pub(crate) fn spawn_command(mut cmd: Command) -> Daemon {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; returns the exit code and how long it took.
    ///
    /// A process signalled before it even reached `main` dies of the signal whatever the
    /// daemon does, so this first waits (up to 5 s) for its first line of output: from then on
    /// the daemon's own handling is what is tested.
    pub(crate) fn terminate(&mut self) -> (Option<i32>, Duration) {
        wait_until(Duration::from_secs(5), || {
            !self.lines.lock().unwrap().is_empty()
                || !self.stderr.lock().unwrap().is_empty()
                || !matches!(self.child.try_wait(), Ok(None))
        });
        let started = Instant::now();
        signal(self.pid(), "TERM");
        let status = self.wait_timeout(Duration::from_secs(15));
        (status, started.elapsed())
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait up to `limit` for exit; `None` if it is still running (then it is killed).
    pub(crate) fn wait_timeout(&mut self, limit: Duration) -> Option<i32> {
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
    pub(crate) fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    /// Wait until a stdout line contains `needle`.
    pub(crate) fn wait_for_line(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
        })
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything written so far on stdout and stderr, one line each.
    pub(crate) fn all_output(&self) -> String {
        let mut s = self.lines.lock().unwrap().join("\n");
        s.push('\n');
        s.push_str(&self.stderr.lock().unwrap().join("\n"));
        s
    }

    /// Stdout lines so far (raw).
    pub(crate) fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Stdout lines parsed as JSON whose `message` is `msg`.
    pub(crate) fn events(&self, msg: &str) -> Vec<serde_json::Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["message"] == msg)
            .collect()
    }

    /// Peak resident memory (`VmHWM`) in kB, read from /proc while the process runs.
    pub(crate) fn vm_hwm_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    }

    /// The `REDIS_SHUTDOWN_GRACE` this daemon was started with (read from its environment),
    /// or the default of 4 s.
    pub(crate) fn shutdown_grace(&self) -> Duration {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid()))
            .expect("the daemon's environment is readable while it runs");
        environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("REDIS_SHUTDOWN_GRACE="))
            .map_or(DEFAULT_SHUTDOWN_GRACE, |v| {
                Duration::from_secs_f64(v.parse().expect("REDIS_SHUTDOWN_GRACE is a number"))
            })
    }

    /// The longest a SIGTERM may take, as [`terminate`](Self::terminate) measures it: the
    /// promise (the grace plus 0.1 s) plus [`SIGTERM_ALLOWANCE`].
    pub(crate) fn sigterm_limit(&self) -> Duration {
        self.shutdown_grace() + SHUTDOWN_PROMISE_EXTRA + SIGTERM_ALLOWANCE
    }

    /// SIGTERM, then assert the exit is code 0 within the promised time
    /// ([`sigterm_limit`](Self::sigterm_limit)).
    pub(crate) fn terminate_ok(&mut self) {
        let limit = self.sigterm_limit();
        let (code, took) = self.terminate();
        assert_eq!(
            code,
            Some(0),
            "SIGTERM must exit 0 (took {took:?}); stderr: {:?}",
            self.stderr.lock().unwrap()
        );
        assert!(
            took <= limit,
            "SIGTERM exit took {took:?}, more than {limit:?} (grace + 0.1 s + allowance)"
        );
    }
}

/// `REDIS_SHUTDOWN_GRACE`'s default (`config/default.toml`).
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// What the README promises on top of the grace: the process exits within
/// `REDIS_SHUTDOWN_GRACE` plus at most 0.1 s.
pub(crate) const SHUTDOWN_PROMISE_EXTRA: Duration = Duration::from_millis(100);

/// Slack for the measurement, not for the daemon: [`Daemon::terminate`] starts its clock
/// before it spawns `kill` (a fork and exec), the kernel tears the process down after it
/// returns, and the exit is seen by polling every 10 ms. Together well under 150 ms on a
/// loaded 2-core machine.
pub(crate) const SIGTERM_ALLOWANCE: Duration = Duration::from_millis(150);

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Log lines at WARN or ERROR level (JSON format), raw.
pub(crate) fn problem_lines(d: &Daemon) -> Vec<String> {
    d.stdout_lines()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect()
}

/// What one CLI run printed.
pub(crate) struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A CLI process started but not yet waited for.
pub(crate) struct CliRun {
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
pub(crate) fn start_cli(env: &[(String, String)], args: &[&str]) -> CliRun {
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
    pub(crate) fn finish(mut self, limit: Duration) -> CliOutput {
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
pub(crate) fn run_cli(env: &[(String, String)], args: &[&str]) -> CliOutput {
    start_cli(env, args).finish(Duration::from_secs(30))
}
