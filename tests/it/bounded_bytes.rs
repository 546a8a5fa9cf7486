//! Bounded bytes: with `REDIS_MAX_INFLIGHT_BYTES`, the daemon holds at most that many message
//! bytes, however large the messages. A message over `REDIS_MAX_MESSAGE_BYTES` streams past
//! the reader without being held, and is dead-lettered by reference (moved inside Redis), its
//! exact bytes kept.

use std::time::Duration;

use crate::harness::*;

/// The bound the daemon runs with.
const BOUND: u64 = 16 << 20;

/// What the daemon takes beyond the messages it holds: code, runtime, allocator, connection
/// buffers and packed commands (a daemon at rest takes about 10 MB).
const FIXED_OVERHEAD: u64 = 32 << 20;

/// A 50 MB message, distinct per `i`: a valid JSON string, far over the size limit.
fn huge(i: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(50_000_002);
    m.push(b'"');
    m.extend((0..50_000_000u32).map(|j| b'a' + u8::try_from((j + u32::from(i)) % 26).unwrap()));
    m.push(b'"');
    m
}

#[test]
fn a_backlog_of_50_mb_messages_stays_under_the_bound() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let good: Vec<Vec<u8>> = (0..300).map(|i| event(i, 300)).collect();
    let big: Vec<Vec<u8>> = (0..4).map(huge).collect();
    // Oldest first: good messages with a huge one after every 60.
    let mut messages = Vec::new();
    for (k, chunk) in good.chunks(60).enumerate() {
        messages.extend_from_slice(chunk);
        if let Some(b) = big.get(k) {
            messages.push(b.clone());
        }
    }
    push_all(&mut c, &names.source, &messages);
    let bound = BOUND.to_string();
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_MAX_INFLIGHT_BYTES", bound.as_str()),
            ("REDIS_BATCH_SIZE", "50"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    let mut d = spawn_daemon(&env, &["run"]);
    assert!(
        wait_until(Duration::from_secs(60), || llen(&mut c, &names.source) == 0),
        "not drained:\n{}",
        d.all_output()
    );
    let peak_kb = d.vm_hwm_kb().expect("VmHWM");
    d.terminate_ok();
    assert!(
        peak_kb * 1024 < BOUND + FIXED_OVERHEAD,
        "peak RSS {peak_kb} kB over the bound ({BOUND} B) plus {FIXED_OVERHEAD} B"
    );

    // The good messages in envelopes, in order, byte for byte.
    let spliced: Vec<Vec<u8>> = read_all(&mut c, &names.processing)
        .iter()
        .flat_map(|e| batch_raw(e))
        .collect();
    assert!(spliced == good, "the good messages, in order");
    // Each huge message dead-lettered by reference, in order, its list holding its bytes.
    let records: Vec<serde_json::Value> = read_all(&mut c, &names.dead_letter)
        .iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect();
    assert_eq!(records.len(), big.len(), "{records:?}");
    for (record, message) in records.iter().zip(&big) {
        assert!(record.get("raw").is_none() && record.get("raw_b64").is_none());
        assert!(
            record["reason"].as_str().unwrap().contains("50000002"),
            "{record}"
        );
        let key = record["raw_key"].as_str().expect("raw_key");
        let kept = read_all(&mut c, key);
        assert!(
            kept.len() == 1 && &kept[0] == message,
            "exact bytes on {key}"
        );
    }
}
