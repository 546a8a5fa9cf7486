//! Who may move a source: foreign writers are caught, the lease belongs to the source list
//! itself (two deployments that differ only in `REDIS_KEY_PREFIX` exclude each other), and a
//! rolling upgrade from the earlier release never lets an old and a new replica move one
//! source at the same time.

use std::time::Duration;

use crate::harness::*;

/// The earlier release's lease scripts, byte for byte, to act as one of its replicas.
const RELEASE_0_1_ACQUIRE: &str = include_str!("fixtures/release_0_1_lease_acquire.lua");
const RELEASE_0_1_RENEW: &str = include_str!("fixtures/release_0_1_lease_renew.lua");

/// A workload of `n` good events plus `extra` events with seqs from 1,000,000 on, which a
/// foreign writer RPUSHes.
fn with_extras(n: u64, extra: u64) -> (Workload, Vec<Vec<u8>>) {
    let mut w = workload(n, 0, 120);
    let mut extras = Vec::new();
    for seq in 1_000_000..1_000_000 + extra {
        let m = event(seq, 120);
        w.good.push(seq);
        w.good_bytes.insert(seq, m.clone());
        extras.push(m);
    }
    (w, extras)
}

#[test]
fn a_producer_that_rpushes_is_caught_and_nothing_is_lost_or_duplicated() {
    let server = RedisServer::start();
    let names = Names::new();
    let (w, extras) = with_extras(40_000, 300);
    let mut c = server.conn();
    push_all(&mut c, &names.source, &w.messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "50"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    // RPUSH onto the tail while the daemon drains it.
    for m in &extras {
        let _: () = redis::cmd("RPUSH")
            .arg(&names.source)
            .arg(m)
            .query(&mut c)
            .unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(60)),
        "not drained"
    );
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, false, true);
    let changed = d.events("source changed under the daemon");
    assert!(
        !changed.is_empty(),
        "no error line for the foreign writer:\n{}",
        d.all_output()
    );
    assert_eq!(changed[0]["level"], "ERROR", "{}", changed[0]);
    assert!(
        changed[0]["likely_cause"]
            .as_str()
            .is_some_and(|c| c.contains("RPUSH")),
        "{}",
        changed[0]
    );
    // The request still in flight behind a refused commit is forgotten, and its replies are
    // read and thrown away: no later request takes them for its own (which showed as
    // "unexpected reply" protocol errors, found by a hostile review).
    let misread: Vec<String> = problem_lines(&d)
        .into_iter()
        .filter(|l| l.contains("\"protocol\"") || l.contains("unexpected reply"))
        .collect();
    assert!(misread.is_empty(), "{}", misread.join("\n"));
}

#[test]
fn two_deployments_with_different_prefixes_never_both_move_a_source() {
    let server = RedisServer::start();
    let names = Names::new();
    let w = workload(30_000, 97, 200);
    let mut c = server.conn();
    let mut blue = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_KEY_PREFIX", "blue"),
            ("REDIS_CONSUMER_NAME", "blue-1"),
            ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    assert!(blue.wait_for_line("lease acquired", Duration::from_secs(10)));
    let mut green = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_KEY_PREFIX", "green"),
            ("REDIS_CONSUMER_NAME", "green-1"),
            ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    assert!(
        green.wait_for_line("standing by", Duration::from_secs(10)),
        "green did not stand by:\n{}",
        green.all_output()
    );
    let standing = green.events("standing by");
    assert_eq!(standing[0]["holder"], "blue-1", "{}", standing[0]);
    push_all(&mut c, &names.source, &w.messages);
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(60)),
        "not drained: {} left\nblue:\n{}\ngreen:\n{}",
        llen(&mut c, &names.source),
        blue.all_output(),
        green.all_output()
    );
    // One mover at a time: order holds as with a single daemon, and green moved nothing.
    assert!(green.events("lease acquired").is_empty());
    blue.terminate_ok();
    green.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}

/// Act as a replica of the earlier release: take the legacy lease key with its script.
fn release_0_1_acquire(c: &mut redis::Connection, key: &str, consumer: &str, value: &str) -> i64 {
    redis::Script::new(RELEASE_0_1_ACQUIRE)
        .key(key)
        .arg(consumer)
        .arg(value)
        .arg(3000)
        .invoke(c)
        .unwrap()
}

#[test]
fn a_replica_of_the_earlier_release_keeps_a_new_one_off_the_source() {
    let server = RedisServer::start();
    let names = Names::new();
    let w = workload(500, 0, 100);
    let mut c = server.conn();
    push_all(&mut c, &names.source, &w.messages);
    let legacy = names.keys().legacy_lease();
    let old_value = "old-1/00000000000000aa";
    assert_eq!(release_0_1_acquire(&mut c, &legacy, "old-1", old_value), 1);
    // The old replica keeps renewing, as its release does.
    let url = server.url();
    let key = legacy.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = connect(&url);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let kept: i64 = redis::Script::new(RELEASE_0_1_RENEW)
                    .key(&key)
                    .arg(old_value)
                    .arg(3000)
                    .invoke(&mut c)
                    .unwrap();
                assert_eq!(kept, 1);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_CONSUMER_NAME", "new-1"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    assert!(
        d.wait_for_line("standing by", Duration::from_secs(10)),
        "{}",
        d.all_output()
    );
    assert_eq!(d.events("standing by")[0]["holder"], "old-1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(llen(&mut c, &names.source), 500, "the new replica moved");
    assert_eq!(llen(&mut c, &names.processing), 0);
    // The old replica stops and its key lapses: the new one takes over and drains.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    renewer.join().unwrap();
    let _: () = redis::cmd("DEL").arg(&legacy).query(&mut c).unwrap();
    assert!(wait_drained(&mut c, &names, Duration::from_secs(20)));
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}

#[test]
fn a_new_replica_keeps_one_of_the_earlier_release_off_the_source() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut d = start_daemon(&server, &names, &[("REDIS_CONSUMER_NAME", "new-2")]);
    assert!(d.wait_for_line("lease acquired", Duration::from_secs(10)));
    let legacy = names.keys().legacy_lease();
    // The earlier release's acquisition on the only key it knows is refused, again and again.
    for _ in 0..5 {
        let won = release_0_1_acquire(&mut c, &legacy, "old-2", "old-2/00000000000000bb");
        assert_eq!(won, 0, "the earlier release took the source");
        std::thread::sleep(Duration::from_millis(400));
    }
    let value: String = redis::cmd("GET").arg(&legacy).query(&mut c).unwrap();
    assert!(value.starts_with("new-2/"), "{value}");
    d.terminate_ok();
    // A graceful stop hands both keys back.
    let left: Option<String> = redis::cmd("GET").arg(&legacy).query(&mut c).unwrap();
    assert_eq!(left, None);
}
