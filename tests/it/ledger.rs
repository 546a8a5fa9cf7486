//! The batch ledger with the daemon: every envelope has its entry and no entry exists without
//! its envelope, even when the daemon is SIGKILLed during sends; acks from several clients
//! add up exactly, and a retried ack counts once; over-reporting and stale deliveries are
//! refused; entries expire; the daemon
//! loads the function library and loads it again when Redis loses it; the operator views.

use std::collections::BTreeSet;
use std::time::Duration;

use batch_processor::ledger::{library, AckReport, LedgerKeys};

use crate::harness::*;

/// The ids of the envelopes on the processing list and of the ledger entries, read in one
/// MULTI/EXEC: one consistent instant.
fn snapshot(conn: &mut redis::Connection, names: &Names) -> (BTreeSet<String>, BTreeSet<String>) {
    let prefix = ledger_prefix(names);
    let (envelopes, keys): (Vec<Vec<u8>>, Vec<String>) = redis::pipe()
        .atomic()
        .lrange(&names.processing, 0, -1)
        .cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(conn)
        .unwrap();
    let ids = envelopes
        .iter()
        .map(|e| {
            batch_processor::envelope::event_id_of(e)
                .unwrap()
                .to_string()
        })
        .collect();
    // Entries are the keys with a 36-character id after the prefix.
    let entries = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&prefix))
        .filter(|id| id.len() == 36)
        .map(str::to_string)
        .collect();
    (ids, entries)
}

fn env(server: &RedisServer, names: &Names, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env_with(server, names, extra);
    env.extend(ledger_env(names, "1"));
    env
}

#[test]
fn every_envelope_has_its_entry_and_no_entry_lacks_its_envelope_through_daemon_kills() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut conn = server.conn();
    let w = workload(3000, 0, 200);
    let env = env(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "7"),
            ("REDIS_PREFETCH", "70"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
            ("REDIS_CONSUMER_NAME", "ledger-kills"),
        ],
    );
    let mut pushed = 0;
    for _ in 0..4 {
        top_up(&mut conn, &names, &w, &mut pushed, 700);
        let mut daemon = spawn_daemon(&env, &["run"]);
        wait_random_progress(&mut conn, &names, Duration::from_secs(20));
        // A snapshot mid-flight, then the kill at once.
        let (ids, entries) = snapshot(&mut conn, &names);
        assert_eq!(
            ids, entries,
            "envelopes and ledger entries differ mid-flight"
        );
        daemon.kill();
    }
    push_all(&mut conn, &names.source, &w.messages[pushed..]);
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(wait_drained(&mut conn, &names, Duration::from_secs(30)));
    daemon.terminate_ok();
    let (ids, entries) = snapshot(&mut conn, &names);
    assert!(!ids.is_empty());
    assert_eq!(ids, entries);
    assert_accounted(&outcome(&mut conn, &names), &w, &names, true, true);
    // Each entry describes its envelope and expires.
    for e in envelopes(&mut conn, &names.processing).iter().take(20) {
        let id = e["event_id"].as_str().unwrap();
        let h = ledger_entry(&mut conn, &names, id);
        assert_eq!(h["total"], e["payload"]["size"].to_string());
        assert_eq!(h["status"], "queued");
        assert_eq!(h["source"], names.source);
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("{}{id}", ledger_prefix(&names)))
            .query(&mut conn)
            .unwrap();
        assert!(ttl > 86_000 && ttl <= 86_400, "ttl {ttl}");
    }
}

