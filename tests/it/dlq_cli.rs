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

    assert_eq!(v["scanned"], 3, "the counts cover the whole list");
    assert_eq!(
        v["by_reason"],
        serde_json::json!({"message is not valid JSON": 2, "message is not valid UTF-8": 1})
    );
    let mut by_source = serde_json::Map::new();
    by_source.insert(names.source.clone(), 2.into());
    by_source.insert("other-queue".into(), 1.into());
    assert_eq!(v["by_source"], serde_json::Value::Object(by_source));
    assert_eq!(v["unreadable"], 0);

    let out = run_cli(&env, &["dlq", "list"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 10, "{}", out.stdout);
    assert_eq!(
        lines[4..],
        [
            "by reason:".to_string(),
            "       2  message is not valid JSON".to_string(),
            "       1  message is not valid UTF-8".to_string(),
            "by source:".to_string(),
            format!("       2  {}", names.source),
            "       1  other-queue".to_string(),
        ]
    );
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
    assert_eq!(lines.len(), 8, "counts still cover all: {}", out.stdout);
    assert_eq!(lines[2], "by reason:");
    assert_eq!(
        lines[0],
        format!(
            "{}: 3 dead letters, showing the oldest 1",
            names.dead_letter
        )
    );

    let out = run_cli(&env, &["dlq", "list", "--limit", "0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["total"], 3);
    assert_eq!(v["scanned"], 3);
    assert_eq!(v["records"], serde_json::json!([]));
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

/// A record with an explicit `failed_at` and source, for messages that are still bad.
fn record_at(i: usize, source: &str, failed_at: &str) -> Vec<u8> {
    record(&bad(i), source, failed_at)
}

/// `failed_at` for the `i`th record written long before any test runs.
fn long_ago(i: usize) -> String {
    format!(
        "2020-01-01T00:{:02}:{:02}.{:06}+00:00",
        i / 60 % 60,
        i % 60,
        i
    )
}

/// `failed_at` for a record dead-lettered `ago` before now.
fn ago(ago: Duration) -> String {
    let at = chrono::Utc::now() - chrono::TimeDelta::from_std(ago).unwrap();
    batch_processor::envelope::format_timestamp(at)
}

/// The JSON log lines a CLI run wrote on stderr whose message is `msg`.
fn logged(out: &CliOutput, msg: &str) -> Vec<serde_json::Value> {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == msg)
        .collect()
}

/// "replayed N dead letters ..." -> N.
fn replayed_count(out: &CliOutput) -> u64 {
    out.stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("replayed N: {}", out.stdout))
}

fn instant(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// What one replay run logged: its cutoff, its budget and the `failed_at` of every record
/// it replayed (debug log), checked against its own summary line.
struct RunLog {
    cutoff: chrono::DateTime<chrono::Utc>,
    present: u64,
    replayed: Vec<chrono::DateTime<chrono::Utc>>,
}

fn run_log(out: &CliOutput) -> RunLog {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let started = logged(out, "replay started");
    assert_eq!(started.len(), 1, "stderr: {}", out.stderr);
    let replayed: Vec<_> = logged(out, "dead letter replayed")
        .iter()
        .map(|v| instant(v["failed_at"].as_str().unwrap()))
        .collect();
    assert_eq!(replayed.len() as u64, replayed_count(out), "{}", out.stdout);
    RunLog {
        cutoff: instant(started[0]["cutoff"].as_str().unwrap()),
        present: started[0]["present"].as_u64().unwrap(),
        replayed,
    }
}

#[test]
fn list_counts_in_pages_up_to_the_scan_limit() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let mut c = server.conn();
    let sources = ["q0", "q1", "q2"];
    // More than two pages of 500; bad(i) is not UTF-8 when i % 3 == 2.
    let recs: Vec<Vec<u8>> = (0..1200)
        .map(|i| record_at(i, sources[i % 3], &long_ago(i)))
        .collect();
    push_all(&mut c, &names.dead_letter, &recs);

    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["dlq", "list", "--json"];
        all.extend_from_slice(args);
        let out = run_cli(&env, &all);
        assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    };
    let v = json(&["--limit", "0"]);
    assert_eq!(
        (v["total"].as_u64(), v["scanned"].as_u64()),
        (Some(1200), Some(1200))
    );
    assert_eq!(
        v["by_source"],
        serde_json::json!({"q0": 400, "q1": 400, "q2": 400})
    );
    assert_eq!(
        v["by_reason"],
        serde_json::json!({"message is not valid JSON": 800, "message is not valid UTF-8": 400})
    );

    // Only the oldest 700 are counted: i in 0..700.
    let v = json(&["--limit", "0", "--scan-limit", "700"]);
    assert_eq!(
        (v["total"].as_u64(), v["scanned"].as_u64()),
        (Some(1200), Some(700))
    );
    assert_eq!(
        v["by_source"],
        serde_json::json!({"q0": 234, "q1": 233, "q2": 233})
    );
    assert_eq!(
        v["by_reason"],
        serde_json::json!({"message is not valid JSON": 467, "message is not valid UTF-8": 233})
    );

    // --limit asks for more than the scan limit: the scan reads what is shown.
    let v = json(&["--limit", "900", "--scan-limit", "10"]);
    assert_eq!(v["scanned"], 900);
    let shown = v["records"].as_array().unwrap();
    assert_eq!(shown.len(), 900);
    assert_eq!(
        shown[899],
        serde_json::from_slice::<serde_json::Value>(&recs[899]).unwrap()
    );

    let out = run_cli(
        &env,
        &["dlq", "list", "--limit", "1", "--scan-limit", "700"],
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{}: 1200 dead letters, showing the oldest 1",
            names.dead_letter
        )
    );
    assert_eq!(
        lines[2],
        "by reason (the oldest 700 of 1200; see --scan-limit):"
    );
    assert_eq!(
        llen(&mut c, &names.dead_letter),
        1200,
        "listing changes nothing"
    );
}

