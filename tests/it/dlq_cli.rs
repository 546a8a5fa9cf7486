//! `batch-processor dlq list|replay|purge`, run as the built binary against a real
//! redis-server. Dead letters are written directly in the daemon's record format, except in
//! the bad-then-fixed scenario, where a running daemon writes them.

use std::collections::HashMap;
use std::time::Duration;

use batch_processor::dead_letter::DeadLetter;
use batch_processor::message::{check_message, Profile};

use crate::harness::*;

/// The record a daemon writes for `raw` taken from `source`.
fn record(raw: &[u8], source: &str, failed_at: &str) -> Vec<u8> {
    let reason = check_message(raw, Profile::default()).expect_err("test messages are bad");
    DeadLetter::new(raw, &reason, source, failed_at).to_bytes()
}

fn failed_at(i: usize) -> String {
    format!(
        "2026-03-01T00:00:{:02}.{:06}+00:00",
        i / 1000 % 60,
        i % 1_000_000
    )
}

/// A bad message, unique by `i`: text that is not JSON, or bytes that are not UTF-8.
fn bad(i: usize) -> Vec<u8> {
    if i % 3 == 2 {
        let mut b = vec![0xff, 0xfe, 0x00];
        b.extend_from_slice(i.to_string().as_bytes());
        b
    } else {
        format!("{{\"seq\":{i}, not json é").into_bytes()
    }
}

#[test]
fn list_shows_oldest_first_with_limit_and_json() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let mut c = server.conn();
    let long = format!("{{\"text\":\"{}", "z".repeat(300));
    let recs = vec![
        record(b"first, not json", &names.source, &failed_at(1)),
        record(b"\xff\x00\x01\x02", &names.source, &failed_at(2)),
        record(long.as_bytes(), "other-queue", &failed_at(3)),
    ];
    push_all(&mut c, &names.dead_letter, &recs);

    let out = run_cli(&env, &["dlq", "list", "--json"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(v["total"], 3);
    let expected: Vec<serde_json::Value> = recs
        .iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect();
    assert_eq!(v["records"], serde_json::Value::Array(expected.clone()));
    assert_eq!(v["records"][0]["raw"], "first, not json");
    assert_eq!(v["records"][1]["raw_b64"], "/wABAg==");
    for r in &recs {
        let stored = std::str::from_utf8(r).unwrap();
        assert!(
            out.stdout.contains(stored),
            "record shown as stored: {stored}"
        );
    }

    let out = run_cli(&env, &["dlq", "list", "--limit", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["total"], 3, "total counts the whole list");
    assert_eq!(
        v["records"],
        serde_json::Value::Array(expected[..2].to_vec())
    );

    let out = run_cli(&env, &["dlq", "list"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[0], format!("{}: 3 dead letters", names.dead_letter));
    assert!(lines[1].starts_with(&format!(
        "{}  {}  message is not valid JSON",
        failed_at(1),
        names.source
    )));
    assert!(lines[1].ends_with("\"first, not json\""), "{}", lines[1]);
    assert!(lines[2].starts_with(&format!(
        "{}  {}  message is not valid UTF-8",
        failed_at(2),
        names.source
    )));
    assert!(lines[2].ends_with("<4 bytes binary>"), "{}", lines[2]);
    assert!(lines[3].starts_with(&format!("{}  other-queue  ", failed_at(3))));
    let preview: String = long.chars().take(80).collect();
    assert!(
        lines[3].ends_with(&format!("{:?}", format!("{preview}…"))),
        "{}",
        lines[3]
    );

    let out = run_cli(&env, &["dlq", "list", "--limit", "1"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        format!(
            "{}: 3 dead letters, showing the oldest 1",
            names.dead_letter
        )
    );

    let out = run_cli(&env, &["dlq", "list", "--limit", "0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"total": 3, "records": []}));
    assert_eq!(
        llen(&mut c, &names.dead_letter),
        3,
        "listing changes nothing"
    );
}

#[test]
fn replay_puts_exact_bytes_back_on_their_queues_oldest_first_once() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let other = format!("{}:other", names.key_prefix);
    let mut c = server.conn();
    // Something already waiting on the source: replayed messages go to the head, after it.
    push_all(&mut c, &names.source, &[event(1, 60)]);
    let messages: Vec<Vec<u8>> = (0..9).map(bad).collect();
    let recs: Vec<Vec<u8>> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            record(
                m,
                if i % 4 == 3 { &other } else { &names.source },
                &failed_at(i),
            )
        })
        .collect();
    push_all(&mut c, &names.dead_letter, &recs);

    let out = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let to_source: Vec<Vec<u8>> = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 3)
        .map(|(_, m)| m.clone())
        .collect();
    let to_other: Vec<Vec<u8>> = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 == 3)
        .map(|(_, m)| m.clone())
        .collect();
    let mut expected_source = vec![event(1, 60)];
    expected_source.extend(to_source.iter().cloned());
    assert_eq!(read_all(&mut c, &names.source), expected_source);
    assert_eq!(read_all(&mut c, &other), to_other);
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
    let mut per_queue = [(names.source.clone(), 7), (other.clone(), 2)];
    per_queue.sort();
    let per: Vec<String> = per_queue.iter().map(|(q, n)| format!("{q}: {n}")).collect();
    assert_eq!(
        out.stdout.trim_end(),
        format!("replayed 9 dead letters ({})", per.join(", "))
    );

    // Nothing left: a second replay does nothing.
    let out = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout.trim_end(), "replayed 0 dead letters");
    assert_eq!(llen(&mut c, &names.source), 8);
}

