//! Sentinel: the daemon finds the primary through three sentinels and follows a failover by
//! itself, in the middle of a drain, ending exactly-once on the promoted replica.
//!
//! How the audit decides what the daemon must account for. Replication is asynchronous, so a
//! failover can lose writes the old primary acknowledged: the producer's, and the daemon's
//! commits. A lost commit is one whole `MULTI`/`EXEC` the promoted node never saw, so its
//! messages are still in that node's source and must be moved again there. A lost producer
//! write is Redis's loss, not the daemon's. So, on the promoted node at the end:
//! - every message the promoted node certainly had must be in exactly one envelope, in push
//!   order: the backlog (pushed and confirmed by `WAIT 1` before the daemon starts), every
//!   chunk a replica confirmed (`WAIT 1` after the push), and every chunk the promoted node
//!   itself acknowledged (as primary: a replica refuses writes);
//! - a chunk that was not confirmed on a replica (acknowledged by the old primary only, or
//!   whose push failed in flight) may be missing, but whatever of it is there must also be in
//!   exactly one envelope;
//! - nothing else is anywhere, nothing is duplicated, and the source is drained.

use std::collections::HashSet;
use std::time::Duration;

use crate::harness::*;

/// Messages in all; the first `BACKLOG` are there before the daemon starts.
const TOTAL: usize = 1200;
const BACKLOG: usize = 600;

/// Start the rig, a producer and a rate-limited daemon; once the daemon has moved part of
/// the backlog, run `fault` on the rig (given the primary's port); then wait for the new
/// primary, the producer and the drain, and audit the promoted node.
fn drain_through_a_failover(fault: impl FnOnce(&mut SentinelRig, u16, &Names)) {
    let mut rig = SentinelRig::start();
    let names = Names::new();
    let old = rig.primary_port();
    let all: Vec<Vec<u8>> = (0..TOTAL as u64).map(|seq| event(seq, 100)).collect();
    let mut c = rig.node(old).conn();
    push_all(&mut c, &names.source, &all[..BACKLOG]);
    let replicas: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
    assert_eq!(replicas, 1, "the backlog did not reach the replica");
    let producer = spawn_following_producer(
        rig.first_sentinel_port(),
        names.source.clone(),
        all.clone(),
        BACKLOG,
        20,
        Duration::from_millis(30),
    );
    let env = sentinel_env(
        &rig,
        &names,
        &[
            ("REDIS_MAX_BATCHES_PER_SECOND", "40"),
            ("REDIS_BATCH_BURST", "1"),
        ],
    );
    let mut d = spawn_daemon(&env, &[]);
    // Mid-drain: some envelopes out, most of the backlog still waiting (400 messages/s).
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, &names.processing)
            >= 15),
        "the daemon did not start moving through the sentinels:\n{}",
        d.all_output()
    );
    fault(&mut rig, old, &names);
    let new = rig.wait_new_primary(old, Duration::from_secs(15));
    let pushes = producer.join().unwrap();
    let mut nc = rig.node(new).conn();
    let followed = format!("127.0.0.1:{new}");
    // Within a few seconds of the promotion: the daemon must not keep working on a demoted
    // primary until the sentinels reconfigure it (about ten seconds later).
    let drained = wait_until(Duration::from_secs(8), || {
        llen(&mut nc, &names.source) == 0
            && d.events("primary found")
                .iter()
                .any(|e| e["primary"] == followed.as_str())
    });
    assert!(
        drained,
        "the daemon did not follow the failover to {followed} and drain:\n{}",
        d.all_output()
    );
    // Anything in flight lands (or not) before the audit reads the node.
    std::thread::sleep(Duration::from_millis(300));
    d.terminate_ok();
    audit(&mut nc, &names, &all, &pushes, new);
}

/// The daemon's settings: the sentinels instead of an address, a quick retry, and `extra`.
fn sentinel_env(rig: &SentinelRig, names: &Names, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let sentinels = rig.sentinels_setting();
    let mut settings = vec![
        ("REDIS_SENTINELS", sentinels.as_str()),
        ("REDIS_SENTINEL_MASTER", MASTER_NAME),
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ("REDIS_RETRY_INITIAL_DELAY", "0.05"),
        ("REDIS_CONNECT_TIMEOUT", "0.5"),
        ("REDIS_COMMAND_TIMEOUT", "1"),
    ];
    settings.extend_from_slice(extra);
    let mut env = env_with(&rig.nodes[0], names, &settings);
    env.retain(|(k, _)| k != "REDIS_PORT");
    env
}

/// The check described in the module's doc comment.
fn audit(conn: &mut redis::Connection, names: &Names, all: &[Vec<u8>], pushes: &[Push], port: u16) {
    let out = outcome(conn, names);
    let present: HashSet<u64> = out
        .batches
        .iter()
        .flatten()
        .chain(&out.source)
        .map(|m| seq_of(m))
        .collect();
    let mut certain = vec![false; all.len()];
    certain[..BACKLOG].iter_mut().for_each(|c| *c = true);
    for p in pushes {
        if p.replicated || (p.acknowledged && p.port == port) {
            certain[p.range.clone()].iter_mut().for_each(|c| *c = true);
        }
    }
    let mut expected = Workload {
        messages: Vec::new(),
        good: Vec::new(),
        good_bytes: Default::default(),
        bad: Vec::new(),
    };
    for (i, m) in all.iter().enumerate() {
        let seq = i as u64;
        if certain[i] || present.contains(&seq) {
            expected.messages.push(m.clone());
            expected.good.push(seq);
            expected.good_bytes.insert(seq, m.clone());
        }
    }
    let uncertain_lost = all.len() - expected.messages.len();
    assert!(
        uncertain_lost
            <= pushes
                .iter()
                .filter(|p| !p.replicated)
                .map(|p| p.range.len())
                .sum(),
        "more messages missing than were ever unconfirmed"
    );
    assert_accounted(&out, &expected, names, true, true);
}

