//! The core daemon, run as the real binary against a real redis-server: batches leave when
//! full or when the processing timeout passes, in FIFO order, in the documented envelope
//! format with the messages spliced byte for byte; bad messages go to the dead-letter list
//! with their exact bytes while good ones flow; SIGTERM exits 0 and leaves unsent messages in
//! the source; SIGKILL at any moment loses and duplicates nothing; the JSON logs trace every
//! envelope. The last test checks that the exactly-once audit the others rely on catches
//! loss, duplicates and reordering.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A number from a JSON log field that may be logged as a number or a string.
fn as_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn as_f64(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[test]
fn empty_queue_sends_nothing_and_sigterm_exits_0() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut d = start_daemon(&server, &names, &[("REDIS_PROCESSING_TIMEOUT", "0.1")]);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        d.is_running(),
        "daemon exited on an empty queue: {}",
        d.all_output()
    );
    assert_eq!(
        llen(&mut c, &names.processing),
        0,
        "an envelope was sent for an empty queue"
    );
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
    assert_eq!(llen(&mut c, &names.source), 0);
    // Idle (blocked waiting for data): SIGTERM still exits 0 within the grace + 0.1 s.
    d.terminate_ok();
    assert_eq!(llen(&mut c, &names.processing), 0);
}

#[test]
fn fifteen_messages_with_batch_size_10_give_10_then_5_after_the_timeout() {
    let timeout = Duration::from_secs(3);
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "3"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let w = workload(15, 0, 200);
    let t0 = Instant::now();
    push_all(&mut c, &names.source, &w.messages); // one LPUSH: all 15 arrive at once

    // The full batch leaves without waiting for the timeout.
    assert!(
        wait_until(timeout, || llen(&mut c, &names.processing) >= 1),
        "no envelope before the timeout although a full batch of 10 was waiting"
    );
    // The partial batch cannot leave before `timeout` after its first message arrived (>= t0).
    let n = llen(&mut c, &names.processing);
    if t0.elapsed() < timeout {
        assert_eq!(n, 1, "the partial batch of 5 left before the timeout");
    }
    std::thread::sleep((timeout / 2).saturating_sub(t0.elapsed()));
    if t0.elapsed() < timeout {
        assert_eq!(
            llen(&mut c, &names.processing),
            1,
            "the partial batch of 5 left before the timeout"
        );
    }
    assert!(
        wait_until(timeout + Duration::from_secs(5), || llen(
            &mut c,
            &names.processing
        ) == 2),
        "the partial batch of 5 never left"
    );
    assert!(
        t0.elapsed() >= timeout,
        "second envelope after {:?}, before the timeout",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = outcome(&mut c, &names);
    let sizes: Vec<usize> = out.batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![10, 5]);
    assert_accounted(&out, &w, &names, true, true);
    d.terminate_ok();
}

#[test]
fn timeout_flushes_a_partial_batch() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.3"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let w = workload(3, 0, 100);
    let t0 = Instant::now();
    push_all(&mut c, &names.source, &w.messages);
    assert!(
        wait_until(Duration::from_secs(5), || llen(&mut c, &names.processing)
            >= 1),
        "3 messages with a 0.3 s timeout were not flushed"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "flushed after {:?}, before the timeout",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(600));
    let out = outcome(&mut c, &names);
    assert_eq!(out.batches.len(), 1, "expected exactly one envelope");
    assert_eq!(out.batches[0].len(), 3);
    assert_accounted(&out, &w, &names, true, true);
    d.terminate_ok();
}

#[test]
fn fifo_across_many_envelopes_and_the_envelope_format() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(5000, 0, 300);
    // Half is waiting before the daemon starts, half arrives while it runs.
    push_all(&mut c, &names.source, &w.messages[..2500]);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "100"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    for chunk in w.messages[2500..].chunks(250) {
        push_all(&mut c, &names.source, chunk);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(30)),
        "source not drained"
    );
    d.terminate_ok();
    let out = outcome(&mut c, &names);
    assert!(
        out.batches.iter().all(|b| b.len() <= 100),
        "an envelope exceeds the batch size"
    );
    assert_accounted(&out, &w, &names, true, true);
    let concatenated: Vec<u64> = out.batches.iter().flatten().map(|m| seq_of(m)).collect();
    assert_eq!(concatenated, (0..5000).collect::<Vec<u64>>());
    let ids: HashSet<String> = out
        .envelopes
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(e).unwrap();
            v["event_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        ids.len(),
        out.envelopes.len(),
        "event_id values are not unique"
    );
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
}

