//! The batch ledger in tests: the ledger settings for a test's daemon, and the Python
//! reference transformer (`clients/python/transformer.py`) run as a real consumer process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{wait_until, Names, RedisServer};

/// The ledger prefix of a test: under its own key prefix, so tests share nothing.
pub(crate) fn ledger_prefix(names: &Names) -> String {
    format!("{}:state:", names.key_prefix)
}

/// Daemon settings that turn the ledger on under the test's prefix, with a fast protocol:
/// a worker is dead after `claim_timeout` seconds, and recovery runs every 0.1 s.
pub(crate) fn ledger_env(names: &Names, claim_timeout: &str) -> Vec<(String, String)> {
    [
        ("REDIS_BATCH_LEDGER", "true".to_string()),
        ("REDIS_BATCH_STATE_PREFIX", ledger_prefix(names)),
        ("REDIS_BATCH_CLAIM_TIMEOUT", claim_timeout.to_string()),
        ("REDIS_BATCH_RECOVERY_INTERVAL", "0.1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One batch's ledger hash.
pub(crate) fn ledger_entry(
    conn: &mut redis::Connection,
    names: &Names,
    id: &str,
) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("{}{id}", ledger_prefix(names)))
        .query(conn)
        .expect("HGETALL")
}

/// Python with `redis` installed, as `scripts/test` provides it (`BP_PYTHON`).
fn python() -> PathBuf {
    match std::env::var_os("BP_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("python3"),
    }
}

/// A running transformer process; killed on drop.
pub(crate) struct Transformer {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// Start `transformer.py` as worker `name` against the test's processing queue, with
/// `extra` arguments (e.g. `--work-seconds 60`).
pub(crate) fn start_transformer(
    server: &RedisServer,
    names: &Names,
    name: &str,
    claim_timeout: &str,
    extra: &[&str],
) -> Transformer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let mut child = Command::new(python())
        .arg(dir.join("transformer.py"))
        .args([
            "--port",
            &server.port.to_string(),
            "--queue",
            &names.processing,
        ])
        .args(["--prefix", &ledger_prefix(names), "--name", name])
        .args(["--claim-timeout", claim_timeout])
        .args(extra)
        .env("PYTHONPATH", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python with the redis package (scripts/ensure-python-tools)");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("stdout");
    let into = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                into.lock().unwrap().push(v);
            }
        }
    });
    Transformer { child, lines }
}

impl Transformer {
    /// Its printed events named `event` (`claimed`, `acked`, `stale`).
    pub(crate) fn events(&self, event: &str) -> Vec<serde_json::Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }

    /// Wait for its first claim; returns the claimed id and delivery.
    pub(crate) fn wait_claim(&self, limit: Duration) -> (String, u64) {
        assert!(
            wait_until(limit, || !self.events("claimed").is_empty()),
            "the transformer claimed nothing within {limit:?}"
        );
        let claim = &self.events("claimed")[0];
        (
            claim["id"].as_str().unwrap().to_string(),
            claim["delivery"].as_u64().unwrap(),
        )
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Transformer {
    fn drop(&mut self) {
        self.kill();
    }
}