#[tokio::test]
async fn concurrent_acks_add_up_exactly_retries_count_once_and_refusals_change_nothing() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut conn = server.conn();
    let env = env(&server, &names, &[("REDIS_BATCH_SIZE", "40")]);
    let messages: Vec<Vec<u8>> = (0..80).map(|i| event(i, 100)).collect();
    push_all(&mut conn, &names.source, &messages);
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(wait_until(Duration::from_secs(10), || llen(
        &mut conn,
        &names.processing
    ) == 2));
    let keys = LedgerKeys::new(&ledger_prefix(&names));
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let claim = library::claim(&mut c, &keys, &names.processing, "w1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.delivery, 1);
    // Four clients each ack ten items, one at a time, and send every ack twice (a retry
    // after a lost reply, under the same id): the acks add up to exactly 40, each answer
    // counts one more item, and each retry gets its ack's own answer.
    let mut tasks = Vec::new();
    for client_no in 0..4 {
        let (client, keys, id) = (client.clone(), keys.clone(), claim.event_id.clone());
        let delivery = claim.delivery;
        tasks.push(tokio::spawn(async move {
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let mut answers = Vec::new();
            for n in 0..10 {
                let ack_id = format!("client-{client_no}-ack-{n}");
                let report = AckReport {
                    event_id: &id,
                    delivery,
                    completed: 1,
                    failed: 0,
                    ack_id: &ack_id,
                };
                let first = library::ack(&mut c, &keys, &report).await.unwrap();
                let retried = library::ack(&mut c, &keys, &report).await.unwrap();
                assert_eq!(first, retried);
                answers.push(first.completed);
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    answers.sort_unstable();
    assert_eq!(answers, (1..=40).collect::<Vec<u64>>());
    let h = ledger_entry(&mut conn, &names, &claim.event_id);
    assert_eq!(
        (h["completed"].as_str(), h["status"].as_str()),
        ("40", "completed")
    );
    let items: u64 = redis::cmd("HGET")
        .arg(keys.totals())
        .arg("items_completed")
        .query(&mut conn)
        .unwrap();
    assert_eq!(items, 40);
    assert_eq!(llen(&mut conn, &keys.inflight("w1")), 0);

    // The second batch, from the command line: over-reporting and a stale delivery are
    // refused (exit 1, the refusal named), and the batch is unchanged.
    let second = library::claim(&mut c, &keys, &names.processing, "w2")
        .await
        .unwrap()
        .unwrap();
    let ack = |args: &[&str]| {
        let mut all = vec!["batch", "ack", second.event_id.as_str()];
        all.extend_from_slice(args);
        run_cli(&env, &all)
    };
    let current = second.delivery.to_string();
    assert_ne!(second.delivery, claim.delivery);
    let over = ack(&[
        "--delivery",
        &current,
        "--completed",
        "30",
        "--failed",
        "11",
    ]);
    assert_eq!(over.code, Some(1));
    assert!(over.stderr.contains("BATCH_OVER"), "{}", over.stderr);
    // The first batch's delivery number is not this batch's.
    let stale = ack(&["--delivery", "1", "--completed", "1"]);
    assert_eq!(stale.code, Some(1));
    assert!(stale.stderr.contains("BATCH_STALE"), "{}", stale.stderr);
    let shown = run_cli(&env, &["batch", "show", &second.event_id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(
        (v["completed"].as_u64(), v["failed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["status"], "processing");
    let done = ack(&["--delivery", &current, "--completed", "39", "--failed", "1"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stdout.contains("completed_with_failures"),
        "{}",
        done.stdout
    );
    daemon.terminate_ok();
}

#[test]
fn the_daemon_loads_the_library_and_loads_it_again_when_redis_loses_it() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut conn = server.conn();
    let mut daemon = spawn_daemon(&env(&server, &names, &[]), &["run"]);
    let loaded = |conn: &mut redis::Connection| {
        let libs: Vec<redis::Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg("batch_ledger")
            .query(conn)
            .unwrap();
        !libs.is_empty()
    };
    assert!(wait_until(Duration::from_secs(10), || loaded(&mut conn)));
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut conn)
        .unwrap();
    assert!(!loaded(&mut conn));
    assert!(
        wait_until(Duration::from_secs(10), || loaded(&mut conn)),
        "the recovery job did not load the library again"
    );
    daemon.terminate_ok();
    // By hand, without a daemon.
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut conn)
        .unwrap();
    let installed = run_cli(&env_with(&server, &names, &[]), &["ledger", "install"]);
    assert_eq!(installed.code, Some(0), "{}", installed.stderr);
    assert!(
        installed.stdout.contains("batch_ledger"),
        "{}",
        installed.stdout
    );
    assert!(loaded(&mut conn));
}

#[tokio::test]
async fn status_and_batch_list_show_batches_in_flight_and_finished() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut conn = server.conn();
    let env = env(&server, &names, &[("REDIS_BATCH_SIZE", "4")]);
    let messages: Vec<Vec<u8>> = (0..12).map(|i| event(i, 100)).collect();
    push_all(&mut conn, &names.source, &messages);
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(wait_until(Duration::from_secs(10), || llen(
        &mut conn,
        &names.processing
    ) == 3));
    let keys = LedgerKeys::new(&ledger_prefix(&names));
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let done = library::claim(&mut c, &keys, &names.processing, "w-done")
        .await
        .unwrap()
        .unwrap();
    let report = AckReport {
        event_id: &done.event_id,
        delivery: done.delivery,
        completed: 3,
        failed: 1,
        ack_id: "done-1",
    };
    library::ack(&mut c, &keys, &report).await.unwrap();
    let busy = library::claim(&mut c, &keys, &names.processing, "w-busy")
        .await
        .unwrap()
        .unwrap();
    let report = AckReport {
        event_id: &busy.event_id,
        delivery: busy.delivery,
        completed: 2,
        failed: 0,
        ack_id: "busy-1",
    };
    library::ack(&mut c, &keys, &report).await.unwrap();

    let status = run_cli(&env, &["status"]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.contains("ledger         1 in flight"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("worker w-busy"), "{}", status.stdout);
    assert!(status.stdout.contains("2/4 (50%)"), "{}", status.stdout);
    assert!(
        status.stdout.contains("completed_with_failures"),
        "{}",
        status.stdout
    );
    let json = run_cli(&env, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ledger"]["in_flight"][0]["worker"], "w-busy");
    assert_eq!(v["ledger"]["totals"]["claimed"], 2);

    let list = |args: &[&str]| {
        let mut all = vec!["batch", "list", "--json"];
        all.extend_from_slice(args);
        let out = run_cli(&env, &all);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    };
    let ids = |v: Vec<serde_json::Value>| -> Vec<String> {
        v.iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(list(&["--status", "processing"])),
        vec![busy.event_id.clone()]
    );
    assert_eq!(
        ids(list(&["--status", "completed_with_failures"])),
        vec![done.event_id.clone()]
    );
    assert_eq!(list(&["--status", "queued"]).len(), 1);
    assert_eq!(list(&[]).len(), 3);
    let bad = run_cli(&env, &["batch", "list", "--status", "lost"]);
    assert_eq!(bad.code, Some(2));
    let text = run_cli(&env, &["batch", "show", &busy.event_id]);
    assert!(
        text.stdout
            .contains("progress     2 completed, 0 failed of 4 (50%)"),
        "{}",
        text.stdout
    );
    let missing = run_cli(&env, &["batch", "show", "no-such-batch"]);
    assert_eq!(missing.code, Some(1));
    daemon.terminate_ok();
}
