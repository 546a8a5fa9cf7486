//! The daemon on a slow link: every byte between it and Redis goes through a proxy that adds
//! latency, while the messages are large. The lease keeper renews on a connection of its own,
//! so the lease must hold however long the mover's requests take.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Added delay each way: a round trip (RTT) takes at least 400 ms.
const ONE_WAY: Duration = Duration::from_millis(200);
/// Messages, each of about 1 MB.
const MESSAGES: u64 = 40;
const MESSAGE_BYTES: usize = 1_000_000;
/// How long the drain may take.
const DRAIN_LIMIT: Duration = Duration::from_secs(45);

/// The daemon's lease scripts, which it sends with EVALSHA (the commit goes with EVAL).
const SCRIPTS: [&str; 3] = [
    include_str!("../../src/redis/scripts/lease_acquire.lua"),
    include_str!("../../src/redis/scripts/lease_renew.lua"),
    include_str!("../../src/redis/scripts/lease_release.lua"),
];

/// 40 messages of 1 MB drain through a link with 200 ms added each way, exactly once and in
/// order, without the lease ever being lost.
///
/// The arithmetic. RTT ≥ 2 × 200 ms = 400 ms. With `REDIS_BATCH_SIZE=2` and
/// `REDIS_PREFETCH=4`, one request commits up to two envelopes of 2 MB (4 MB up) and reads
/// the next 4 messages (4 MB down): ≥ 0.4 s each, in practice 0.45–0.65 s with the transfer
/// and the work of Redis and the daemon on 8 MB. A read followed by the commit of what it
/// read is two requests: ≥ 0.8 s. The lease TTL is 1.5 s, renewed every third of it (0.5 s).
/// So one request alone takes about a third of the TTL, and one read plus one commit more
/// than half of it: renewing only between the mover's requests, on the mover's connection
/// (one more RTT queued behind the requests in flight, and none while they keep coming),
/// would let the lease run out in the middle of the backlog and have the commits refused,
/// with `lease lost` logged over and over. The keeper's renewal is one small request on its
/// own connection: sent every 0.5 s, answered ~0.4 s later, each extending the lease to 1.5 s
/// after it was sent; the lease only runs out if a renewal takes more than 1.5 − 0.5 = 1 s.
///
/// Time: at most 2 requests are in flight (`PIPELINE_DEPTH`), each committing at most 4
/// messages, so 40 messages need at least 40 / 8 = 5 RTT = 2 s, which the test checks to
/// show the delay is real; it takes about 3.5 s (the whole test about 5 s). The bound is 45 s.
/// `REDIS_COMMAND_TIMEOUT=3` covers one request (~0.5 s) with room to spare, and
/// `REDIS_MAX_MESSAGE_BYTES=2000000` lets the 1 MB messages through.
///
/// The daemon's scripts are loaded into Redis first, as a server that served an earlier
/// replica has them: with a cold script cache the first lease after start is lost (see
/// [`cold_script_cache_costs_the_first_lease`]), which is about start-up, not about renewal
/// under load.
#[test]
fn large_messages_through_a_slow_link_drain_exactly_once_without_losing_the_lease() {
    let run = slow_drain(true);
    let lost = run.daemon.events("lease lost");
    assert!(
        lost.is_empty(),
        "the lease was lost {} times on the slow link: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let failed = run.daemon.events("redis unavailable");
    assert!(
        failed.is_empty(),
        "the mover gave up on Redis {} times on the slow link: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        run.took >= Duration::from_secs(2),
        "drained in {:?}: faster than 5 round trips of 400 ms, so the delay did not apply",
        run.took
    );
}

/// The same drain against a fresh Redis (no script cached). Loading a script on first use
/// costs 3 RTT (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA) = 1.2 s of the 1.5 s TTL, so the
/// daemon loads its lease scripts when it connects, and the keeper opens its connection and
/// loads its script as soon as it is handed a lease, ahead of its first renewal.
#[test]
fn a_cold_script_cache_does_not_cost_the_first_lease() {
    let run = slow_drain(false);
    let lost = run.daemon.events("lease lost");
    assert!(
        lost.is_empty(),
        "the lease was lost {} times on the slow link: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// What one drain through the slow link left to check.
struct SlowDrain {
    daemon: Daemon,
    took: Duration,
}

/// Push the workload, start the daemon on the slow link, wait for the drain, stop the daemon
/// and audit the lists (exactly once, in order, complete).
fn slow_drain(warm_scripts: bool) -> SlowDrain {
    let server = RedisServer::start();
    let proxy = Proxy::to_port(server.port, ONE_WAY);
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(MESSAGES, 0, MESSAGE_BYTES);
    push_all(&mut c, &names.source, &w.messages);
    if warm_scripts {
        for lua in SCRIPTS {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(lua)
                .query(&mut c)
                .unwrap();
        }
    }

    let port = proxy.port_str();
    let started = Instant::now();
    let mut daemon = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_PORT", &port),
            ("REDIS_LEASE_TTL", "1.5"),
            ("REDIS_BATCH_SIZE", "2"),
            ("REDIS_PREFETCH", "4"),
            ("REDIS_MAX_MESSAGE_BYTES", "2000000"),
            ("REDIS_COMMAND_TIMEOUT", "3"),
            ("REDIS_PROCESSING_TIMEOUT", "1"),
        ],
    );
    let drained = wait_drained(&mut c, &names, DRAIN_LIMIT);
    let took = started.elapsed();
    // The mover's and the keeper's connections at least, all through the proxy.
    let through_proxy = proxy.connections();
    assert!(
        drained,
        "the source still holds {} of {MESSAGES} messages after {DRAIN_LIMIT:?}; lease lost {} \
         times; output:\n{}",
        llen(&mut c, &names.source),
        daemon.events("lease lost").len(),
        tail(&daemon.all_output())
    );
    daemon.terminate_ok();
    assert!(
        through_proxy >= 2,
        "only {through_proxy} connections through the proxy: the daemon is not on the slow link"
    );

    let out = outcome(&mut c, &names);
    assert_accounted(&out, &w, &names, true, true);
    let sizes: Vec<usize> = out.batches.iter().map(Vec::len).collect();
    eprintln!(
        "slow link: {MESSAGES} messages of {MESSAGE_BYTES} bytes drained in {took:?}, \
         envelope sizes {sizes:?}"
    );
    SlowDrain { daemon, took }
}

/// The last lines of a long output, for a failure message.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `/readyz` answers 200 on a link with 200 ms added each way (a round trip takes 400 ms),
/// and keeps answering 200: the probe's 750 ms bound is for one round trip. Opening the
/// probe's connection costs a round trip of its own (redis-rs' handshake), so a bound that
/// covers both (800 ms here) failed every probe from a fresh connection, and since a failed
/// probe drops its connection, readiness never came.
#[test]
fn readiness_holds_on_a_slow_link() {
    let server = RedisServer::start();
    let proxy = Proxy::to_port(server.port, ONE_WAY);
    let names = Names::new();
    let http = free_port();
    let port = proxy.port_str();
    let addr = format!("127.0.0.1:{http}");
    let mut daemon = start_daemon(
        &server,
        &names,
        &[("REDIS_PORT", &port), ("REDIS_HTTP_ADDR", &addr)],
    );
    let ready = wait_until(Duration::from_secs(10), || {
        try_http_get(http, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    assert!(
        ready,
        "/readyz never answered 200 on a 400 ms round trip within 10 s: {:?}\n{}",
        try_http_get(http, "/readyz"),
        tail(&daemon.all_output())
    );
    // Every probe of the next three seconds succeeds.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(http_get(http, "/readyz"), (200, "ready".to_string()));
    }
    daemon.terminate_ok();
}