#[test]
fn replay_limit_takes_only_the_oldest() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let mut c = server.conn();
    let messages: Vec<Vec<u8>> = (0..5).map(bad).collect();
    let recs: Vec<Vec<u8>> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| record(m, &names.source, &failed_at(i)))
        .collect();
    push_all(&mut c, &names.dead_letter, &recs);

    let out = run_cli(&env, &["dlq", "replay", "--limit", "2"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        format!("replayed 2 dead letters ({}: 2)", names.source)
    );
    assert_eq!(read_all(&mut c, &names.source), messages[..2].to_vec());
    assert_eq!(read_all(&mut c, &names.dead_letter), recs[2..].to_vec());
}

#[test]
fn undecodable_records_stay_in_place_and_the_rest_is_replayed() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let mut c = server.conn();
    let good: Vec<Vec<u8>> = (0..4).map(bad).collect();
    let junk_tail = b"not a record".to_vec();
    let junk_mid = br#"{"reason":"r","source_queue":"x","failed_at":"t"}"#.to_vec();
    let junk_b64 = br#"{"reason":"r","raw_b64":"@@@","source_queue":"x","failed_at":"t"}"#.to_vec();
    let dl = |i: usize| record(&good[i], &names.source, &failed_at(i));
    // Oldest first: junk at the very tail, then good and junk mixed.
    let stored = vec![
        junk_tail.clone(),
        dl(0),
        junk_mid.clone(),
        dl(1),
        dl(2),
        junk_b64.clone(),
        dl(3),
    ];
    push_all(&mut c, &names.dead_letter, &stored);

    let out = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        format!(
            "replayed 4 dead letters ({}: 4); skipped 3 undecodable records, left in place (see dlq list)",
            names.source
        )
    );
    assert_eq!(read_all(&mut c, &names.source), good);
    assert_eq!(
        read_all(&mut c, &names.dead_letter),
        vec![junk_tail, junk_mid, junk_b64]
    );
    assert!(
        out.stderr.contains("dead letter left in place"),
        "stderr: {}",
        out.stderr
    );

    // The one that is not JSON at all is still listed, flagged.
    let out = run_cli(&env, &["dlq", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["total"], 3);
    assert_eq!(v["records"][0]["invalid_record"], "not a record");
    assert!(v["records"][0]["error"].is_string());
    assert_eq!(v["records"][1]["source_queue"], "x");
}

#[test]
fn two_concurrent_replays_move_each_record_exactly_once() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let mut c = server.conn();
    let messages: Vec<Vec<u8>> = (0..200).map(bad).collect();
    // 200 good records with an undecodable one before every 20th, which both replays walk past.
    let mut recs = Vec::new();
    let mut junk = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if i % 20 == 0 {
            junk.push(format!("junk {i}").into_bytes());
            recs.push(junk.last().unwrap().clone());
        }
        recs.push(record(m, &names.source, &failed_at(i)));
    }
    push_all(&mut c, &names.dead_letter, &recs);

    let a = start_cli(&env, &["dlq", "replay"]);
    let b = start_cli(&env, &["dlq", "replay"]);
    let (a, b) = (
        a.finish(Duration::from_secs(60)),
        b.finish(Duration::from_secs(60)),
    );
    assert_eq!(a.code, Some(0), "stderr: {}", a.stderr);
    assert_eq!(b.code, Some(0), "stderr: {}", b.stderr);
    let count = |o: &CliOutput| -> u64 {
        o.stdout
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("replayed N")
    };
    assert_eq!(
        count(&a) + count(&b),
        200,
        "a: {} b: {}",
        a.stdout,
        b.stdout
    );
    assert_eq!(
        read_all(&mut c, &names.dead_letter),
        junk,
        "only the undecodable ones stay"
    );
    // Each record's move is one atomic step on the tail, so even two replays keep the order.
    assert_eq!(read_all(&mut c, &names.source), messages);
}

#[test]
fn purge_needs_yes_and_reports_the_count() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let mut c = server.conn();
    let recs: Vec<Vec<u8>> = (0..4)
        .map(|i| record(&bad(i), &names.source, &failed_at(i)))
        .collect();
    push_all(&mut c, &names.dead_letter, &recs);

    let out = run_cli(&env, &["dlq", "purge"]);
    assert_eq!(out.code, Some(2));
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("--yes"), "stderr: {}", out.stderr);
    assert_eq!(
        read_all(&mut c, &names.dead_letter),
        recs,
        "nothing deleted without --yes"
    );

    let out = run_cli(&env, &["dlq", "purge", "--yes"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout.trim_end(), "purged 4 dead letters");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&names.dead_letter)
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0);

    let out = run_cli(&env, &["dlq", "purge", "--yes"]);
    assert_eq!(out.stdout.trim_end(), "purged 0 dead letters");
}

