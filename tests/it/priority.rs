//! Priority sources: `REDIS_RAW_DATA_QUEUE` names several lists, highest priority first.
//! Urgent messages overtake a bulk backlog within a few envelopes; SIGKILL during a drain
//! from three sources ends exactly once with each list's order kept; two deployments whose
//! source lists overlap never both move the shared list; dead letters name their own source
//! and replay to it; status and the metrics show every source.

use std::time::Duration;

use crate::harness::*;

/// Distinct good messages `event(first..first+n)` with a bad one after every `bad_every`.
fn messages(first: u64, n: u64, bad_every: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for seq in first..first + n {
        out.push(event(seq, 120));
        if bad_every > 0 && (seq - first) % bad_every == bad_every - 1 {
            out.push(format!("not json {seq}").into_bytes());
        }
    }
    out
}

/// The daemon's environment for `sources` (highest priority first) plus `extra`.
fn env_for(
    server: &RedisServer,
    names: &Names,
    sources: &[String],
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let joined = sources.join(",");
    let mut all = vec![("REDIS_RAW_DATA_QUEUE", joined.as_str())];
    all.extend_from_slice(extra);
    env_with(server, names, &all)
}

#[test]
fn urgent_messages_overtake_a_bulk_backlog_within_a_few_envelopes() {
    let server = RedisServer::start();
    let names = Names::new();
    let sources = names.sources(2);
    let (urgent, bulk) = (&sources[0], &sources[1]);
    let mut c = server.conn();
    let backlog = messages(0, 2_000, 0);
    push_all(&mut c, bulk, &backlog);
    // Twenty envelopes a second, one at a time: the bulk backlog takes ten seconds, and every
    // commit carries at most one envelope, so the count of envelopes that may still leave
    // ahead of an urgent message is small and known (see below).
    let env = env_for(
        &server,
        &names,
        &sources,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_MAX_BATCHES_PER_SECOND", "20"),
            ("REDIS_BATCH_BURST", "1"),
            ("REDIS_PROCESSING_TIMEOUT", "0.05"),
        ],
    );
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, &names.processing)
            >= 5),
        "the bulk drain did not start: {}",
        daemon.all_output()
    );
    // Push the urgent messages and count the envelopes already sent, in one step.
    let urgent_msgs = messages(1_000_000, 5, 0);
    let mut push = redis::pipe();
    push.atomic().cmd("LPUSH").arg(urgent).ignore();
    for m in &urgent_msgs {
        push.arg(&m[..]);
    }
    let (sent_before, bulk_left): (usize, usize) = push
        .cmd("LLEN")
        .arg(&names.processing)
        .cmd("LLEN")
        .arg(bulk)
        .query(&mut c)
        .unwrap();
    assert!(
        bulk_left > 1_000,
        "the backlog should still be large: {bulk_left}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, urgent) == 0),
        "the urgent messages were not taken"
    );
    daemon.terminate_ok();
    let all = envelopes(&mut c, &names.processing);
    let holds_urgent = |e: &serde_json::Value| {
        e["payload"]["batch"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["seq"].as_u64() >= Some(1_000_000))
    };
    let first_urgent = all.iter().position(holds_urgent).expect("urgent envelope");
    // At the push, at most two requests were in flight, each with at most one envelope; the
    // first of them to run after the push reads the urgent list, and the plan made on its
    // reply takes the urgent messages first. So at most two envelopes leave between.
    assert!(
        first_urgent <= sent_before + 2,
        "the urgent messages left in envelope {first_urgent}, {sent_before} had left at the push"
    );
    // They lead their envelope, which the bulk backlog fills up, in their push order.
    let seqs: Vec<u64> = all[first_urgent]["payload"]["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 10, "{seqs:?}");
    assert_eq!(
        &seqs[..5],
        &[1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_004]
    );
    assert!(seqs[5..].iter().all(|&s| s < 1_000_000), "{seqs:?}");
    let pushed = [urgent_msgs, backlog];
    assert_accounted_sources(
        &mut c,
        &names.processing,
        &names.dead_letter,
        &sources,
        &pushed,
        false,
    );
}

