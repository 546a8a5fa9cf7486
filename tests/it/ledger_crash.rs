//! Consumers that die: the batch ledger's recovery with real transformer processes (the
//! Python reference client). A consumer SIGKILLed mid-batch has its batch redelivered to
//! another within the claim timeout, and it completes with two deliveries; a batch that kills
//! every consumer ends in the dead-letter list after REDIS_MAX_DELIVERIES, and `dlq replay`
//! puts it back on the processing queue; a Redis restart (AOF) in the middle of claims and
//! acks loses no batch.

use std::time::{Duration, Instant};

use crate::harness::*;

fn env(server: &RedisServer, names: &Names, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env_with(server, names, extra);
    env.extend(ledger_env(names, "1"));
    env
}

#[test]
fn a_consumer_killed_mid_batch_has_its_batch_redelivered_and_completed() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut conn = server.conn();
    let http = free_port();
    let http_addr = format!("127.0.0.1:{http}");
    let env = env(
        &server,
        &names,
        &[("REDIS_BATCH_SIZE", "5"), ("REDIS_HTTP_ADDR", &http_addr)],
    );
    let messages: Vec<Vec<u8>> = (0..5).map(|i| event(i, 100)).collect();
    push_all(&mut conn, &names.source, &messages);
    let mut daemon = spawn_daemon(&env, &["run"]);
    let mut doomed = start_transformer(&server, &names, "doomed", "1", &["--work-seconds", "60"]);
    let (id, delivery) = doomed.wait_claim(Duration::from_secs(15));
    assert_eq!(delivery, 1);
    doomed.kill();
    let killed_at = Instant::now();
    let rescuer = start_transformer(&server, &names, "rescuer", "1", &["--max-batches", "1"]);
    assert!(
        wait_until(Duration::from_secs(15), || {
            ledger_entry(&mut conn, &names, &id)
                .get("status")
                .map(String::as_str)
                == Some("completed")
        }),
        "the batch was not completed after its consumer died"
    );
    // Redelivered within the claim timeout (1 s) plus a recovery period, the rescuer's start
    // and its claim; the bound is loose for a loaded machine, far below the entry's TTL.
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(10), "redelivery took {took:?}");
    let h = ledger_entry(&mut conn, &names, &id);
    assert_eq!(h["deliveries"], "2");
    assert_eq!(h["worker"], "rescuer");
    assert_eq!(h["completed"], "5");
    assert_eq!(rescuer.wait_claim(Duration::from_secs(5)).1, 2);
    assert_eq!(
        llen(
            &mut conn,
            &format!("{}inflight:doomed", ledger_prefix(&names))
        ),
        0
    );
    assert_eq!(llen(&mut conn, &names.processing), 0);
    assert!(daemon.wait_for_line("batches redelivered", Duration::from_secs(5)));
    // The metrics mirror the ledger's totals.
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, text) = http_get(http, "/metrics");
        metric(
            &text,
            "batch_processor_ledger_batches_total{outcome=\"redelivered\"}",
        ) == Some(1.0)
            && metric(
                &text,
                "batch_processor_ledger_batches_total{outcome=\"completed\"}",
            ) == Some(1.0)
            && metric(
                &text,
                "batch_processor_ledger_items_total{outcome=\"completed\"}",
            ) == Some(5.0)
    }));
    daemon.terminate_ok();
}