#[test]
fn replay_filters_leave_the_rest_in_place_in_order() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let a = names.source.clone();
    let b = format!("{}:other", names.key_prefix);
    let mut c = server.conn();
    let min = |m: u64| Duration::from_secs(60 * m);
    // bad(i) is not UTF-8 when i % 3 == 2: here the messages of records 1 and 2.
    let plan: [(usize, &str, String); 7] = [
        (0, &a, ago(min(180))),
        (2, &b, ago(min(180))),
        (5, &a, ago(min(90))),
        (3, &a, ago(min(30))),
        (4, &b, ago(min(10))),
        (6, &a, ago(min(1))),
        (7, &a, "not a time".to_string()),
    ];
    let recs: Vec<Vec<u8>> = plan.iter().map(|(i, q, t)| record_at(*i, q, t)).collect();
    push_all(&mut c, &names.dead_letter, &recs);
    let kept = |c: &mut redis::Connection, idx: &[usize]| {
        let want: Vec<Vec<u8>> = idx.iter().map(|&k| recs[k].clone()).collect();
        assert_eq!(
            read_all(c, &names.dead_letter),
            want,
            "left in place, in order"
        );
    };

    // Usage errors change nothing and exit 2.
    for args in [
        &["dlq", "replay", "--older-than", "2h", "--newer-than", "1h"][..],
        &["dlq", "replay", "--older-than", "2x"],
        &["dlq", "replay", "--newer-than", "90"],
    ] {
        let out = run_cli(&env, args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "");
    }
    kept(&mut c, &[0, 1, 2, 3, 4, 5, 6]);

    let out = run_cli(
        &env,
        &["dlq", "replay", "--source", &b, "--reason", "UTF-8"],
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        format!(
            "replayed 1 dead letter ({b}: 1); skipped 6 not matching the filters, left in place"
        )
    );
    assert_eq!(read_all(&mut c, &b), vec![bad(2)]);
    kept(&mut c, &[0, 2, 3, 4, 5, 6]);

    // Between one and two hours old; the undated record has no age and stays.
    let out = run_cli(
        &env,
        &["dlq", "replay", "--older-than", "1h", "--newer-than", "2h"],
    );
    assert_eq!(
        out.stdout.trim_end(),
        format!(
            "replayed 1 dead letter ({a}: 1); skipped 5 not matching the filters, left in place"
        )
    );
    assert_eq!(read_all(&mut c, &a), vec![bad(5)]);
    kept(&mut c, &[0, 3, 4, 5, 6]);

    // The limit stops the walk at the first match.
    let out = run_cli(
        &env,
        &["dlq", "replay", "--newer-than", "20m", "--limit", "1"],
    );
    assert_eq!(
        out.stdout.trim_end(),
        format!(
            "replayed 1 dead letter ({b}: 1); skipped 2 not matching the filters, left in place"
        )
    );
    assert_eq!(read_all(&mut c, &b), vec![bad(2), bad(4)]);
    kept(&mut c, &[0, 3, 5, 6]);

    let out = run_cli(&env, &["dlq", "replay", "--source", &a]);
    assert_eq!(
        out.stdout.trim_end(),
        format!(
            "replayed 4 dead letters ({a}: 4); skipped 0 not matching the filters, left in place"
        )
    );
    assert_eq!(
        read_all(&mut c, &a),
        vec![bad(5), bad(0), bad(3), bad(6), bad(7)]
    );
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
}