#[test]
fn bad_messages_go_to_the_dead_letter_list_with_exact_bytes_while_good_ones_flow() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    // 80 messages, every 8th bad, cycling through truncated JSON, binary, plain text,
    // trailing garbage and too large; plus an empty message and more hand-made ones.
    let mut w = workload(80, 8, 200);
    let extra_bad: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"{\"a\":1} x".to_vec(),
        b"\xc3\x28 not utf-8".to_vec(),
        b"{\"a\":".to_vec(),
        b"hello world".to_vec(),
    ];
    for (i, b) in extra_bad.iter().enumerate() {
        let at = 10 + i * 13;
        w.messages.insert(at, b.clone());
        w.bad.push(b.clone());
    }
    push_all(&mut c, &names.source, &w.messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "7"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
            ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
        ],
    );
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(15)),
        "source not drained"
    );
    d.terminate_ok();
    let out = outcome(&mut c, &names);
    assert_accounted(&out, &w, &names, true, true);
    assert_eq!(out.dead.len(), w.bad.len());
    // Each kind is there with its documented representation (raw_b64 for non-UTF-8 bytes).
    let binary: Vec<_> = out.dead.iter().filter(|d| d.base64).collect();
    assert_eq!(
        binary.len(),
        2 + 1,
        "the non-UTF-8 messages must be stored as raw_b64"
    );
    assert!(out.dead.iter().any(|d| d.original.is_empty() && !d.base64));
    assert!(
        out.dead
            .iter()
            .any(|d| d.original.len() == 5000 && !d.base64),
        "too-large message missing"
    );
    // Good messages around the bad ones all arrived, in order, in full batches where possible.
    let good_count: usize = out.batches.iter().map(|b| b.len()).sum();
    assert_eq!(good_count, w.good.len());
}

#[test]
fn unicode_and_escapes_are_unchanged_byte_for_byte() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let messages: Vec<Vec<u8>> = vec![
        br#"{"b":1,"a":"caf\u00e9 \ud83d\ude00","n":1.50e3,"s":"\"q\""}"#.to_vec(),
        "{\"é\":\"😀\"}".as_bytes().to_vec(),
        br#"{"z":0,"y":-0.0,"x":1E+2,"w":[1,2.50,3e-7],"v":"\/\b\f\n\r\t\\"}"#.to_vec(),
        br#"{"big":123456789012345678901234567890,"f":0.1000000000000000055511151231257827}"#
            .to_vec(),
        "\"日本語 \\u65e5 ünïcödé\"".as_bytes().to_vec(),
        br#"{"nested":{"k":[{"a":null,"b":true,"c":false}]},"empty":{},"arr":[]}"#.to_vec(),
        b"42".to_vec(),
        b"null".to_vec(),
        br#"{ "spaced" : [ 1 , 2 ] , "tab":	"x" }"#.to_vec(),
    ];
    push_all(&mut c, &names.source, &messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "100"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, &names.processing)
            >= 1),
        "no envelope"
    );
    d.terminate_ok();
    let envs = read_all(&mut c, &names.processing);
    assert_eq!(envs.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&envs[0]).unwrap();
    assert_envelope_format(&v);
    let got = batch_raw(&envs[0]);
    assert_eq!(got.len(), messages.len());
    for (g, m) in got.iter().zip(&messages) {
        assert_eq!(
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(m),
            "message changed inside the envelope"
        );
        assert_eq!(g, m);
    }
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
    assert_eq!(llen(&mut c, &names.source), 0);
}

#[test]
fn sigkill_at_random_moments_during_a_drain_ends_exactly_once() {
    const TOTAL: u64 = 60_000;
    // Each daemon life starts with this many messages waiting and is killed at a random
    // point of their drain.
    const BACKLOG: usize = 8_000;
    const KILLS: usize = 8;
    let seed = fastrand::u64(..);
    println!("random seed {seed}");
    fastrand::seed(seed);
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(TOTAL, 500, 200);
    let mut pushed = 0;
    let settings = [
        ("REDIS_CONSUMER_NAME", "core-kill-test"),
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ("REDIS_LEASE_TTL", "2"),
        ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
    ];
    for i in 0..KILLS {
        top_up(&mut c, &names, &w, &mut pushed, BACKLOG);
        let mut d = start_daemon(&server, &names, &settings);
        // Mostly a random point of the drain; sometimes a random early moment (start-up,
        // taking the lease, the first read).
        let when = if fastrand::u8(..4) == 0 {
            let delay = random_ms(5, 150);
            std::thread::sleep(delay);
            format!("after {delay:?}")
        } else {
            let (pending, target) = wait_random_progress(&mut c, &names, Duration::from_secs(20));
            format!("at {target} of {pending} left")
        };
        assert!(
            d.is_running(),
            "daemon {i} exited by itself: {}",
            d.all_output()
        );
        d.kill();
        println!(
            "kill {i} {when}: {} left in source, {} pushed",
            llen(&mut c, &names.source),
            pushed
        );
    }
    // The rest arrives while the last daemon drains.
    let feed = spawn_producer(
        server.url(),
        names.source.clone(),
        w.messages[pushed..].to_vec(),
        500,
        Duration::from_millis(10),
    );
    let mut d = start_daemon(&server, &names, &settings);
    feed.join().unwrap();
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(60)),
        "source not drained after the kills: {} left",
        llen(&mut c, &names.source)
    );
    d.terminate_ok();
    let out = outcome(&mut c, &names);
    println!(
        "{} envelopes, {} dead letters",
        out.envelopes.len(),
        out.dead.len()
    );
    assert_accounted(&out, &w, &names, true, true);
}