#[test]
fn dlq_commands_fail_cleanly_when_redis_is_unreachable() {
    let env: Vec<(String, String)> = vec![
        ("REDIS_PORT".into(), free_port().to_string()),
        ("REDIS_HTTP_ADDR".into(), "off".into()),
    ];
    for args in [
        &["dlq", "list"][..],
        &["dlq", "replay"],
        &["dlq", "purge", "--yes"],
    ] {
        let out = start_cli(&env, args).finish(Duration::from_secs(10));
        assert_eq!(out.code, Some(1), "{args:?}: stderr: {}", out.stderr);
        assert_eq!(out.stdout, "");
        assert!(
            out.stderr
                .contains("batch-processor: cannot connect to Redis at 127.0.0.1:"),
            "{}",
            out.stderr
        );
    }
}

/// Bad messages are dead-lettered by a running daemon, an operator repairs the records in
/// place, and a replay sends each repaired message through the daemon exactly once.
#[test]
fn bad_then_fixed_messages_end_up_once_in_envelopes() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut env = daemon_env(&server, &names);
    env.push(("REDIS_PROCESSING_TIMEOUT".into(), "0.2".into()));
    env.push(("REDIS_BATCH_SIZE".into(), "5".into()));
    let mut daemon = spawn_daemon(&env, &[]);
    let mut c = server.conn();

    // Good events 1..=8 interleaved with 5 bad ones (seq 101..=105), some not even UTF-8.
    let mut pushed = Vec::new();
    for i in 0..8u64 {
        pushed.push(event(i + 1, 80));
        if i < 5 {
            let seq = 101 + i;
            pushed.push(if i % 2 == 0 {
                format!("{{\"seq\":{seq},\"broken\":").into_bytes()
            } else {
                let mut b = format!("{{\"seq\":{seq},\"x\":\"").into_bytes();
                b.extend_from_slice(b"\xff\"}");
                b
            });
        }
    }
    push_all(&mut c, &names.source, &pushed);
    assert!(
        wait_until(Duration::from_secs(20), || llen(&mut c, &names.dead_letter)
            == 5
            && llen(&mut c, &names.source) == 0),
        "the daemon did not dead-letter the bad messages; stdout: {:?}",
        daemon.lines.lock().unwrap()
    );

    // The repair: each record's message rewritten to valid JSON, in place (LSET), as an
    // operator would after fixing the producer's bug.
    let stored = read_all(&mut c, &names.dead_letter);
    let mut fixed = Vec::new();
    for (i, rec) in stored.iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_slice(rec).unwrap();
        assert_eq!(v["source_queue"], names.source.as_str());
        let original = DeadLetter::parse(rec).unwrap().original_bytes().unwrap();
        let seq: u64 = String::from_utf8_lossy(&original)
            .trim_start_matches("{\"seq\":")
            .split(',')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a bad message of this test");
        let repaired = event(seq, 80);
        v.as_object_mut().unwrap().remove("raw_b64");
        v["raw"] = serde_json::Value::String(String::from_utf8(repaired.clone()).unwrap());
        // read_all is oldest first; index -1 is the oldest.
        let _: () = redis::cmd("LSET")
            .arg(&names.dead_letter)
            .arg(-(i as i64) - 1)
            .arg(serde_json::to_vec(&v).unwrap())
            .query(&mut c)
            .unwrap();
        fixed.push(repaired);
    }

    let out = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        format!("replayed 5 dead letters ({}: 5)", names.source)
    );

    let all_messages = |c: &mut redis::Connection| -> Vec<Vec<u8>> {
        read_all(c, &names.processing)
            .iter()
            .flat_map(|e| batch_raw(e))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || all_messages(&mut c).len() == 13),
        "replayed messages were not sent; got {} messages",
        all_messages(&mut c).len()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));

    let sent = all_messages(&mut c);
    let mut times: HashMap<Vec<u8>, usize> = HashMap::new();
    for m in &sent {
        *times.entry(m.clone()).or_default() += 1;
    }
    for m in (1..=8).map(|s| event(s, 80)).chain(fixed.iter().cloned()) {
        assert_eq!(times.get(&m), Some(&1), "message {} sent once", seq_of(&m));
    }
    assert_eq!(sent.len(), 13);
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
    assert_eq!(llen(&mut c, &names.source), 0);
    // The repaired messages went out in the order they were first dead-lettered.
    let fixed_order: Vec<u64> = sent
        .iter()
        .map(|m| seq_of(m))
        .filter(|s| *s > 100)
        .collect();
    assert_eq!(fixed_order, vec![101, 102, 103, 104, 105]);
}
