//! `batch-processor demo produce` and `demo consume`, the compose stack's scraper and
//! transformer, run as the built binary around a real daemon and redis-server: what the
//! producer pushes, the daemon wraps and the consumer takes, counted end to end; both stop
//! promptly and cleanly on SIGTERM.

use std::time::Duration;

use crate::harness::*;

#[test]
fn produced_events_reach_the_consumer_in_envelopes() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let out = start_cli(
        &env,
        &[
            "demo",
            "produce",
            "--rate",
            "500",
            "--count",
            "100",
            "--bad-every",
            "10",
        ],
    )
    .finish(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let mut conn = server.conn();
    let pushed = read_all(&mut conn, &names.source);
    let bad = pushed
        .iter()
        .filter(|m| serde_json::from_slice::<serde_json::Value>(m).is_err())
        .count();
    assert_eq!((pushed.len(), bad), (100, 10));

    let mut daemon = start_daemon(&server, &names, &[("REDIS_PROCESSING_TIMEOUT", "0.2")]);
    assert!(wait_drained(&mut conn, &names, Duration::from_secs(20)));
    assert!(wait_until(Duration::from_secs(10), || llen(
        &mut conn,
        &names.processing
    ) == 9));
    daemon.terminate_ok();

    let out = start_cli(&env, &["demo", "consume", "--count", "9"]).finish(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(llen(&mut conn, &names.processing), 0);
    let received: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["message"] == "envelope received")
        .collect();
    assert_eq!(received.len(), 9, "{}", out.stdout);
    let messages: u64 = received.iter().map(|v| v["size"].as_u64().unwrap()).sum();
    assert_eq!(messages, 90);
    assert_eq!(llen(&mut conn, &names.dead_letter), 10);
}

#[test]
fn both_demos_stop_cleanly_on_sigterm() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    for role in ["produce", "consume"] {
        let mut demo = spawn_daemon(&env, &["demo", role]);
        assert!(
            demo.wait_for_line(&format!("demo {role}r started"), Duration::from_secs(10)),
            "{}",
            demo.all_output()
        );
        // Let the consumer block in its wait and the producer push a few.
        std::thread::sleep(Duration::from_millis(300));
        let (code, took) = demo.terminate();
        assert_eq!(code, Some(0), "{role}: {}", demo.all_output());
        assert!(took < Duration::from_secs(2), "{role} took {took:?}");
        assert!(demo.wait_for_line(&format!("demo {role}r stopped"), Duration::from_secs(1)));
    }
    // The producer's default rate is 5/s: a few events arrived, none were lost to the stop.
    assert!(llen(&mut server.conn(), &names.source) >= 1);
}

/// With the ledger on, `demo consume` claims each envelope and acks all its messages:
/// nothing is left in flight, every entry is `completed` after one delivery, its ack id
/// recorded; and it still stops promptly on SIGTERM while it waits.
#[test]
fn with_the_ledger_on_the_consumer_claims_and_acks_every_envelope() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut env = env_with(&server, &names, &[("REDIS_BATCH_SIZE", "10")]);
    env.extend(ledger_env(&names, "60"));
    let mut conn = server.conn();
    let messages: Vec<Vec<u8>> = (0..30).map(|i| event(i, 100)).collect();
    push_all(&mut conn, &names.source, &messages);
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(wait_until(Duration::from_secs(15), || llen(
        &mut conn,
        &names.processing
    ) == 3));
    daemon.terminate_ok();
    let ids: Vec<String> = read_all(&mut conn, &names.processing)
        .iter()
        .map(|e| {
            batch_processor::envelope::event_id_of(e)
                .unwrap()
                .to_owned()
        })
        .collect();

    let out = start_cli(&env, &["demo", "consume", "--count", "3"]).finish(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let with = |m: &str| lines.iter().filter(|v| v["message"] == m).count();
    assert_eq!(
        (with("envelope received"), with("batch acked")),
        (3, 3),
        "{}",
        out.stdout
    );
    assert_eq!(llen(&mut conn, &names.processing), 0);
    let prefix = ledger_prefix(&names);
    let inflight: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}inflight:*"))
        .query(&mut conn)
        .unwrap();
    assert!(inflight.is_empty(), "left in flight: {inflight:?}");
    for id in &ids {
        let entry = ledger_entry(&mut conn, &names, id);
        assert_eq!(
            (
                entry["status"].as_str(),
                entry["completed"].as_str(),
                entry["total"].as_str(),
                entry["deliveries"].as_str(),
            ),
            ("completed", "10", "10", "1"),
            "{id}"
        );
        assert!(entry["worker"].starts_with("demo-"), "{entry:?}");
        let acks: u64 = redis::cmd("HLEN")
            .arg(format!("{prefix}{id}:acks"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(acks, 1);
    }
    let items: u64 = redis::cmd("HGET")
        .arg(format!("{prefix}totals"))
        .arg("items_completed")
        .query(&mut conn)
        .unwrap();
    assert_eq!(items, 30);

    let mut demo = spawn_daemon(&env, &["demo", "consume"]);
    assert!(
        demo.wait_for_line("demo consumer started", Duration::from_secs(10)),
        "{}",
        demo.all_output()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (code, took) = demo.terminate();
    assert_eq!(code, Some(0), "{}", demo.all_output());
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
