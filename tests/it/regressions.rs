//! Regressions found by a hostile review of the mover: refusals that have nothing to do with
//! size never lower the value limit, a healthy mover waiting for a partial batch is never
//! called stuck, a purge beside a running daemon never separates a record from its message, a
//! lease TTL too short for the round trip is reported, and records by reference built while
//! other commits are in flight each move their own message.

use std::time::Duration;

use crate::harness::*;

/// Refusals that have nothing to do with size (here WRONGTYPE on the processing list, fixed
/// by the operator a moment later) never lower the value limit, even with CONFIG denied and
/// commits carrying a 2 MB value: the good 2 MB message is enveloped, not dead-lettered as too
/// large to wrap.
#[test]
fn non_size_refusals_must_not_lower_the_value_limit() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut admin = server.conn();
    acl_setuser(
        &mut admin,
        "bp",
        &["on", ">bp-pw", "~*", "&*", "+@all", "-config"],
    );
    // Three good messages: small, 2 MB, small. The server takes values up to 512 MB, and the
    // daemon's setting says so too (the default): nothing here is too large.
    let good = vec![event(1, 200), event(2, 2_000_000), event(3, 200)];
    push_all(&mut admin, &names.source, &good);
    // An operator mistake the daemon must survive: the processing list is a string for a
    // moment. Every commit is refused with processing_not_list / WRONGTYPE.
    let _: () = redis::cmd("SET")
        .arg(&names.processing)
        .arg("not a list")
        .query(&mut admin)
        .unwrap();
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_USERNAME", "bp"),
            ("REDIS_PASSWORD", "bp-pw"),
            ("REDIS_MAX_MESSAGE_BYTES", "3000000"),
            ("REDIS_BATCH_SIZE", "1"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
            ("REDIS_RETRY_MAX_DELAY", "0.2"),
        ],
    );
    let mut d = spawn_daemon(&env, &["run"]);
    // Let a few commits be refused (the retry delay is at most 0.2 s).
    std::thread::sleep(Duration::from_secs(2));
    // The operator fixes the key.
    let _: () = redis::cmd("DEL")
        .arg(&names.processing)
        .query(&mut admin)
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || llen(&mut admin, &names.source)
            == 0),
        "not drained:\n{}",
        d.all_output()
    );
    d.terminate_ok();
    let lowered = d.events("value limit lowered");
    let spliced: Vec<Vec<u8>> = read_all(&mut admin, &names.processing)
        .iter()
        .flat_map(|e| batch_raw(e))
        .collect();
    let seqs: Vec<u64> = spliced.iter().map(|m| seq_of(m)).collect();
    let dead: Vec<String> = read_all(&mut admin, &names.dead_letter)
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r).unwrap();
            v["reason"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert!(
        lowered.is_empty() && seqs == vec![1, 2, 3] && dead.is_empty(),
        "a WRONGTYPE refusal was taken for a size refusal: value limit lowered {lowered:?}; \
         enveloped seqs {seqs:?}; dead letters {dead:?}"
    );
}

/// Two transient blips (client kills) further apart than `REDIS_STUCK_AFTER` while a young
/// partial batch waits for its deadline do not make a healthy mover stuck: no `mover stuck`,
/// `/readyz` stays 200.
#[test]
fn two_blips_around_a_waiting_partial_batch_are_not_stuck() {
    let server = RedisServer::start();
    let names = Names::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_HTTP_ADDR", &addr),
            ("REDIS_STUCK_AFTER", "2"),
            ("REDIS_RETRY_MAX_DELAY", "0.2"),
            ("REDIS_RETRY_INITIAL_DELAY", "0.05"),
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "60"),
        ],
    );
    assert!(d.wait_for_line("lease acquired", Duration::from_secs(10)));
    assert!(d.wait_for_line("http listening", Duration::from_secs(10)));
    let mut test = chaos_conn(&server.url(), "review");
    // One message: a partial batch that waits for its 60 s deadline.
    push_all(&mut test, &names.source, &[event(1, 200)]);
    std::thread::sleep(Duration::from_millis(500));
    // Blip 1.
    assert!(kill_other_clients(&mut test).unwrap() > 0);
    std::thread::sleep(Duration::from_secs(3));
    // Blip 2, 3 s later: the mover reconnected at once and has been healthy since.
    assert!(kill_other_clients(&mut test).unwrap() > 0);
    // Long enough for the reconnection: only the stuck verdict can still fail readiness.
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = http_get(port, "/readyz");
    let stuck = d.events("mover stuck");
    d.terminate_ok();
    assert!(
        stuck.is_empty() && status == 200,
        "a healthy mover waiting for a partial batch's deadline was called stuck: \
         readyz {status} {body:?}; events {stuck:?}"
    );
    assert_eq!(llen(&mut test, &names.source), 1);
}