#[test]
fn sigkill_during_a_drain_from_three_sources_ends_exactly_once() {
    const KILLS: usize = 6;
    let seed = fastrand::u64(..);
    println!("random seed {seed}");
    fastrand::seed(seed);
    let server = RedisServer::start();
    let names = Names::new();
    let sources = names.sources(3);
    let mut c = server.conn();
    let pushed: Vec<Vec<Vec<u8>>> = (0..3).map(|k| messages(k * 1_000_000, 8_000, 97)).collect();
    for (source, m) in sources.iter().zip(&pushed) {
        push_all(&mut c, source, m);
    }
    let env = env_for(
        &server,
        &names,
        &sources,
        &[
            ("REDIS_CONSUMER_NAME", "prio-1"),
            ("REDIS_LEASE_TTL", "1"),
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
            // Slow enough that the kills land in the middle of the drain.
            ("REDIS_MAX_BATCHES_PER_SECOND", "400"),
            ("REDIS_BATCH_BURST", "5"),
        ],
    );
    let total: usize = pushed.iter().map(Vec::len).sum();
    let left = |c: &mut redis::Connection| -> usize { sources.iter().map(|s| llen(c, s)).sum() };
    for i in 0..KILLS {
        let mut daemon = spawn_daemon(&env, &["run"]);
        let from = left(&mut c);
        let target = from.saturating_sub(fastrand::usize(200..3_000));
        let moved = wait_until(Duration::from_secs(20), || left(&mut c) <= target);
        assert!(moved, "kill {i}: no progress: {}", daemon.all_output());
        daemon.kill();
        println!("kill {i}: {} of {total} left", left(&mut c));
    }
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(
        wait_until(Duration::from_secs(60), || left(&mut c) == 0),
        "not drained: {} left",
        left(&mut c)
    );
    daemon.terminate_ok();
    let order = assert_accounted_sources(
        &mut c,
        &names.processing,
        &names.dead_letter,
        &sources,
        &pushed,
        true,
    );
    // All three were backlogged from the start: strict priority drains them in order.
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "a lower source went first"
    );
}

#[test]
fn deployments_whose_sources_overlap_never_both_move_the_shared_list() {
    let server = RedisServer::start();
    let (a, b) = (Names::new(), Names::new());
    let shared = format!("{}:shared", a.source);
    let a_sources = vec![a.source.clone(), shared.clone()];
    let b_sources = vec![shared.clone(), b.source.clone()];
    let mut c = server.conn();
    let pushed_a = messages(0, 300, 0);
    let pushed_shared = messages(1_000_000, 300, 0);
    let pushed_b = messages(2_000_000, 300, 0);
    push_all(&mut c, &a.source, &pushed_a);
    push_all(&mut c, &shared, &pushed_shared);
    push_all(&mut c, &b.source, &pushed_b);
    let extra = [("REDIS_BATCH_SIZE", "10"), ("REDIS_LEASE_TTL", "1")];
    let mut first = spawn_daemon(&env_for(&server, &a, &a_sources, &extra), &["run"]);
    assert!(wait_until(Duration::from_secs(10), || {
        llen(&mut c, &a.source) == 0 && llen(&mut c, &shared) == 0
    }));
    let mut second = spawn_daemon(&env_for(&server, &b, &b_sources, &extra), &["run"]);
    assert!(
        second.wait_for_line("standing by", Duration::from_secs(10)),
        "{}",
        second.all_output()
    );
    // More on the shared list while both run: only the first deployment moves it, and the
    // second, which cannot take the shared list's lease, moves nothing at all.
    let more_shared = messages(3_000_000, 200, 0);
    push_all(&mut c, &shared, &more_shared);
    assert!(wait_until(Duration::from_secs(10), || llen(
        &mut c, &shared
    ) == 0));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        llen(&mut c, &b.processing),
        0,
        "the second deployment moved something"
    );
    assert_eq!(llen(&mut c, &b.source), 300);
    // Once the first stops, the second takes both of its lists.
    first.terminate_ok();
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, &b.source) == 0),
        "{}",
        second.all_output()
    );
    second.terminate_ok();
    let mut shared_all = pushed_shared.clone();
    shared_all.extend(more_shared);
    assert_accounted_sources(
        &mut c,
        &a.processing,
        &a.dead_letter,
        &a_sources,
        &[pushed_a, shared_all],
        true,
    );
    assert_accounted_sources(
        &mut c,
        &b.processing,
        &b.dead_letter,
        &b_sources[1..],
        &[pushed_b],
        true,
    );
}