#[test]
fn a_batch_that_kills_every_consumer_is_dead_lettered_and_can_be_replayed() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut conn = server.conn();
    let env = env(
        &server,
        &names,
        &[("REDIS_BATCH_SIZE", "3"), ("REDIS_MAX_DELIVERIES", "3")],
    );
    let messages: Vec<Vec<u8>> = (0..3).map(|i| event(i, 100)).collect();
    push_all(&mut conn, &names.source, &messages);
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(wait_until(Duration::from_secs(10), || llen(
        &mut conn,
        &names.processing
    ) == 1));
    let envelope = read_all(&mut conn, &names.processing).remove(0);
    let mut seen = Vec::new();
    for n in 1..=3u64 {
        let name = format!("victim-{n}");
        let mut victim = start_transformer(&server, &names, &name, "1", &["--work-seconds", "60"]);
        let (_, got) = victim.wait_claim(Duration::from_secs(15));
        seen.push(got);
        victim.kill();
    }
    assert_eq!(seen, vec![1, 2, 3], "one fresh delivery number per claim");
    assert!(
        wait_until(Duration::from_secs(10), || llen(
            &mut conn,
            &names.dead_letter
        ) == 1),
        "the batch did not reach the dead-letter list"
    );
    assert_eq!(llen(&mut conn, &names.processing), 0);
    let record: serde_json::Value =
        serde_json::from_slice(&read_all(&mut conn, &names.dead_letter)[0]).unwrap();
    assert_eq!(record["raw"].as_str().unwrap().as_bytes(), &envelope[..]);
    assert_eq!(record["source_queue"], names.processing);
    assert!(
        record["reason"].as_str().unwrap().contains("3 times"),
        "{record}"
    );
    let id = batch_processor::envelope::event_id_of(&envelope)
        .unwrap()
        .to_string();
    let h = ledger_entry(&mut conn, &names, &id);
    assert_eq!(
        (h["status"].as_str(), h["deliveries"].as_str()),
        ("dead", "3")
    );
    assert!(daemon.wait_for_line("batches dead-lettered", Duration::from_secs(5)));

    // Replay puts the envelope back on the processing queue, byte for byte; the next claim
    // starts counting deliveries afresh but gets a delivery number never handed out before.
    let replay = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(replay.code, Some(0), "{}", replay.stderr);
    assert_eq!(
        read_all(&mut conn, &names.processing),
        vec![envelope.clone()]
    );
    let worker = start_transformer(&server, &names, "healthy", "1", &["--max-batches", "1"]);
    let (claimed, delivery) = worker.wait_claim(Duration::from_secs(15));
    assert_eq!((claimed.as_str(), delivery), (id.as_str(), 4));
    assert_eq!(ledger_entry(&mut conn, &names, &id)["deliveries"], "1");
    assert!(wait_until(Duration::from_secs(10), || {
        ledger_entry(&mut conn, &names, &id)["status"] == "completed"
    }));
    daemon.terminate_ok();
}

#[test]
fn a_redis_restart_amid_claims_and_acks_loses_no_batch() {
    let mut server = RedisServer::start_persistent();
    let names = Names::new();
    let mut conn = server.conn();
    let env = env(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
            ("REDIS_CONSUMER_NAME", "restart"),
        ],
    );
    let total = 600u64;
    let messages: Vec<Vec<u8>> = (0..total).map(|i| event(i, 100)).collect();
    // Half before the restart, half after.
    let (before, after) = messages.split_at(messages.len() / 2);
    push_all(&mut conn, &names.source, before);
    let mut daemon = spawn_daemon(&env, &["run"]);
    let work = ["--work-seconds", "0.05"];
    let workers: Vec<Transformer> = (0..2)
        .map(|i| start_transformer(&server, &names, &format!("t{i}"), "1", &work))
        .collect();
    assert!(wait_until(Duration::from_secs(15), || {
        workers
            .iter()
            .map(|w| w.events("acked").len())
            .sum::<usize>()
            >= 5
    }));
    // In the middle: batches still wait to be claimed.
    assert!(llen(&mut conn, &names.processing) > 0);
    server.restart();
    let mut conn2 = server.conn();
    push_all(&mut conn2, &names.source, after);
    // Every message ends in a completed batch: the source and the processing queue empty,
    // no envelope held, and the ledger's item total equal to what was pushed.
    let totals = |c: &mut redis::Connection| -> std::collections::HashMap<String, u64> {
        redis::cmd("HGETALL")
            .arg(format!("{}totals", ledger_prefix(&names)))
            .query(c)
            .unwrap_or_default()
    };
    let settled = wait_until(Duration::from_secs(40), || {
        llen(&mut conn2, &names.source) == 0
            && llen(&mut conn2, &names.processing) == 0
            && totals(&mut conn2).get("items_completed").copied() == Some(total)
    });
    let t = totals(&mut conn2);
    assert!(settled, "not every item completed after the restart: {t:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}inflight:*", ledger_prefix(&names)))
        .query(&mut conn2)
        .unwrap();
    assert!(keys.is_empty(), "envelopes still held: {keys:?}");
    // Every completed batch is an entry; their sizes add up to the messages pushed.
    let ids: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}finished", ledger_prefix(&names)))
        .arg(0)
        .arg(-1)
        .query(&mut conn2)
        .unwrap();
    let mut items = 0u64;
    for id in &ids {
        let h = ledger_entry(&mut conn2, &names, id);
        assert_eq!(h["status"], "completed", "{id}: {h:?}");
        items += h["total"].parse::<u64>().unwrap();
    }
    assert_eq!(items, total);
    drop(conn);
    daemon.terminate_ok();
}