/// A purge beside a running daemon never separates a record from its message: a record by
/// reference that the daemon commits during the purge keeps the list holding its message.
#[test]
fn purge_beside_a_running_daemon_keeps_no_record_without_its_message() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let names = Names::new();
    let mut c = server.conn();
    // One old record to purge, so the test sees when the purge's transaction has run.
    let _: () = redis::cmd("LPUSH")
        .arg(&names.dead_letter)
        .arg(r#"{"old":"record"}"#)
        .query(&mut c)
        .unwrap();
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_MAX_MESSAGE_BYTES", "2000000"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    assert!(d.wait_for_line("lease acquired", Duration::from_secs(10)));
    // The operator's purge runs over a slow link (1 s each way): its SCAN reaches Redis about
    // 2 s after its MULTI/EXEC.
    let proxy = Proxy::to_port(server.port, Duration::from_secs(1));
    let mut cli_env = env_with(&server, &names, &[]);
    cli_env.retain(|(k, _)| k != "REDIS_PORT");
    cli_env.push(("REDIS_PORT".into(), proxy.port_str()));
    let purge = start_cli(&cli_env, &["dlq", "purge", "--yes"]);
    assert!(
        wait_until(Duration::from_secs(15), || llen(&mut c, &names.dead_letter)
            == 0),
        "the purge never ran"
    );
    // Right after the purge's transaction, a bad message arrives and is dead-lettered by
    // reference.
    let bad = control_bytes_message(0);
    push_all(&mut c, &names.source, std::slice::from_ref(&bad));
    assert!(
        wait_until(Duration::from_secs(5), || llen(&mut c, &names.dead_letter)
            == 1),
        "not dead-lettered:\n{}",
        d.all_output()
    );
    let out = purge.finish(Duration::from_secs(30));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    d.terminate_ok();
    let records = read_all(&mut c, &names.dead_letter);
    assert_eq!(
        records.len(),
        1,
        "the new record was not purged (the purge counted 1)"
    );
    let record: serde_json::Value = serde_json::from_slice(&records[0]).unwrap();
    let key = record["raw_key"].as_str().expect("a record by reference");
    let kept = read_all(&mut c, key);
    assert!(
        kept == vec![bad],
        "the record survived the purge but its message list {key} was deleted ({} items left): \
         the message is lost",
        kept.len()
    );
}

/// A round trip too long for the lease TTL (here TTL 1.5 s, a 1.1 s round trip): the lease runs
/// out locally before each renewal's news arrives, so no commit can be built under it. That
/// configuration cannot move messages, but it must not fail silently: readiness says so.
#[test]
fn a_round_trip_too_long_for_the_lease_ttl_is_not_silent() {
    let server = RedisServer::start();
    let proxy = Proxy::to_port(server.port, Duration::from_millis(550));
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(10, 0, 200);
    push_all(&mut c, &names.source, &w.messages);
    let port = proxy.port_str();
    let http = free_port();
    let addr = format!("127.0.0.1:{http}");
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_PORT", &port),
            ("REDIS_HTTP_ADDR", &addr),
            ("REDIS_LEASE_TTL", "1.5"),
            ("REDIS_COMMAND_TIMEOUT", "3"),
            ("REDIS_BATCH_SIZE", "5"),
            ("REDIS_PROCESSING_TIMEOUT", "0.5"),
            ("REDIS_STUCK_AFTER", "3"),
        ],
    );
    assert!(d.wait_for_line("http listening", Duration::from_secs(10)));
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (status, body) = http_get(http, "/readyz");
            status == 503 && (body.contains("mover stuck") || body.contains("redis unreachable"))
        }),
        "a wedged mover looked ready:\n{}",
        d.all_output()
    );
    d.terminate_ok();
    // Whatever moved, moved exactly once.
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, false);
}

/// Records by reference built while earlier commits are still in
/// flight move exactly their own message (the position sent to the script is counted from
/// the tail as the commits before it leave it). Small batches, a short prefetch and a
/// delaying link keep two requests in flight; every 7th message is a distinct message too
/// large for its record.
#[test]
fn records_by_reference_under_pipelining_move_their_own_message() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let proxy = Proxy::to_port(server.port, Duration::from_millis(15));
    let names = Names::new();
    let mut c = server.conn();
    let mut messages = Vec::new();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..120u64 {
        if i % 7 == 3 {
            let mut m = format!("{{\"bad\":{i},\"blob\":\"").into_bytes();
            m.extend(std::iter::repeat_n(1u8, 200_000 + i as usize));
            m.extend_from_slice(b"\"}");
            bad.push(m.clone());
            messages.push(m);
        } else {
            let m = event(i, 150);
            good.push(m.clone());
            messages.push(m);
        }
    }
    push_all(&mut c, &names.source, &messages);
    let port = proxy.port_str();
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_PORT", &port),
            ("REDIS_BATCH_SIZE", "2"),
            ("REDIS_PREFETCH", "4"),
            ("REDIS_MAX_MESSAGE_BYTES", "2000000"),
            ("REDIS_PROCESSING_TIMEOUT", "0.05"),
        ],
    );
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(60)),
        "not drained:\n{}",
        d.all_output()
    );
    d.terminate_ok();
    let spliced: Vec<Vec<u8>> = read_all(&mut c, &names.processing)
        .iter()
        .flat_map(|e| batch_raw(e))
        .collect();
    assert!(spliced == good, "good messages: exactly once, in order");
    let records = read_all(&mut c, &names.dead_letter);
    assert_eq!(records.len(), bad.len());
    for (record, expected) in records.iter().zip(&bad) {
        let v: serde_json::Value = serde_json::from_slice(record).unwrap();
        let key = v["raw_key"].as_str().expect("by reference");
        let kept = read_all(&mut c, key);
        assert_eq!(kept.len(), 1, "{key}");
        assert!(kept[0] == *expected, "{key} holds another message");
    }
}
