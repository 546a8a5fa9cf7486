//! `REDIS_MIN_REPLICAS_ACK`: the daemon runs `WAIT` after each commit and reports the commits
//! no replica acknowledged in time, without undoing them or losing anything.

use std::time::Duration;

use crate::harness::*;

/// With a replica in sync, commits are acknowledged and none is reported; with the replica
/// stopped (SIGSTOP), commits go on (each waits `REDIS_MIN_REPLICAS_TIMEOUT`), and are logged
/// once (`commit not replicated`) and counted every time; once it resumes, `commits
/// replicated again` is logged. Every message is moved exactly once throughout.
#[test]
fn commits_no_replica_acknowledged_are_reported_and_kept() {
    let primary = RedisServer::start();
    let port = primary.port.to_string();
    let replica = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let mut c = primary.conn();
    let names = Names::new();
    let http = free_port();
    let http_addr = format!("127.0.0.1:{http}");
    let mut d = start_daemon(
        &primary,
        &names,
        &[
            ("REDIS_MIN_REPLICAS_ACK", "1"),
            ("REDIS_MIN_REPLICAS_TIMEOUT", "0.05"),
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.05"),
            ("REDIS_HTTP_ADDR", &http_addr),
        ],
    );
    let unreplicated = || {
        let (_, body) = http_get(http, "/metrics");
        metric(&body, "batch_processor_commits_unreplicated_total")
    };
    let w = workload(300, 0, 100);
    let (first, rest) = w.messages.split_at(100);
    let (second, third) = rest.split_at(100);

    // The replica is in sync (WAIT needs it to be connected).
    assert!(wait_until(Duration::from_secs(10), || {
        redis::cmd("WAIT").arg(1).arg(100).query::<i64>(&mut c) == Ok(1)
    }));
    push_all(&mut c, &names.source, first);
    assert!(wait_drained(&mut c, &names, Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(5), || unreplicated() == Some(0.0)));
    assert!(d.events("commit not replicated").is_empty());

    replica.pause();
    push_all(&mut c, &names.source, second);
    assert!(
        wait_drained(&mut c, &names, Duration::from_secs(20)),
        "commits stopped while the replica was down:\n{}",
        d.all_output()
    );
    assert!(
        wait_until(Duration::from_secs(5), || unreplicated() >= Some(1.0)),
        "no unreplicated commit counted"
    );
    assert_eq!(
        d.events("commit not replicated").len(),
        1,
        "{}",
        d.all_output()
    );

    replica.resume();
    assert!(wait_until(Duration::from_secs(10), || {
        redis::cmd("WAIT").arg(1).arg(100).query::<i64>(&mut c) == Ok(1)
    }));
    push_all(&mut c, &names.source, third);
    assert!(wait_drained(&mut c, &names, Duration::from_secs(10)));
    assert!(
        wait_until(Duration::from_secs(5), || !d
            .events("commits replicated again")
            .is_empty()),
        "{}",
        d.all_output()
    );
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}

/// Without `+wait` in the daemon's ACL, the failure names it, and the messages the commits
/// moved are not moved twice.
#[test]
fn a_refused_wait_is_reported_and_nothing_is_moved_twice() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    acl_setuser(
        &mut c,
        "nowait",
        &["on", ">nowait-pw-12", "~*", "+@all", "-wait"],
    );
    let w = workload(50, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_USERNAME", "nowait"),
            ("REDIS_PASSWORD", "nowait-pw-12"),
            ("REDIS_MIN_REPLICAS_ACK", "1"),
            ("REDIS_BATCH_SIZE", "10"),
        ],
    );
    let named = |d: &Daemon| {
        problem_lines(d)
            .iter()
            .any(|l| l.contains("no_perm") && l.contains("WAIT") && l.contains("'wait'"))
    };
    assert!(
        wait_until(Duration::from_secs(10), || named(&d)),
        "{}",
        d.all_output()
    );
    assert!(wait_drained(&mut c, &names, Duration::from_secs(10)));
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, true);
}
