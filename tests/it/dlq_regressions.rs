//! Regressions found by a hostile review of the dead-letter tools: a purge beside a running
//! daemon never deletes the message of a record it leaves, a replay takes a message by
//! reference only from a list the daemon made for it, and a purge deletes exactly the message
//! lists its records name.

use std::time::Duration;

use crate::harness::*;

/// `dlq purge` deletes the records (LLEN + DEL in one transaction), then, in later round
/// trips, SCANs for `<dl>:oversized:*` and deletes every match. A message a daemon
/// dead-letters by reference in between gets a record that survives the purge and a list
/// that does not: the record's `raw_key` names a deleted list and the message is lost.
/// A slow link between the CLI and Redis (a delaying proxy) just widens the window.
#[test]
fn purge_never_deletes_the_list_of_a_record_it_did_not_delete() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let names = Names::new();
    let mut c = server.conn();
    let daemon_env = env_with(
        &server,
        &names,
        &[
            ("REDIS_MAX_MESSAGE_BYTES", "2000000"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    let mut d = spawn_daemon(&daemon_env, &["run"]);
    // One dead letter by reference for the purge to delete.
    push_all(&mut c, &names.source, &[control_bytes_message(1)]);
    assert!(
        wait_until(Duration::from_secs(20), || llen(&mut c, &names.dead_letter)
            == 1),
        "{}",
        d.all_output()
    );

    // The purge runs over a link with 300 ms each way.
    let proxy = Proxy::to_port(server.port, Duration::from_millis(300));
    let cli_env = env_with(
        &server,
        &names,
        &[
            ("REDIS_PORT", &proxy.port_str()),
            ("REDIS_COMMAND_TIMEOUT", "10"),
        ],
    );
    let purge = start_cli(&cli_env, &["dlq", "purge", "--yes"]);
    // The moment its LLEN + DEL has run, a new bad message arrives and the daemon
    // dead-letters it by reference.
    assert!(
        wait_until(Duration::from_secs(20), || llen(&mut c, &names.dead_letter)
            == 0),
        "the purge never deleted the records"
    );
    push_all(&mut c, &names.source, &[control_bytes_message(2)]);
    assert!(
        wait_until(Duration::from_secs(20), || llen(&mut c, &names.dead_letter)
            == 1),
        "{}",
        d.all_output()
    );
    let out = purge.finish(Duration::from_secs(30));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    d.terminate_ok();

    // The record written after the purge's delete is still there (the purge reported and
    // deleted only the record before it) ...
    let records = read_all(&mut c, &names.dead_letter);
    assert_eq!(records.len(), 1, "{}", out.stdout);
    let record: serde_json::Value = serde_json::from_slice(&records[0]).unwrap();
    let key = record["raw_key"].as_str().expect("a record by reference");
    // ... so its message must be too.
    let kept = read_all(&mut c, key);
    assert!(
        kept == vec![control_bytes_message(2)],
        "the purge deleted {key} ({} elements left), the message of a record it left in \
         place: lost ({})",
        kept.len(),
        out.stdout.trim()
    );
}

/// `dlq replay` trusts a record's `raw_key` blindly: it moves the oldest element of
/// whatever list the record names and then DELs that key. A record whose `raw_key` names
/// the processing queue (a hand repair, another tool, a typo) wipes every envelope.
#[test]
fn replay_by_reference_touches_only_its_own_oversized_list() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = daemon_env(&server, &names);
    let mut c = server.conn();
    let envelopes: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("{{\"envelope\":{i}}}").into_bytes())
        .collect();
    push_all(&mut c, &names.processing, &envelopes);
    // A list under the right prefix that holds two elements (not one): replay takes one
    // and deletes the other.
    let two = format!("{}:oversized:two", names.dead_letter);
    push_all(&mut c, &two, &[b"first".to_vec(), b"second".to_vec()]);
    let record = |raw_key: &str| {
        serde_json::json!({
            "reason": "message is not valid JSON: x",
            "raw_key": raw_key,
            "source_queue": names.source,
            "failed_at": "2026-01-01T00:00:00.000000+00:00",
        })
        .to_string()
        .into_bytes()
    };
    push_all(
        &mut c,
        &names.dead_letter,
        &[record(&names.processing), record(&two)],
    );
    let out = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = |l: Vec<Vec<u8>>| {
        l.into_iter()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        text(read_all(&mut c, &names.processing)),
        text(envelopes),
        "replay moved/deleted envelopes from the processing queue ({}); source now {:?}",
        out.stdout.trim(),
        text(read_all(&mut c, &names.source))
    );
    let back = read_all(&mut c, &names.source);
    let left = read_all(&mut c, &two);
    assert!(
        back.len() + left.len() == 2 || back.is_empty(),
        "replay of one record by reference destroyed part of {two}: source {back:?}, list {left:?}"
    );
}