#[test]
fn status_metrics_and_replay_see_every_source() {
    let server = RedisServer::start();
    let names = Names::new();
    let sources = names.sources(3);
    let mut c = server.conn();
    // A bad message on the first and the last source, good ones on all three.
    let pushed = [
        vec![event(0, 60), b"bad first".to_vec()],
        vec![event(1, 60)],
        vec![b"bad last".to_vec(), event(2, 60)],
    ];
    for (source, m) in sources.iter().zip(&pushed) {
        push_all(&mut c, source, m);
    }
    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let env = env_for(
        &server,
        &names,
        &sources,
        &[
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
            ("REDIS_HTTP_ADDR", &http_addr),
            ("REDIS_CONSUMER_NAME", "prio-status"),
        ],
    );
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(wait_until(Duration::from_secs(10), || {
        llen(&mut c, &names.dead_letter) == 2 && llen(&mut c, &names.processing) == 1
    }));
    // One more message waits on the middle source while the daemon is stopped.
    daemon.terminate_ok();
    push_all(&mut c, &sources[1], &[event(3, 60)]);
    let out = run_cli(&env, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let listed: Vec<(String, u64)> = s["queues"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["length"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = sources
        .iter()
        .map(|n| (n.clone(), u64::from(n == &sources[1])))
        .collect();
    assert_eq!(listed, expected);
    let text = run_cli(&env, &["status"]).stdout;
    for (i, source) in sources.iter().enumerate() {
        assert!(text.contains(&format!("source {}", i + 1)), "{text}");
        assert!(text.contains(source.as_str()), "{text}");
    }

    // Replay: each dead letter goes back to the source it came from.
    let out = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(read_all(&mut c, &sources[0]), vec![b"bad first".to_vec()]);
    assert_eq!(read_all(&mut c, &sources[2]), vec![b"bad last".to_vec()]);

    // The gauge has one series per source list.
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(daemon.wait_for_line("http listening", Duration::from_secs(10)));
    let seen = wait_until(Duration::from_secs(10), || {
        let (_, text) = http_get(http_port, "/metrics");
        sources
            .iter()
            .all(|s| metric(&text, &queue_series("source", s)).is_some())
    });
    daemon.terminate_ok();
    assert!(seen, "a source has no queue_length series");
}

/// Envelopes that leave between an urgent push and the envelope that carries it, at the
/// default read-ahead (up to 100 envelopes per commit at batch size 10): each commit that
/// reaches the bulk list carries at most `max_lower_envelopes(10)` (26, about 256
/// messages), and every commit looks at the urgent list, so at most the two commits in
/// flight (52 envelopes) go first, not the whole read-ahead (200).
#[test]
fn urgent_messages_wait_behind_few_envelopes_at_the_default_read_ahead() {
    let server = RedisServer::start();
    let names = Names::new();
    let sources = names.sources(2);
    let (urgent, bulk) = (&sources[0], &sources[1]);
    let mut c = server.conn();
    let backlog = messages(0, 60_000, 0);
    push_all(&mut c, bulk, &backlog);
    let env = env_for(&server, &names, &sources, &[("REDIS_BATCH_SIZE", "10")]);
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(wait_until(Duration::from_secs(20), || {
        llen(&mut c, &names.processing) >= 50
    }));
    let mut pushes = Vec::new();
    for i in 0..5u64 {
        std::thread::sleep(random_ms(5, 40));
        let m = event(1_000_000 + i, 120);
        let (before, bulk_left): (usize, usize) = redis::pipe()
            .atomic()
            .cmd("LPUSH")
            .arg(urgent)
            .arg(&m[..])
            .ignore()
            .cmd("LLEN")
            .arg(&names.processing)
            .cmd("LLEN")
            .arg(bulk)
            .query(&mut c)
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || llen(&mut c, urgent) == 0));
        if bulk_left > 0 {
            pushes.push((1_000_000 + i, before));
        }
    }
    daemon.terminate_ok();
    assert!(
        !pushes.is_empty(),
        "the bulk list drained before the first push"
    );
    let all = envelopes(&mut c, &names.processing);
    for (seq, before) in pushes {
        let at = all
            .iter()
            .position(|e| {
                let batch = e["payload"]["batch"].as_array().unwrap();
                batch.iter().any(|m| m["seq"].as_u64() == Some(seq))
            })
            .unwrap();
        let bound = 2 * batch_processor::mover::plan::max_lower_envelopes(10);
        assert!(
            at <= before + bound,
            "urgent {seq} left in envelope {at}; {before} had left at its push"
        );
    }
}

fn lrange_calls(c: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
    info.lines()
        .find(|l| l.starts_with("cmdstat_lrange:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A partial batch on the lower list waits for its deadline, and a younger message lands on
/// the higher list meanwhile: the batch (which the younger message now leads) still leaves
/// at the older messages' deadline, and the daemon does not poll Redis in a tight loop
/// around it (found by a hostile review).
#[test]
fn a_lower_partial_batch_leaves_at_its_own_deadline_without_busy_polling() {
    let server = RedisServer::start();
    let names = Names::new();
    let sources = names.sources(2);
    let (urgent, bulk) = (&sources[0], &sources[1]);
    let mut c = server.conn();
    let env = env_for(
        &server,
        &names,
        &sources,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "2"),
        ],
    );
    let mut daemon = spawn_daemon(&env, &["run"]);
    assert!(daemon.wait_for_line("lease acquired", Duration::from_secs(10)));
    let t0 = std::time::Instant::now();
    push_all(&mut c, bulk, &[event(1, 100), event(2, 100), event(3, 100)]);
    std::thread::sleep(Duration::from_millis(1000));
    push_all(&mut c, urgent, &[event(100, 100)]);
    // Sent once the bulk messages' 2 s are up (with a generous margin for a busy machine),
    // not at the urgent message's own deadline (t0 + 3 s).
    let sent = wait_until(Duration::from_secs(5), || {
        llen(&mut c, &names.processing) == 1
    });
    let sent_at = t0.elapsed();
    assert!(sent);
    assert!(
        sent_at < Duration::from_millis(2_800),
        "the partial batch left {sent_at:?} after its oldest message, past its 2 s deadline"
    );
    // Idle now: a blocking wait, not a stream of reads.
    let before = lrange_calls(&mut c);
    std::thread::sleep(Duration::from_millis(500));
    let reads = lrange_calls(&mut c) - before;
    daemon.terminate_ok();
    assert!(reads < 20, "{reads} LRANGE in 0.5 s while idle");
    let seqs: Vec<u64> = envelopes(&mut c, &names.processing)[0]["payload"]["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [100, 1, 2, 3], "the urgent message leads its batch");
}

/// Two replicas on three lists, the lease holder SIGKILLed and Redis killed and restarted
/// (AOF) during the drain: every list ends exactly once and in order, and dead letters name
/// their own lists.
#[test]
fn replicas_and_a_redis_restart_on_three_sources_end_exactly_once() {
    let mut server = RedisServer::start_persistent();
    let names = Names::new();
    let sources = names.sources(3);
    let mut c = server.conn();
    let pushed: Vec<Vec<Vec<u8>>> = (0..3)
        .map(|k| messages(k * 1_000_000, 5_000, 101))
        .collect();
    for (source, m) in sources.iter().zip(&pushed) {
        push_all(&mut c, source, m);
    }
    let env = |name: &str| {
        env_for(
            &server,
            &names,
            &sources,
            &[
                ("REDIS_CONSUMER_NAME", name),
                ("REDIS_LEASE_TTL", "1"),
                ("REDIS_BATCH_SIZE", "10"),
                ("REDIS_PROCESSING_TIMEOUT", "0.1"),
                ("REDIS_COMMAND_TIMEOUT", "1"),
                ("REDIS_MAX_BATCHES_PER_SECOND", "300"),
                ("REDIS_BATCH_BURST", "5"),
            ],
        )
    };
    let left = |c: &mut redis::Connection| -> usize { sources.iter().map(|s| llen(c, s)).sum() };
    let mut a = spawn_daemon(&env("prio-a"), &["run"]);
    let mut b = spawn_daemon(&env("prio-b"), &["run"]);
    let total = left(&mut c);
    assert!(wait_until(Duration::from_secs(20), || left(&mut c) < total - 2_000));
    // The holder dies; the other takes over within a lease TTL and goes on.
    let holder = lease_holder(
        &mut c,
        &Names {
            source: sources[0].clone(),
            ..names.clone()
        },
    );
    let (dead, survivor) = if holder.as_deref() == Some("prio-a") {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill();
    let after_kill = left(&mut c);
    assert!(wait_until(Duration::from_secs(20), || left(&mut c)
        < after_kill - 2_000));
    // Redis dies and comes back from its append-only file.
    drop(c);
    server.kill();
    std::thread::sleep(Duration::from_millis(1_000));
    server.restart();
    c = server.conn();
    assert!(
        wait_until(Duration::from_secs(60), || left(&mut c) == 0),
        "not drained: {} left\n{}",
        left(&mut c),
        survivor.all_output()
    );
    survivor.terminate_ok();
    let order = assert_accounted_sources(
        &mut c,
        &names.processing,
        &names.dead_letter,
        &sources,
        &pushed,
        true,
    );
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "a lower source went first"
    );
}