/// A run with `--source` leaves the other source's records behind it while a run without
/// filters removes them: the filtered run notices its index went stale and starts again
/// from the tail, so nothing is skipped, moved twice or reordered.
#[test]
fn a_filtered_and_an_unfiltered_replay_at_once_move_each_record_once_in_order() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let a = names.source.clone();
    let b = format!("{}:other", names.key_prefix);
    let mut c = server.conn();
    let n = 300;
    let recs: Vec<Vec<u8>> = (0..n)
        .map(|i| record_at(i, if i % 2 == 0 { &a } else { &b }, &long_ago(i)))
        .collect();
    push_all(&mut c, &names.dead_letter, &recs);

    let filtered = start_cli(&env, &["dlq", "replay", "--source", &a]);
    let all = start_cli(&env, &["dlq", "replay"]);
    let (filtered, all) = (
        filtered.finish(Duration::from_secs(60)),
        all.finish(Duration::from_secs(60)),
    );
    assert_eq!(filtered.code, Some(0), "stderr: {}", filtered.stderr);
    assert_eq!(all.code, Some(0), "stderr: {}", all.stderr);
    assert_eq!(
        replayed_count(&filtered) + replayed_count(&all),
        n as u64,
        "{} / {}",
        filtered.stdout,
        all.stdout
    );
    assert!(
        !filtered.stdout.contains(&format!("{b}:")),
        "{}",
        filtered.stdout
    );
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
    let expect =
        |parity: usize| -> Vec<Vec<u8>> { (0..n).filter(|i| i % 2 == parity).map(bad).collect() };
    assert_eq!(read_all(&mut c, &a), expect(0));
    assert_eq!(read_all(&mut c, &b), expect(1));
}

/// Environment variables for one process.
type Env = Vec<(String, String)>;

/// Environment for a daemon that dead-letters quickly, and for CLI runs that log each record
/// they replay.
fn daemon_and_cli_env(server: &RedisServer, names: &Names) -> (Env, Env) {
    let daemon = env_with(
        server,
        names,
        &[
            ("REDIS_PROCESSING_TIMEOUT", "0.05"),
            ("REDIS_BATCH_SIZE", "5"),
        ],
    );
    let cli = env_with(server, names, &[("RUST_LOG", "batch_processor=debug")]);
    (daemon, cli)
}

/// The message of every record on the dead-letter list, as the index `i` of `bad(i)`, and
/// the records' `failed_at`.
fn dead_lettered(c: &mut redis::Connection, names: &Names, n: usize) -> (Vec<usize>, Vec<String>) {
    let by_bytes: HashMap<Vec<u8>, usize> = (0..n).map(|i| (bad(i), i)).collect();
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for rec in read_all(c, &names.dead_letter) {
        let rec = DeadLetter::parse(&rec).unwrap();
        ids.push(by_bytes[&rec.original_bytes().unwrap()]);
        times.push(rec.failed_at);
    }
    ids.sort_unstable();
    (ids, times)
}

