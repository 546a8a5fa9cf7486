//! A mover whose commits keep failing while a backlog waits is stuck, not merely slow:
//! `/readyz` turns 503 naming the cause, `mover stuck` is logged once with the cause and the
//! `mover_stuck` gauge is 1; once commits succeed again it recovers by itself. Standing by
//! behind another replica never counts as stuck.

use std::time::Duration;

use crate::harness::*;

#[test]
fn failing_commits_with_a_backlog_make_the_mover_stuck_until_they_succeed() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(200, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    // The processing list is a string: every commit is refused (WRONGTYPE).
    let _: () = redis::cmd("SET")
        .arg(&names.processing)
        .arg("not a list")
        .query(&mut c)
        .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_HTTP_ADDR", &addr),
            ("REDIS_STUCK_AFTER", "2"),
            ("REDIS_RETRY_MAX_DELAY", "0.3"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    assert!(d.wait_for_line("http listening", Duration::from_secs(10)));
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (status, body) = http_get(port, "/readyz");
            status == 503 && body.contains("mover stuck")
        }),
        "readiness never reported the stuck mover:\n{}",
        d.all_output()
    );
    let (_, body) = http_get(port, "/readyz");
    assert!(body.contains("WRONGTYPE"), "{body}");
    let (_, metrics) = http_get(port, "/metrics");
    assert_eq!(metric(&metrics, "batch_processor_mover_stuck"), Some(1.0));
    let stuck = d.events("mover stuck");
    assert_eq!(stuck.len(), 1, "logged once per episode");
    assert_eq!(stuck[0]["level"], "ERROR");
    assert!(stuck[0]["failing_for_ms"].as_u64().unwrap() >= 2000);
    // The operator fixes the key: commits succeed, readiness comes back.
    let _: () = redis::cmd("DEL")
        .arg(&names.processing)
        .query(&mut c)
        .unwrap();
    assert!(wait_drained(&mut c, &names, Duration::from_secs(15)));
    assert!(
        wait_until(Duration::from_secs(5), || http_get(port, "/readyz").0
            == 200),
        "readiness did not come back"
    );
    let (_, metrics) = http_get(port, "/metrics");
    assert_eq!(metric(&metrics, "batch_processor_mover_stuck"), Some(0.0));
    assert_eq!(
        metric(&metrics, "batch_processor_mover_stuck_episodes_total"),
        Some(1.0)
    );
    assert_eq!(d.events("mover recovered").len(), 1);
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}

#[test]
fn a_standby_replica_is_never_stuck() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    push_all(&mut c, &names.source, &workload(50, 0, 100).messages);
    // Another holder keeps the lease for the whole test.
    for key in [names.keys().lease(), names.keys().legacy_lease()] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("other/00000000000000cc.0")
            .arg("PX")
            .arg(60_000)
            .query(&mut c)
            .unwrap();
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_daemon(
        &server,
        &names,
        &[("REDIS_HTTP_ADDR", &addr), ("REDIS_STUCK_AFTER", "1")],
    );
    assert!(d.wait_for_line("standing by", Duration::from_secs(10)));
    assert!(d.wait_for_line("http listening", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = http_get(port, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready"));
    assert!(d.events("mover stuck").is_empty());
    assert_eq!(llen(&mut c, &names.source), 50);
    d.terminate_ok();
}

/// A mover whose every commit is refused (here NOPERM on its LPUSH) with fewer than
/// `REDIS_BATCH_SIZE` messages waiting alternates a purposeful wait for the batch's deadline
/// with a failed commit; the waits do not reset the stuck clock, so it is reported stuck.
#[test]
fn failing_commits_alternating_with_a_partial_batch_wait_are_stuck() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(3, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    // Every commit is refused (NOPERM on its LPUSH); the probe's LLENs still work, so
    // readiness depends on the stuck verdict alone.
    acl_setuser(
        &mut c,
        "bp",
        &["on", ">bp-pw", "~*", "&*", "+@all", "-lpush"],
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_USERNAME", "bp"),
            ("REDIS_PASSWORD", "bp-pw"),
            ("REDIS_HTTP_ADDR", &addr),
            ("REDIS_STUCK_AFTER", "2"),
            ("REDIS_RETRY_MAX_DELAY", "0.3"),
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.3"),
        ],
    );
    assert!(d.wait_for_line("http listening", Duration::from_secs(10)));
    let reported = wait_until(Duration::from_secs(15), || {
        let (status, body) = http_get(port, "/readyz");
        status == 503 && body.contains("mover stuck")
    });
    let refused = d.events("redis unavailable").len();
    let (status, body) = http_get(port, "/readyz");
    let (_, metrics) = http_get(port, "/metrics");
    let gauge = metric(&metrics, "batch_processor_mover_stuck");
    d.terminate_ok();
    assert!(
        reported,
        "every commit refused for 15 s ({refused} `redis unavailable` events, EXECABORT), 3 messages \
         waiting, yet never stuck: readyz {status} {body:?}, mover_stuck {gauge:?}"
    );
}