/// `dlq purge` deletes the message list its record names, and no other list, even when the
/// dead-letter list's name holds `[`, `]`, `*`, `?` or `\` and neighbours share its prefix.
#[test]
fn purge_deletes_only_the_message_lists_its_records_name() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let dl = format!("{}[ab]*?\\x", names.dead_letter);
    let env = env_with(&server, &names, &[("REDIS_DEAD_LETTER_QUEUE", &dl)]);
    let own = format!("{dl}:oversized:1");
    // Keys that an unescaped (or wrongly escaped) pattern would match.
    let decoys = [
        format!("{}a-anything?\\x:oversized:1", names.dead_letter),
        format!("{}bXYZ!x:oversized:1", names.dead_letter),
        format!("{}[ab]*?x:oversized:1", names.dead_letter),
        format!("{}[ab]*?\\\\x:oversized:1", names.dead_letter),
        format!("{}[ab]zz?\\x:oversized:1", names.dead_letter),
    ];
    // The record names its message list, as a record by reference does.
    let record = serde_json::json!({"reason": "r", "raw_key": own, "source_queue": "s"});
    push_all(&mut c, &dl, &[record.to_string().into_bytes()]);
    push_all(&mut c, &own, &[b"m".to_vec()]);
    for d in &decoys {
        push_all(&mut c, d, &[b"m".to_vec()]);
    }
    let out = run_cli(&env, &["dlq", "purge", "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(llen(&mut c, &own), 0, "its own list survived");
    for d in &decoys {
        assert_eq!(llen(&mut c, d), 1, "purge deleted a neighbour's list {d}");
    }
}

/// A hand-edited or foreign record whose `raw_key` names the source queue: `dlq purge` deletes
/// only `<dead-letter>:oversized:` lists, so the source and its messages survive.
#[test]
fn purge_deletes_only_this_dead_letter_list_s_own_message_lists() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(5, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    let record = serde_json::json!({
        "reason": "hand-edited",
        "raw_key": names.source,
        "source_queue": names.source,
        "failed_at": "2024-01-01T00:00:00.000Z",
    })
    .to_string();
    let _: () = redis::cmd("LPUSH")
        .arg(&names.dead_letter)
        .arg(&record)
        .query(&mut c)
        .unwrap();
    let env = env_with(&server, &names, &[]);
    let out = run_cli(&env, &["dlq", "purge", "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        llen(&mut c, &names.source),
        5,
        "dlq purge deleted the source queue named by a record's raw_key"
    );
}

/// Check: replay by reference refuses a `raw_key` list holding 0 (gone) or 2 elements, and
/// keeps the record.
#[test]
fn replay_by_reference_refuses_lists_not_holding_exactly_one() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let key = format!("{}:oversized:two", names.dead_letter);
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg("{\"a\":1}")
        .arg("{\"a\":2}")
        .query(&mut c)
        .unwrap();
    for raw_key in [key.clone(), format!("{}:oversized:gone", names.dead_letter)] {
        let record = serde_json::json!({
            "reason": "message is not interoperable JSON: x",
            "raw_key": raw_key,
            "source_queue": names.source,
            "failed_at": "2024-01-01T00:00:00.000Z",
        })
        .to_string();
        let _: () = redis::cmd("LPUSH")
            .arg(&names.dead_letter)
            .arg(&record)
            .query(&mut c)
            .unwrap();
    }
    let env = env_with(&server, &names, &[]);
    let out = run_cli(&env, &["dlq", "replay", "--yes"]);
    assert_eq!(
        llen(&mut c, &names.source),
        0,
        "{} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(llen(&mut c, &names.dead_letter), 2);
    assert_eq!(llen(&mut c, &key), 2);
}
