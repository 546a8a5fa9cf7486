//! No record Redis would refuse: a message whose dead-letter record (JSON escaping grows
//! control bytes six-fold) or whose envelope would pass the server's `proto-max-bulk-len` is
//! dead-lettered by reference (moved inside Redis, byte for byte, onto a list of its own named
//! in the record's `raw_key`) while the good messages around it flow; `dlq list` shows it and
//! `dlq replay` puts it back. When the daemon may not read the limit and its setting is too
//! high, it learns the limit from the refused commits within seconds instead of retrying
//! forever.

use std::time::Duration;

use crate::harness::*;

/// A valid event just under 1 MiB: too large to wrap under a 1 MiB value limit.
fn almost_a_mebibyte() -> Vec<u8> {
    event(1_000_000, 1_048_300)
}

fn setup(server: &RedisServer, names: &Names) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut c = server.conn();
    let big = vec![control_bytes_message(0), almost_a_mebibyte()];
    let good: Vec<Vec<u8>> = (0..40).map(|i| event(i, 200)).collect();
    let mut messages = good[..20].to_vec();
    messages.push(big[0].clone());
    messages.extend_from_slice(&good[20..30]);
    messages.push(big[1].clone());
    messages.extend_from_slice(&good[30..]);
    push_all(&mut c, &names.source, &messages);
    (good, big)
}

/// Check the outcome: every good message enveloped once, in order; the control-byte message
/// dead-lettered by reference, its list holding its exact bytes; the message too large to
/// wrap dead-lettered with its bytes in the record (the record itself fits).
fn assert_by_reference(
    c: &mut redis::Connection,
    names: &Names,
    good: &[Vec<u8>],
    big: &[Vec<u8>],
) {
    let spliced: Vec<Vec<u8>> = read_all(c, &names.processing)
        .iter()
        .flat_map(|e| batch_raw(e))
        .collect();
    let seqs = |ms: &[Vec<u8>]| ms.iter().map(|m| (seq_of(m), m.len())).collect::<Vec<_>>();
    assert_eq!(seqs(&spliced), seqs(good), "the good messages, in order");
    assert!(spliced == good, "the good messages, byte for byte");
    let records: Vec<serde_json::Value> = read_all(c, &names.dead_letter)
        .iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    for record in &records {
        assert_eq!(record["source_queue"], names.source.as_str());
        assert!(record["failed_at"].as_str().is_some());
    }
    let by_reference = &records[0];
    assert!(by_reference.get("raw").is_none() && by_reference.get("raw_b64").is_none());
    let key = by_reference["raw_key"].as_str().expect("raw_key");
    assert!(
        key.starts_with(&format!("{}:oversized:", names.dead_letter)),
        "{key}"
    );
    assert_eq!(read_all(c, key), vec![big[0].clone()], "bytes kept exactly");
    // Kept in the record when that fits, by reference otherwise (when the limit was learned
    // from refusals, the learned limit may sit just below this record).
    match records[1]["raw_key"].as_str() {
        None => assert!(records[1]["raw"].as_str().unwrap().as_bytes() == &big[1][..]),
        Some(key) => assert_eq!(read_all(c, key), vec![big[1].clone()]),
    }
    assert!(records[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert!(records[1]["reason"]
        .as_str()
        .unwrap()
        .contains("its envelope would pass the server's value limit of "));
}

#[test]
fn messages_too_large_for_a_record_or_an_envelope_go_by_reference() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let names = Names::new();
    let (good, big) = setup(&server, &names);
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_MAX_MESSAGE_BYTES", "2000000"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    let mut d = spawn_daemon(&env, &["run"]);
    let mut c = server.conn();
    assert!(
        wait_until(Duration::from_secs(20), || llen(&mut c, &names.source) == 0),
        "not drained:\n{}",
        d.all_output()
    );
    d.terminate_ok();
    assert_by_reference(&mut c, &names, &good, &big);

    // dlq list shows where the bytes are; replay puts them back on the source, exactly.
    let list = run_cli(&env, &["dlq", "list"]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    assert!(
        list.stdout.contains("<kept on the list "),
        "{}",
        list.stdout
    );
    let replay = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(replay.code, Some(0), "{}", replay.stderr);
    let mut back = read_all(&mut c, &names.source);
    back.sort();
    let mut expected = big.clone();
    expected.sort();
    assert_eq!(back, expected);
    assert_eq!(llen(&mut c, &names.dead_letter), 0);
    let leftovers: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:oversized:*", names.dead_letter))
        .query(&mut c)
        .unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_limit_set_too_high_is_learned_from_refused_commits() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let names = Names::new();
    let mut admin = server.conn();
    // A user that may not run CONFIG: the daemon cannot read the limit, and its setting
    // (512 MB by default) is far too high.
    acl_setuser(
        &mut admin,
        "bp",
        &["on", ">bp-pw", "~*", "&*", "+@all", "-config"],
    );
    let (good, big) = setup(&server, &names);
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_USERNAME", "bp"),
            ("REDIS_PASSWORD", "bp-pw"),
            ("REDIS_MAX_MESSAGE_BYTES", "2000000"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
            ("REDIS_RETRY_MAX_DELAY", "0.2"),
        ],
    );
    let mut d = spawn_daemon(&env, &["run"]);
    assert!(
        wait_until(Duration::from_secs(20), || llen(&mut admin, &names.source)
            == 0),
        "the refused commit wedged the source:\n{}",
        d.all_output()
    );
    d.terminate_ok();
    assert!(
        !d.events("value limit lowered").is_empty(),
        "{}",
        d.all_output()
    );
    assert_by_reference(&mut admin, &names, &good, &big);
}