#[test]
fn sigterm_while_draining_exits_0_and_loses_nothing() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(30_000, 700, 200);
    push_all(&mut c, &names.source, &w.messages);
    let settings = [
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_PROCESSING_TIMEOUT", "0.5"),
        ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
    ];
    let mut d = start_daemon(&server, &names, &settings);
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, &names.processing)
            >= 5),
        "the daemon never started moving"
    );
    d.terminate_ok();
    let out = outcome(&mut c, &names);
    println!(
        "after SIGTERM: {} envelopes, {} in source",
        out.envelopes.len(),
        out.source.len()
    );
    // Nothing lost or stranded: every message is in the source or in exactly one envelope
    // or dead letter, and what is left is the untouched tail in its original order.
    assert_accounted(&out, &w, &names, true, false);

    let mut d = start_daemon(&server, &names, &settings);
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(60)),
        "restarted daemon did not drain"
    );
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}

#[test]
fn sigterm_with_a_partial_batch_waiting_leaves_it_in_the_source() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "300"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let w = workload(3, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    // Let the daemon see them and start waiting for the batch's deadline.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        llen(&mut c, &names.processing),
        0,
        "partial batch left before its 300 s timeout"
    );
    d.terminate_ok();
    assert_eq!(llen(&mut c, &names.processing), 0);
    assert_eq!(
        read_all(&mut c, &names.source),
        w.messages,
        "the partial batch must be back in the source, in order"
    );
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
}

#[test]
fn json_logs_trace_every_envelope() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_LOG_FORMAT", "json"),
            ("REDIS_BATCH_SIZE", "5"),
            ("REDIS_PROCESSING_TIMEOUT", "0.3"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let w = workload(8, 0, 150);
    push_all(&mut c, &names.source, &w.messages[..5]); // a full batch
    std::thread::sleep(Duration::from_millis(300));
    push_all(&mut c, &names.source, &w.messages[5..]); // a partial one, sent on timeout
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, &names.processing)
            == 2),
        "expected two envelopes"
    );
    let envs = envelopes(&mut c, &names.processing);
    let ids: Vec<String> = envs
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    let logged = |id: &str| {
        d.stdout_lines()
            .iter()
            .any(|l| l.contains(id) && l.contains("envelope sent"))
    };
    assert!(
        wait_until(Duration::from_secs(5), || ids.iter().all(|id| logged(id))),
        "not every envelope has an \"envelope sent\" line; stdout:\n{}",
        d.stdout_lines().join("\n")
    );
    d.terminate_ok();
    // Every stdout line is one JSON object.
    let lines = d.json_lines();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l.is_object(), "log line is not an object: {l}");
    }
    let sent = d.events("envelope sent");
    for (env, id) in envs.iter().zip(&ids) {
        let line = sent
            .iter()
            .find(|l| l["event_id"].as_str() == Some(id))
            .unwrap_or_else(|| panic!("no \"envelope sent\" line for {id}"));
        assert_eq!(
            as_u64(&line["size"]),
            env["payload"]["size"].as_u64(),
            "{line}"
        );
        assert_eq!(line["source"], names.source, "{line}");
        assert_eq!(line["processing"], names.processing, "{line}");
        let age = as_f64(&line["oldest_age_ms"])
            .unwrap_or_else(|| panic!("oldest_age_ms missing: {line}"));
        assert!(age >= 0.0, "{line}");
    }
    // The second envelope was closed by the 0.3 s timeout, so its oldest message is at
    // least that old.
    let timed_out = sent
        .iter()
        .find(|l| l["event_id"].as_str() == Some(&ids[1]))
        .unwrap();
    assert_eq!(as_u64(&timed_out["size"]), Some(3));
    assert!(
        as_f64(&timed_out["oldest_age_ms"]).unwrap() >= 250.0,
        "timeout-closed envelope reports oldest_age_ms below the timeout: {timed_out}"
    );
}