/// `SENTINEL FAILOVER` while the daemon drains: the old primary steps down (dropping its
/// clients), the replica is promoted, and the daemon carries on against it.
#[test]
fn the_daemon_follows_a_sentinel_failover_mid_drain() {
    drain_through_a_failover(|rig, _, _| rig.force_failover());
}

/// SIGKILL of the primary while the daemon drains, with its last acknowledged commits
/// certainly not on the replica: the replica is stopped (SIGSTOP) and its link cut, the daemon
/// commits for a quarter of a second on the primary alone, then the primary is killed and the
/// replica resumed. The sentinels promote it within about a second; the commits it never
/// received must be moved again there, exactly once.
#[test]
fn the_daemon_follows_the_promotion_after_the_primary_is_killed_mid_drain() {
    drain_through_a_failover(|rig, old, names| {
        let replica = rig.nodes.iter().find(|n| n.port != old).unwrap().port;
        rig.node(replica).pause();
        let mut primary = rig.node(old).conn();
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query(&mut primary)
            .unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let on_primary = llen(&mut primary, &names.processing);
        rig.node(old).kill();
        rig.node(replica).resume();
        let on_replica = llen(&mut rig.node(replica).conn(), &names.processing);
        assert!(
            on_replica < on_primary,
            "no acknowledged commit was lost ({on_replica} envelopes on the replica, \
             {on_primary} on the primary): the test would prove nothing"
        );
    });
}

/// Passwords on both sides, read from files: the data nodes' (`REDIS_PASSWORD_FILE`) and the
/// sentinels' (`REDIS_SENTINEL_PASSWORD_FILE`). The daemon moves messages through the
/// sentinels and `status` works; without the sentinels' password `status` exits 1.
#[test]
fn sentinels_and_data_nodes_with_passwords_from_files() {
    let rig = SentinelRig::start_with(RigOptions {
        data: Some("data-pw-63".into()),
        sentinel: Some("sentinel-pw-64".into()),
        tls: None,
    });
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let (data_file, sentinel_file) = (dir.path().join("data"), dir.path().join("sentinel"));
    std::fs::write(&data_file, "data-pw-63\n").unwrap();
    std::fs::write(&sentinel_file, "sentinel-pw-64\n").unwrap();
    let (data_file, sentinel_file) = (
        data_file.display().to_string(),
        sentinel_file.display().to_string(),
    );
    let env = sentinel_env(
        &rig,
        &names,
        &[
            ("REDIS_PASSWORD_FILE", &data_file),
            ("REDIS_SENTINEL_PASSWORD_FILE", &sentinel_file),
        ],
    );
    let mut c = rig.node_conn(rig.primary_port());
    let w = workload(100, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    let mut d = spawn_daemon(&env, &[]);
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(10)),
        "{}",
        d.all_output()
    );
    let out = run_cli(&env, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        status["redis"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sentinel:"),
        "{status}"
    );
    let no_sentinel_password: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "REDIS_SENTINEL_PASSWORD_FILE")
        .cloned()
        .collect();
    let out = run_cli(&no_sentinel_password, &["status"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("refused the credentials"),
        "{}",
        out.stderr
    );
    d.terminate_ok();
    let all = d.all_output();
    assert!(
        !all.contains("data-pw-63") && !all.contains("sentinel-pw-64"),
        "{all}"
    );
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}

/// TLS everywhere, with client certificates: TLS-only data nodes (replicating over TLS) and
/// TLS-only sentinels, all with `tls-auth-clients yes`. The daemon, with `REDIS_TLS`,
/// `REDIS_SENTINEL_TLS`, the private CA and a client certificate, moves messages through the
/// sentinels, and `status` works; without `REDIS_SENTINEL_TLS` it cannot ask the sentinels.
#[test]
fn sentinels_and_data_nodes_over_tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let rig = SentinelRig::start_with(RigOptions {
        tls: Some(certs.path().to_owned()),
        ..RigOptions::default()
    });
    let names = Names::new();
    let path = |name: &str| certs.path().join(name).display().to_string();
    let env = sentinel_env(
        &rig,
        &names,
        &[
            ("REDIS_TLS", "true"),
            ("REDIS_SENTINEL_TLS", "true"),
            ("REDIS_TLS_CA_FILE", &path("ca.pem")),
            ("REDIS_TLS_CERT_FILE", &path("client.pem")),
            ("REDIS_TLS_KEY_FILE", &path("client.key")),
        ],
    );
    let mut c = rig.node_conn(rig.primary_port());
    let w = workload(100, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    let mut d = spawn_daemon(&env, &[]);
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(10)),
        "{}",
        d.all_output()
    );
    let out = run_cli(&env, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let plain_sentinels: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "REDIS_SENTINEL_TLS")
        .cloned()
        .collect();
    let out = run_cli(&plain_sentinels, &["status"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}
