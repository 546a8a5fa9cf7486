//! Regressions found by a hostile review of flow control: the slowest rate allowed keeps the
//! daemon healthy, shutdown stays prompt while paused on a stalled link, and a standby replica
//! never reports a pause it no longer has.

use std::time::Duration;

use crate::harness::*;

/// The slowest rate allowed (one envelope in about 11.6 days): after the first envelope the
/// mover waits for the next token without overflowing anything. (Slower rates are refused as
/// settings.)
#[test]
fn a_tiny_rate_keeps_the_daemon_healthy() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(20, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "2"),
            ("REDIS_MAX_BATCHES_PER_SECOND", "0.000001"),
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let out = d.all_output();
    assert_eq!(llen(&mut c, &names.processing), 1, "{out}");
    assert!(
        !out.contains("panicked"),
        "the mover panicked with an accepted rate: {out}"
    );
    d.terminate_ok();
}

/// Start a daemon through a proxy with `messages` waiting and `settings`, wait for
/// `ready_line`, then make the link stop answering (packets vanish, no reset) and check that
/// SIGTERM still exits 0 within the grace period.
fn shutdown_on_a_stalled_link(messages: u64, settings: &[(&str, &str)], ready_line: &str) {
    let server = RedisServer::start();
    let proxy = Proxy::to_port(server.port, Duration::ZERO);
    let names = Names::new();
    let mut c = server.conn();
    push_all(&mut c, &names.source, &workload(messages, 0, 100).messages);
    let port = proxy.port_str();
    let mut env = vec![
        ("REDIS_PORT", port.as_str()),
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_COMMAND_TIMEOUT", "30"),
        ("REDIS_LEASE_TTL", "60"),
    ];
    env.extend_from_slice(settings);
    let mut d = start_daemon(&server, &names, &env);
    assert!(
        d.wait_for_line(ready_line, Duration::from_secs(10)),
        "{}",
        d.all_output()
    );
    std::thread::sleep(Duration::from_millis(500));
    proxy.blackhole();
    // Whatever the mover sends next is never answered.
    std::thread::sleep(Duration::from_millis(600));
    d.terminate_ok();
}

/// Shutdown while paused on a link that stops answering: the pause's `LLEN` (every 250 ms)
/// races the shutdown signal, so SIGTERM does not wait for `REDIS_COMMAND_TIMEOUT`.
#[test]
fn shutdown_is_prompt_while_paused_on_a_stalled_link() {
    shutdown_on_a_stalled_link(
        1000,
        &[("REDIS_MAX_PROCESSING_QUEUE_LENGTH", "20")],
        "\"paused\"",
    );
}

/// Control for the test above: the same stalled link without back-pressure (the mover waits
/// for a partial batch's deadline) exits promptly too.
#[test]
fn shutdown_is_prompt_on_a_stalled_link_without_back_pressure() {
    shutdown_on_a_stalled_link(5, &[("REDIS_PROCESSING_TIMEOUT", "100")], "lease acquired");
}

/// A paused holder that loses the lease leaves the paused state: `batch_processor_paused` (and
/// its heartbeat's `paused`) is 0 while it stands by.
#[test]
fn a_standby_replica_does_not_report_paused() {
    let server = RedisServer::start();
    let proxy = Proxy::to_port(server.port, Duration::ZERO);
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(1000, 0, 100);
    push_all(&mut c, &names.source, &w.messages);
    let http = free_port();
    let addr = format!("127.0.0.1:{http}");
    let port = proxy.port_str();
    let common = [
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_MAX_PROCESSING_QUEUE_LENGTH", "20"),
        ("REDIS_LEASE_TTL", "1"),
    ];
    let mut a_settings = common.to_vec();
    a_settings.extend([
        ("REDIS_PORT", port.as_str()),
        ("REDIS_HTTP_ADDR", addr.as_str()),
        ("REDIS_CONSUMER_NAME", "rv3-a"),
    ]);
    let mut a = start_daemon(&server, &names, &a_settings);
    assert!(a.wait_for_line("\"paused\"", Duration::from_secs(10)));
    // A loses its link long enough for its lease to expire; B takes over.
    proxy.blackhole();
    let mut b_settings = common.to_vec();
    b_settings.push(("REDIS_CONSUMER_NAME", "rv3-b"));
    let mut b = start_daemon(&server, &names, &b_settings);
    assert!(b.wait_for_line("lease acquired", Duration::from_secs(10)));
    proxy.cut();
    proxy.heal();
    // The transformer catches up: the list is empty, B flows.
    let _: () = redis::cmd("DEL")
        .arg(&names.processing)
        .query(&mut c)
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        let (_, m) = http_get(http, "/metrics");
        metric(&m, "batch_processor_lease_held") == Some(0.0)
    }));
    std::thread::sleep(Duration::from_secs(3));
    let (_, m) = http_get(http, "/metrics");
    assert_eq!(
        metric(&m, "batch_processor_paused"),
        Some(0.0),
        "a standby replica still reports paused, 3 s after the takeover (B resumed {} times)",
        b.events("resumed").len()
    );
    a.terminate_ok();
    b.terminate_ok();
}