/// The audit the tests above rely on catches loss, duplicates, reordering and wrong
/// dead letters (checked on hand-made outcomes, no daemon involved).
#[test]
fn the_exactly_once_audit_catches_loss_duplicates_and_reordering() {
    let names = Names::new();
    let w = workload(20, 5, 100); // seqs 4, 9, 14, 19 are bad
    let envelope = |seqs: &[u64]| -> Vec<u8> {
        let msgs: Vec<String> = seqs
            .iter()
            .map(|s| String::from_utf8(w.good_bytes[s].clone()).unwrap())
            .collect();
        format!(
            r#"{{"event_id":"{}","event_type":"batch_processing","payload":{{"batch":[{}],"size":{}}},"timestamp":"{}","service":"batch_processor"}}"#,
            uuid::Uuid::new_v4(),
            msgs.join(","),
            seqs.len(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        )
        .into_bytes()
    };
    let dead = |m: &[u8]| DeadRecord {
        original: m.to_vec(),
        base64: std::str::from_utf8(m).is_err(),
        reason: "bad".into(),
        source_queue: names.source.clone(),
    };
    let make = |batches: Vec<Vec<u64>>, dead_letters: Vec<DeadRecord>, source: Vec<Vec<u8>>| {
        let envelopes: Vec<Vec<u8>> = batches.iter().map(|b| envelope(b)).collect();
        Outcome {
            batches: envelopes.iter().map(|e| batch_raw(e)).collect(),
            envelopes,
            dead: dead_letters,
            source,
        }
    };
    let good = w.good.clone();
    let all_dead: Vec<DeadRecord> = w.bad.iter().map(|b| dead(b)).collect();
    let check = |out: Outcome, ordered: bool, complete: bool| {
        let names = names.clone();
        let w = &w;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            assert_accounted(&out, w, &names, ordered, complete)
        }))
        .is_ok()
    };
    // Correct, complete.
    assert!(check(
        make(
            vec![good[..10].to_vec(), good[10..].to_vec()],
            all_dead.clone(),
            vec![]
        ),
        true,
        true
    ));
    // Correct, partway: the untouched tail still in the source.
    let k = w.messages.len() - 3;
    let in_env: Vec<u64> = good.iter().copied().filter(|s| (*s as usize) < k).collect();
    let dead_so_far: Vec<DeadRecord> = w.bad[..w.bad.len() - 1].iter().map(|b| dead(b)).collect();
    assert!(check(
        make(
            vec![in_env.clone()],
            dead_so_far.clone(),
            w.messages[k..].to_vec()
        ),
        true,
        false
    ));
    // Partway is not complete.
    assert!(!check(
        make(vec![in_env], dead_so_far, w.messages[k..].to_vec()),
        true,
        true
    ));
    // A duplicate across envelopes.
    assert!(!check(
        make(vec![good.clone(), vec![good[3]]], all_dead.clone(), vec![]),
        false,
        true
    ));
    // A lost message.
    assert!(!check(
        make(vec![good[1..].to_vec()], all_dead.clone(), vec![]),
        false,
        true
    ));
    // Reordered.
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    assert!(check(
        make(vec![swapped.clone()], all_dead.clone(), vec![]),
        false,
        true
    ));
    assert!(!check(
        make(vec![swapped], all_dead.clone(), vec![]),
        true,
        true
    ));
    // A dead letter missing, doubled, or stored lossily.
    assert!(!check(
        make(vec![good.clone()], all_dead[1..].to_vec(), vec![]),
        true,
        true
    ));
    let mut doubled = all_dead.clone();
    doubled.push(all_dead[0].clone());
    assert!(!check(
        make(vec![good.clone()], doubled, vec![]),
        true,
        true
    ));
    let mut lossy = all_dead.clone();
    let binary = lossy
        .iter_mut()
        .find(|d| d.base64)
        .expect("a binary bad message");
    binary.original = String::from_utf8_lossy(&binary.original)
        .into_owned()
        .into_bytes();
    binary.base64 = false;
    assert!(!check(make(vec![good.clone()], lossy, vec![]), true, true));
    // A good message both delivered and still in the source.
    let first = w.messages[0].clone();
    assert!(!check(
        make(vec![good.clone()], all_dead.clone(), vec![first]),
        false,
        false
    ));
    // A wrong source_queue.
    let mut wrong = all_dead.clone();
    wrong[0].source_queue = "elsewhere".into();
    assert!(!check(make(vec![good], wrong, vec![]), true, true));
}