/// With a daemon dead-lettering every replayed message again, one replay puts back exactly
/// the records that were there when it started, and none of the ones that come back.
#[test]
fn replay_with_a_daemon_running_stops_at_the_records_present_at_its_start() {
    let server = RedisServer::start();
    let names = Names::new();
    let (daemon_env, cli_env) = daemon_and_cli_env(&server, &names);
    let mut daemon = spawn_daemon(&daemon_env, &[]);
    let mut c = server.conn();
    let n = 200;
    let recs: Vec<Vec<u8>> = (0..n)
        .map(|i| record_at(i, &names.source, &long_ago(i)))
        .collect();
    push_all(&mut c, &names.dead_letter, &recs);

    let out = run_cli(&cli_env, &["dlq", "replay"]);
    let run = run_log(&out);
    assert_eq!(run.present, n as u64);
    assert_eq!(
        out.stdout.trim_end(),
        format!("replayed {n} dead letters ({}: {n})", names.source)
    );
    assert!(run.replayed.iter().all(|t| *t < run.cutoff));

    // Every message comes back once, dead-lettered after the run started.
    assert!(
        wait_until(Duration::from_secs(30), || llen(&mut c, &names.dead_letter)
            == n
            && llen(&mut c, &names.source) == 0
            && !read_all(&mut c, &names.dead_letter)
                .iter()
                .any(|r| recs.contains(r))),
        "the daemon did not dead-letter the replayed messages again: {}",
        daemon.all_output()
    );
    let (ids, times) = dead_lettered(&mut c, &names, n);
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "each message exactly once");
    assert!(times.iter().all(|t| instant(t) >= run.cutoff));
    daemon.terminate_ok();
}

/// Two replays at once with a daemon running: neither replays a record dead-lettered after
/// it started, so together they replay at most what was there at the first one's start plus
/// what was dead-lettered before the second one's.
#[test]
fn two_replays_with_a_daemon_running_take_only_records_present_at_their_start() {
    let server = RedisServer::start();
    let names = Names::new();
    let (daemon_env, cli_env) = daemon_and_cli_env(&server, &names);
    let mut daemon = spawn_daemon(&daemon_env, &[]);
    let mut c = server.conn();
    let n = 400;
    let recs: Vec<Vec<u8>> = (0..n)
        .map(|i| record_at(i, &names.source, &long_ago(i)))
        .collect();
    push_all(&mut c, &names.dead_letter, &recs);

    let first = start_cli(&cli_env, &["dlq", "replay"]);
    // The second starts once messages replayed by the first are coming back.
    let back = wait_until(Duration::from_secs(20), || {
        let head: Option<Vec<u8>> = redis::cmd("LINDEX")
            .arg(&names.dead_letter)
            .arg(0)
            .query(&mut c)
            .unwrap();
        head.is_some_and(|h| !recs.contains(&h))
    });
    assert!(back, "nothing came back: {}", daemon.all_output());
    let second = start_cli(&cli_env, &["dlq", "replay"]);
    let first = run_log(&first.finish(Duration::from_secs(60)));
    let second = run_log(&second.finish(Duration::from_secs(60)));
    assert_eq!(first.present, n as u64);
    assert!(first.cutoff <= second.cutoff);

    // No run replays a record dead-lettered at or after its own start.
    for (name, run) in [("first", &first), ("second", &second)] {
        assert!(run.replayed.len() as u64 <= run.present, "{name}");
        let late: Vec<_> = run.replayed.iter().filter(|t| **t >= run.cutoff).collect();
        assert!(
            late.is_empty(),
            "{name} replayed records from after its start: {late:?}"
        );
    }
    // The first took only originals: anything else was dead-lettered after its start.
    let old = instant(&long_ago(n));
    assert!(first.replayed.iter().all(|t| *t <= old));

    assert!(
        wait_until(Duration::from_secs(30), || llen(&mut c, &names.dead_letter)
            == n
            && llen(&mut c, &names.source) == 0),
        "the daemon did not settle: {}",
        daemon.all_output()
    );
    daemon.terminate_ok();
    let (ids, times) = dead_lettered(&mut c, &names, n);
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "each message exactly once");
    // Every record that ever existed is either still there or was replayed exactly once.
    let total = (first.replayed.len() + second.replayed.len()) as u64;
    let stats: u64 = redis::cmd("HGET")
        .arg(names.keys().stats())
        .arg("dead_letters")
        .query::<Option<u64>>(&mut c)
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        stats, total,
        "every replayed message was dead-lettered once more"
    );
    let appeared_between = times
        .iter()
        .map(|t| instant(t))
        .chain(first.replayed.iter().chain(&second.replayed).copied())
        .filter(|t| *t >= first.cutoff && *t < second.cutoff)
        .count() as u64;
    assert!(
        total <= n as u64 + appeared_between,
        "replayed {total}, present at the first start {n}, dead-lettered before the second start {appeared_between}"
    );
}
