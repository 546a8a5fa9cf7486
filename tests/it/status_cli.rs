//! `batch-processor status`, run as the built binary against a real redis-server. The state
//! is written directly in the daemon's key layout; no daemon runs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use batch_processor::envelope::format_timestamp;

use crate::harness::*;

/// Run the binary with exactly `env` (plus PATH), killing it after `limit`.
fn run_cli_within(env: &[(String, String)], args: &[&str], limit: Duration) -> CliOutput {
    start_cli(env, args).finish(limit)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn hset(c: &mut redis::Connection, key: &str, fields: &[(&str, String)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    let _: i64 = cmd.query(c).unwrap();
}

fn replica_fields(
    consumer: &str,
    pid: u32,
    beat_ms: i64,
    lease: bool,
    rate: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("consumer", consumer.to_string()),
        ("host", format!("host-{consumer}")),
        ("pid", pid.to_string()),
        ("started_at", "2026-01-02T03:04:05.000000+00:00".to_string()),
        ("heartbeat_at_ms", beat_ms.to_string()),
        ("holds_lease", if lease { "1" } else { "0" }.to_string()),
        // The holder is paused by back-pressure in these fixtures.
        ("paused", if lease { "1" } else { "0" }.to_string()),
        ("messages", (pid * 10).to_string()),
        ("batches", pid.to_string()),
        ("dead_letters", "1".to_string()),
        ("rate", rate.to_string()),
    ]
}

/// Lists, stats, a lease and three replicas (one whose hash expired), as daemons leave them.
fn populate(server: &RedisServer, names: &Names) -> i64 {
    let mut c = server.conn();
    let keys = names.keys();
    push_all(
        &mut c,
        &names.source,
        &(0..7).map(|i| event(i, 50)).collect::<Vec<_>>(),
    );
    push_all(
        &mut c,
        &names.processing,
        &(0..3).map(|i| event(i, 50)).collect::<Vec<_>>(),
    );
    push_all(
        &mut c,
        &names.dead_letter,
        &[b"{}".to_vec(), b"{}".to_vec()],
    );
    let last = now_ms() - 3_000;
    hset(
        &mut c,
        &keys.stats(),
        &[
            ("messages", "1234".into()),
            ("batches", "125".into()),
            ("dead_letters", "2".into()),
            ("last_envelope_at_ms", last.to_string()),
        ],
    );
    let _: () = redis::cmd("SET")
        .arg(keys.lease())
        .arg("pod/a-1/3f2c9d")
        .arg("PX")
        .arg(60_000)
        .query(&mut c)
        .unwrap();
    let heartbeat = now_ms() - 500;
    let _: i64 = redis::cmd("ZADD")
        .arg(keys.replicas())
        .arg(heartbeat)
        .arg("pod/a-1")
        .arg(heartbeat + 1)
        .arg("b-2")
        .arg(heartbeat - 600_000)
        .arg("gone-3")
        .query(&mut c)
        .unwrap();
    hset(
        &mut c,
        &keys.replica("pod/a-1"),
        &replica_fields("pod/a-1", 11, heartbeat, true, "10.5"),
    );
    hset(
        &mut c,
        &keys.replica("b-2"),
        &replica_fields("b-2", 22, heartbeat + 1, false, "2.25"),
    );
    last
}

#[test]
fn json_numbers_match_the_lists_and_hashes() {
    let server = RedisServer::start();
    let names = Names::new();
    let last = populate(&server, &names);
    let out = run_cli_within(
        &daemon_env(&server, &names),
        &["status", "--json"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    // stdout holds the JSON document and nothing else.
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}: {:?}", out.stdout));

    let q = &v["queues"];
    assert_eq!(q["sources"][0]["name"], names.source.as_str());
    assert_eq!(q["sources"][0]["length"], 7);
    assert_eq!(q["sources"][0]["lease"]["holder"], "pod/a-1");
    assert_eq!(q["sources"].as_array().unwrap().len(), 1);
    assert_eq!(q["processing"]["name"], names.processing.as_str());
    assert_eq!(q["processing"]["length"], 3);
    assert_eq!(q["dead_letter"]["name"], names.dead_letter.as_str());
    assert_eq!(q["dead_letter"]["length"], 2);
    assert_eq!(
        v["totals"],
        serde_json::json!({"messages":1234,"batches":125,"dead_letters":2})
    );
    let last_at = chrono::DateTime::from_timestamp_millis(last).unwrap();
    assert_eq!(v["last_envelope_at"], format_timestamp(last_at).as_str());
    let age = v["last_envelope_age_ms"].as_i64().unwrap();
    assert!((3_000..60_000).contains(&age), "{age}");

    assert_eq!(v["lease"]["holder"], "pod/a-1");
    let ttl = v["lease"]["ttl_ms"].as_i64().unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");

    let replicas = v["replicas"].as_array().unwrap();
    let consumers: Vec<&str> = replicas
        .iter()
        .map(|r| r["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(
        consumers,
        ["pod/a-1", "b-2"],
        "the replica whose hash expired is not alive"
    );
    let a = &replicas[0];
    assert_eq!(a["host"], "host-pod/a-1");
    assert_eq!(a["pid"], 11);
    assert_eq!(a["started_at"], "2026-01-02T03:04:05.000000+00:00");
    assert_eq!(a["holds_lease"], true);
    assert_eq!(a["paused"], true);
    assert_eq!(replicas[1]["paused"], false);
    assert_eq!(replicas[1]["holds_lease"], false);
    assert_eq!(
        (
            a["messages"].clone(),
            a["batches"].clone(),
            a["dead_letters"].clone()
        ),
        (110.into(), 11.into(), 1.into())
    );
    assert_eq!(a["rate_per_s"], 10.5);
    assert!(a["heartbeat_age_ms"].as_i64().unwrap() >= 500);
    assert_eq!(v["rate_per_s"], 12.75);
}

#[test]
fn empty_redis_gives_zeros_and_no_lease() {
    let server = RedisServer::start();
    let names = Names::new();
    let out = run_cli_within(
        &daemon_env(&server, &names),
        &["status", "--json"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for q in ["processing", "dead_letter"] {
        assert_eq!(v["queues"][q]["length"], 0);
    }
    assert_eq!(v["queues"]["sources"][0]["length"], 0);
    assert!(v["queues"]["sources"][0]["lease"].is_null());
    assert_eq!(
        v["totals"],
        serde_json::json!({"messages":0,"batches":0,"dead_letters":0})
    );
    assert!(v["last_envelope_at"].is_null());
    assert!(v["lease"].is_null());
    assert_eq!(v["replicas"], serde_json::json!([]));
    assert_eq!(v["rate_per_s"], 0.0);
}

#[test]
fn text_mode_shows_queue_names_lengths_and_replicas() {
    let server = RedisServer::start();
    let names = Names::new();
    populate(&server, &names);
    let out = run_cli_within(
        &daemon_env(&server, &names),
        &["status"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let line = |label: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {}", out.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("source"), ["source", names.source.as_str(), "7"]);
    assert_eq!(
        line("processing"),
        ["processing", names.processing.as_str(), "3"]
    );
    assert_eq!(
        line("dead letters"),
        ["dead", "letters", names.dead_letter.as_str(), "2"]
    );
    assert!(line("totals")
        .join(" ")
        .contains("messages 1234 batches 125 dead letters 2"));
    assert!(line("lease").join(" ").starts_with("lease held by pod/a-1"));
    assert_eq!(line("replicas")[..3], ["replicas", "2", "alive"]);
    assert!(
        out.stdout
            .contains("pod/a-1 [lease, paused: processing list full]  host host-pod/a-1 pid 11"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("gone-3"));
    assert!(serde_json::from_str::<serde_json::Value>(&out.stdout).is_err());
}

#[test]
fn nothing_listening_fails_fast_with_one_clear_line() {
    let port = free_port();
    let env: Vec<(String, String)> = vec![
        ("REDIS_PORT".into(), port.to_string()),
        ("REDIS_CONNECT_TIMEOUT".into(), "2".into()),
        ("REDIS_HTTP_ADDR".into(), "off".into()),
    ];
    for args in [&["status", "--json"][..], &["status"]] {
        let out = run_cli_within(&env, args, Duration::from_secs(10));
        assert_eq!(
            out.code,
            Some(1),
            "{args:?}: exit code; stderr: {}",
            out.stderr
        );
        assert!(
            out.elapsed < Duration::from_secs(5),
            "took {:?}",
            out.elapsed
        );
        assert_eq!(out.stdout, "", "nothing on stdout");
        let expected = format!("batch-processor: cannot connect to Redis at 127.0.0.1:{port}");
        assert!(
            out.stderr.lines().any(|l| l.starts_with(&expected)),
            "stderr: {}",
            out.stderr
        );
    }
}

#[test]
fn wrong_password_is_reported_without_the_password() {
    let server = RedisServer::start_with_password("right-one");
    let names = Names::new();
    let mut env = daemon_env(&server, &names);
    env.push(("REDIS_PASSWORD".into(), "wrong-secret".into()));
    let out = run_cli_within(&env, &["status", "--json"], Duration::from_secs(10));
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "");
    let expected = format!(
        "batch-processor: Redis at 127.0.0.1:{} refused the credentials",
        server.port
    );
    assert!(
        out.stderr.lines().any(|l| l.starts_with(&expected)),
        "stderr: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("wrong-secret"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn a_server_that_stops_answering_cannot_hang_status() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut env = daemon_env(&server, &names);
    env.push(("REDIS_CONNECT_TIMEOUT".into(), "1".into()));
    env.push(("REDIS_COMMAND_TIMEOUT".into(), "1".into()));
    server.pause();
    let out = run_cli_within(&env, &["status", "--json"], Duration::from_secs(15));
    server.resume();
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
    assert_eq!(out.stdout, "");
    let expected = format!(
        "batch-processor: cannot connect to Redis at 127.0.0.1:{}",
        server.port
    );
    assert!(
        out.stderr.lines().any(|l| l.starts_with(&expected)),
        "stderr: {}",
        out.stderr
    );
}

/// The replica's own heartbeat hash says it holds the lease.
fn beats_as_holder(server: &RedisServer, names: &Names, consumer: &str) -> bool {
    let held: Option<String> = redis::cmd("HGET")
        .arg(names.keys().replica(consumer))
        .arg("holds_lease")
        .query(&mut server.conn())
        .unwrap();
    held.as_deref() == Some("1")
}

/// Who `status --json` says holds the lease, by replica, once the lease key names `holder`.
fn replicas_holding_after_takeover(
    server: &RedisServer,
    names: &Names,
    holder: &str,
) -> Vec<(String, bool)> {
    let mut conn = server.conn();
    assert!(
        wait_until(Duration::from_secs(15), || lease_holder(&mut conn, names)
            .as_deref()
            == Some(holder)),
        "{holder} never took the lease"
    );
    let out = run_cli_within(
        &daemon_env(server, names),
        &["status", "--json"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["lease"]["holder"], holder, "{v}");
    v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["consumer"].as_str().unwrap().to_string(),
                r["holds_lease"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The defect seen in the first container run: right after the holder stopped (SIGTERM) or
/// died (SIGKILL), `status` still listed it `[lease]` beside its successor, because it read
/// the flag from the dead replica's last heartbeat, which outlives it by three lease TTLs.
/// Real daemons; the old holder's hash still says `holds_lease` 1 when status runs.
#[test]
fn a_stopped_or_killed_holder_is_not_shown_holding_the_lease() {
    for how in ["TERM", "KILL"] {
        let server = RedisServer::start();
        let names = Names::new();
        let settings =
            |name: &'static str| [("REDIS_CONSUMER_NAME", name), ("REDIS_LEASE_TTL", "2")];
        let mut old = start_daemon(&server, &names, &settings("old-holder"));
        assert!(old.wait_for_line("lease acquired", Duration::from_secs(10)));
        assert!(wait_until(Duration::from_secs(5), || beats_as_holder(
            &server,
            &names,
            "old-holder"
        )));
        let successor = start_daemon(&server, &names, &settings("successor"));
        assert!(successor.wait_for_line("standing by", Duration::from_secs(10)));
        if how == "TERM" {
            old.terminate_ok();
        } else {
            old.kill();
        }
        let replicas = replicas_holding_after_takeover(&server, &names, "successor");
        assert!(
            beats_as_holder(&server, &names, "old-holder"),
            "{how}: the old holder's stale heartbeat must still be there for this test to mean anything"
        );
        let holding: Vec<&str> = replicas
            .iter()
            .filter(|(_, holds)| *holds)
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(holding, ["successor"], "{how}: {replicas:?}");
    }
}
