//! Network faults between the daemon and Redis: 20% packet loss, 200 ms of added delay, a
//! 10-second silent partition, and the link cut while a commit is in flight (its reply lost,
//! then a reset, or silence past the command timeout). Each test runs `redis-server` and
//! the daemon binary inside a private network namespace of its own, where `iptables` on the
//! namespace's loopback makes the fault (a delaying proxy makes the delay); the test pushes
//! and audits through Redis's Unix socket, which no fault touches. Every case ends exactly
//! once and in push order, and the daemon resumes by itself within a bound after the fault.
//!
//! The daemon runs with the product's defaults for every timeout (command and connect 5 s,
//! lease TTL 5 s, retries from 0.1 s up to 10 s), so the times printed are what a
//! deployment sees. Without root (no namespaces) the tests print `SKIPPED: <reason>`.

use std::time::{Duration, Instant};

use crate::harness::*;

/// The daemon's HTTP port inside the namespace (every port is free there).
const HTTP: u16 = 9464;
/// How long each fault lasts.
const FAULT_FOR: Duration = Duration::from_secs(10);
/// Resumed means a new envelope, within this after the fault ends. The expected time is
/// far less; each test states its own.
const RESUME_LIMIT: Duration = Duration::from_secs(25);
/// Once resumed, the source must be empty within this.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// One test's namespace, Redis, daemon and workload.
struct Rig {
    ns: Netns,
    redis: NsRedis,
    names: Names,
    w: Workload,
    daemon: Daemon,
    /// Messages of `w` pushed so far.
    pushed: usize,
    /// The delaying proxy the daemon goes through, if any.
    proxy: Option<Proxy>,
}

impl Rig {
    /// The namespace, Redis inside it with the first `backlog` messages of `w`, and the
    /// daemon (through a proxy when `proxied`), moving. `None` when namespaces are refused.
    fn start(
        test: &str,
        w: Workload,
        backlog: usize,
        proxied: bool,
        extra: &[(&str, &str)],
    ) -> Option<Rig> {
        let ns = netns_or_skip(test)?;
        let redis = NsRedis::start(&ns);
        let names = Names::new();
        let mut c = redis.conn();
        push_all(&mut c, &names.source, &w.messages[..backlog]);
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], NS_REDIS_PORT));
        let proxy = proxied.then(|| Proxy::start_in(&ns, target, Duration::ZERO));
        let port = proxy.as_ref().map_or(NS_REDIS_PORT, |p| p.port);
        let mut env = daemon_env_at(port, &names);
        let http = format!("127.0.0.1:{HTTP}");
        let defaults = [
            ("REDIS_HTTP_ADDR", http.as_str()),
            ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
            // The harness shortens this for other tests; the product's default here.
            ("REDIS_RETRY_MAX_DELAY", "10"),
        ];
        for (k, v) in defaults.iter().chain(extra) {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let daemon = spawn_command(ns.wrap(&binary_command(&env, &["run"])));
        let rig = Rig {
            ns,
            redis,
            names,
            w,
            daemon,
            pushed: backlog,
            proxy,
        };
        let moving = wait_until(Duration::from_secs(10), || {
            llen(&mut c, &rig.names.processing) > 0
        });
        assert!(
            moving,
            "the daemon never started moving:\n{}",
            tail(&rig.daemon)
        );
        Some(rig)
    }

    fn conn(&self) -> redis::Connection {
        self.redis.conn()
    }

    /// Push the next `n` messages from a thread, 35 every 50 ms (about 700 a second).
    fn produce(&mut self, n: usize) -> std::thread::JoinHandle<()> {
        let part = self.w.messages[self.pushed..self.pushed + n].to_vec();
        self.pushed += n;
        spawn_producer(
            self.redis.url(),
            self.names.source.clone(),
            part,
            35,
            Duration::from_millis(50),
        )
    }

    /// Push the next `n` messages at once.
    fn push(&mut self, n: usize) {
        let part = &self.w.messages[self.pushed..self.pushed + n];
        push_all(&mut self.conn(), &self.names.source, part);
        self.pushed += n;
    }

    /// `/readyz`'s status, asked from inside the namespace (`None`: no answer).
    fn ready(&self) -> Option<u16> {
        self.ns
            .run(|| try_http_get(HTTP, "/readyz"))
            .map(|(status, _)| status)
    }

    /// The fault has just ended: push the rest of the workload, and return how long the
    /// daemon took to send a new envelope (it must within [`RESUME_LIMIT`]).
    fn resumed(&mut self, case: &str) -> Duration {
        let healed = Instant::now();
        let mut c = self.conn();
        let before = llen(&mut c, &self.names.processing);
        push_all(&mut c, &self.names.source, &self.w.messages[self.pushed..]);
        self.pushed = self.w.messages.len();
        let resumed = wait_until(RESUME_LIMIT, || {
            llen(&mut c, &self.names.processing) > before
        });
        let took = healed.elapsed();
        assert!(
            resumed,
            "{case}: no envelope within {RESUME_LIMIT:?} after the fault ended:\n{}",
            tail(&self.daemon)
        );
        took
    }

    /// Wait for the drain, stop the daemon and audit: exactly once, in push order (dead
    /// letters too), nothing left.
    fn finish(mut self, case: &str) {
        let mut c = self.conn();
        let drained = wait_drained(&mut c, &self.names, DRAIN_LIMIT);
        assert!(
            drained,
            "{case}: {} messages still in the source {DRAIN_LIMIT:?} after resuming:\n{}",
            llen(&mut c, &self.names.source),
            tail(&self.daemon)
        );
        assert!(
            self.daemon.is_running(),
            "{case}: the daemon exited:\n{}",
            tail(&self.daemon)
        );
        self.daemon.terminate_ok();
        let out = outcome(&mut c, &self.names);
        assert_accounted(&out, &self.w, &self.names, true, true);
        let dead: Vec<&[u8]> = out.dead.iter().map(|d| &d.original[..]).collect();
        let bad: Vec<&[u8]> = self.w.bad.iter().map(|b| &b[..]).collect();
        assert!(dead == bad, "{case}: dead letters out of push order");
        eprintln!(
            "{case}: {} envelopes, {} dead letters, {} Redis failures logged",
            out.envelopes.len(),
            out.dead.len(),
            self.daemon.events("redis unavailable").len()
        );
    }
}

/// The last lines of the daemon's output, for a failure message.
fn tail(d: &Daemon) -> String {
    let all = d.all_output();
    let lines: Vec<&str> = all.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// 10,000 messages of about 200 bytes, every 50th bad.
fn messages() -> Workload {
    workload(10_000, 50, 200)
}

/// Backlog before the daemon starts, live during the fault, and the rest after it.
const BACKLOG: usize = 2_000;
const LIVE: usize = 7_000;

/// With 20% of the packets between the daemon and Redis dropped at random (each way, for
/// about 10 s: a backlog of 1,900, then a producer pushing about 700 messages a second), the
/// daemon keeps moving: TCP
/// retransmits what is lost (after at least 200 ms each time), so requests slow down but
/// rarely outlast the 5 s command timeout; when one does, the mover starts a new session
/// and reads the tail again. The source is drained while the loss goes on, and everything
/// ends exactly once.
#[test]
fn twenty_percent_packet_loss_drains_exactly_once() {
    let case = "20% packet loss";
    let Some(mut rig) = Rig::start("netfaults::packet_loss", messages(), 100, false, &[]) else {
        return;
    };
    rig.ns.lose(NS_REDIS_PORT, 20);
    let lossy = Instant::now();
    // A backlog under loss: reads and commits of 1,000 messages (200 KB), several segments.
    rig.push(BACKLOG - 100);
    let producer = rig.produce(LIVE);
    // Readiness under loss, for the record (a probe that loses a SYN misses its 750 ms).
    let (mut ready, mut asked) = (0, 0);
    while !producer.is_finished() {
        asked += 1;
        ready += usize::from(rig.ready() == Some(200));
        std::thread::sleep(Duration::from_millis(250));
    }
    producer.join().unwrap();
    let mut c = rig.conn();
    let drained = wait_drained(&mut c, &rig.names, DRAIN_LIMIT);
    assert!(
        drained,
        "{case}: not drained under loss:\n{}",
        tail(&rig.daemon)
    );
    let under_loss = lossy.elapsed();
    let dropped = rig.ns.dropped();
    assert!(
        dropped > 0,
        "{case}: no packet was dropped: the fault is not real"
    );
    rig.ns.heal();
    let resumed = rig.resumed(case);
    eprintln!(
        "{case}: {} messages drained under loss in {under_loss:?} ({dropped} packets \
         dropped, /readyz 200 in {ready} of {asked} samples); after the loss, a new envelope \
         in {resumed:?}",
        BACKLOG - 100 + LIVE
    );
    rig.finish(case);
}

/// 200 ms added each way (every round trip takes at least 400 ms) for 10 s while a producer
/// pushes: the daemon keeps moving (two requests in flight of up to 1,000 messages each),
/// `/readyz` stays 200 (the probe allows 750 ms per round trip, and opening its connection
/// is bounded apart), and when the delay ends the flow goes on at once.
#[test]
fn two_hundred_ms_of_delay_keeps_moving_and_ready() {
    let case = "200 ms delay";
    let Some(mut rig) = Rig::start("netfaults::delay", messages(), BACKLOG, true, &[]) else {
        return;
    };
    let proxy = rig.proxy.as_ref().unwrap();
    // The mover's, the keeper's and the probe's connections at least.
    assert!(
        proxy.connections() >= 2,
        "{case}: the daemon is not on the proxy"
    );
    proxy.set_delay(Duration::from_millis(200));
    let delayed = Instant::now();
    let producer = rig.produce(LIVE);
    // A fresh probe connection under the delay: 503 at first is fine, 200 must come.
    let ready = wait_until(FAULT_FOR, || rig.ready() == Some(200));
    assert!(
        ready,
        "{case}: /readyz not 200 under the delay: {:?}\n{}",
        rig.ready(),
        tail(&rig.daemon)
    );
    producer.join().unwrap();
    let mut c = rig.conn();
    let drained = wait_drained(&mut c, &rig.names, DRAIN_LIMIT);
    assert!(
        drained,
        "{case}: not drained under the delay:\n{}",
        tail(&rig.daemon)
    );
    assert_eq!(rig.ready(), Some(200), "{case}: /readyz after the drain");
    let under_delay = delayed.elapsed();
    rig.proxy.as_ref().unwrap().set_delay(Duration::ZERO);
    let resumed = rig.resumed(case);
    eprintln!("{case}: {LIVE} live messages drained under the delay in {under_delay:?}; after it, a new envelope in {resumed:?}");
    rig.finish(case);
}

/// Every packet between the daemon and Redis dropped for 10 s, silently: no reset, no
/// error, while a producer keeps pushing. Nothing moves meanwhile, `/readyz` turns 503 within
/// 2 s, and after the heal the daemon resumes by itself.
///
/// Expected: the mover's request times out after the 5 s command timeout; it then tries to
/// connect, each attempt lasting up to the 5 s connect timeout (SYNs sent at 0, 1 and 3 s
/// into it), with a backoff of 0.1 s doubling in between (two or three attempts in 10 s).
/// After the heal, the attempt in progress succeeds at its next SYN (within 2 s), or the
/// next one does after a backoff well under a second; the lease, expired meanwhile or still
/// this replica's own, is taken at once. So a new envelope within about 3 s; the bound
/// asserted is [`RESUME_LIMIT`].
#[test]
fn a_ten_second_silent_partition_resumes_by_itself() {
    let case = "10 s partition";
    let Some(mut rig) = Rig::start("netfaults::partition", messages(), BACKLOG, false, &[]) else {
        return;
    };
    assert!(
        wait_until(Duration::from_secs(5), || rig.ready() == Some(200)),
        "{case}: never ready before the fault"
    );
    let mut c = rig.conn();
    rig.ns.partition(NS_REDIS_PORT);
    let cut_at = Instant::now();
    let producer = rig.produce(LIVE);
    std::thread::sleep(Duration::from_millis(500));
    // Anything in flight at the cut has landed or never will.
    let frozen = llen(&mut c, &rig.names.processing);
    let unready = wait_until(Duration::from_secs(2), || rig.ready() == Some(503));
    assert!(
        unready,
        "{case}: /readyz did not turn 503 within 2 s of the partition"
    );
    let left = FAULT_FOR.saturating_sub(cut_at.elapsed());
    std::thread::sleep(left);
    // The producer pushes for about 10 s too; the partition lasts until it is done.
    producer.join().unwrap();
    assert_eq!(
        llen(&mut c, &rig.names.processing),
        frozen,
        "{case}: envelopes arrived through a partition: the fault is not real"
    );
    let partitioned = cut_at.elapsed();
    rig.ns.heal();
    let healed = Instant::now();
    let resumed = rig.resumed(case);
    let ready = wait_until(Duration::from_secs(5), || rig.ready() == Some(200));
    assert!(
        ready,
        "{case}: /readyz not back to 200 within 5 s after a new envelope"
    );
    eprintln!(
        "{case}: partitioned for {partitioned:?}; a new envelope {resumed:?} after the heal, \
         ready after {:?}",
        healed.elapsed()
    );
    rig.finish(case);
}

/// How the link is cut once a commit has landed without its reply.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Every packet to Redis answered with a reset, for 1 s.
    Reset,
    /// Every packet dropped silently, for 7 s: past the 5 s command timeout.
    Silent,
}

/// The link cut while a commit is in flight. The daemon commits at a steady 20 envelopes a
/// second (`REDIS_MAX_BATCHES_PER_SECOND`), so it always has a commit to send. Redis's
/// packets are dropped first, so the next commit reaches Redis and runs, and its reply never
/// comes back: the test waits until it sees that commit's envelopes on the processing list.
/// Then the link is cut for good, by `cut`, and healed later. The daemon cannot know that
/// the commit landed: it drops its copies, takes the lease again with a new token and reads
/// the tail again, which no longer holds what the commit took. So nothing is sent twice.
fn commit_in_flight_then(test: &str, case: &str, cut: Cut) {
    let w = workload(1_500, 50, 200);
    let settings = [
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_MAX_BATCHES_PER_SECOND", "20"),
    ];
    let Some(mut rig) = Rig::start(test, w, 1_500, false, &settings) else {
        return;
    };
    let mut c = rig.conn();
    rig.ns.drop_replies(NS_REDIS_PORT);
    let before = llen(&mut c, &rig.names.processing);
    let landed = wait_until(Duration::from_secs(2), || {
        llen(&mut c, &rig.names.processing) > before
    });
    assert!(
        landed,
        "{case}: no commit reached Redis after its replies were cut"
    );
    let (hold, expected) = match cut {
        Cut::Reset => {
            rig.ns.reset(NS_REDIS_PORT);
            (Duration::from_secs(1), "io")
        }
        Cut::Silent => {
            rig.ns.partition(NS_REDIS_PORT);
            (Duration::from_secs(7), "timeout")
        }
    };
    std::thread::sleep(hold);
    let failed = rig.daemon.events("redis unavailable");
    assert!(
        failed.iter().any(|e| e["error_kind"] == expected),
        "{case}: the mover saw no {expected} failure while the link was cut: {failed:?}"
    );
    rig.ns.heal();
    let resumed = rig.resumed(case);
    eprintln!("{case}: a new envelope {resumed:?} after the heal");
    rig.finish(case);
}

/// The commit's reply lost, then every packet answered with a reset for 1 s. Expected: the
/// mover's connection fails at its next retransmission (a few hundred ms), reconnecting is
/// refused at once with a backoff doubling from 0.1 s, and after the heal a new envelope
/// comes within about a second.
#[test]
fn link_reset_while_a_commit_is_in_flight_ends_exactly_once() {
    commit_in_flight_then(
        "netfaults::cut_reset",
        "cut with reset mid-commit",
        Cut::Reset,
    );
}

/// The commit's reply lost, then silence for 7 s. Expected: the mover gives up on the reply
/// after the 5 s command timeout, its next connection attempt waits for SYNs (sent 0, 1 and
/// 3 s into it) until the heal, and a new envelope comes within about 2 s of it.
#[test]
fn link_silent_while_a_commit_is_in_flight_ends_exactly_once() {
    commit_in_flight_then(
        "netfaults::cut_silent",
        "silent cut mid-commit",
        Cut::Silent,
    );
}

/// SIGTERM one second into a silent partition, with commits in flight: the daemon still
/// exits 0 within its shutdown grace (every wait races the shutdown; replies that never come
/// hold nothing up, and releasing the lease is given up after its own bound), and what it
/// had not moved is still in the source, in order.
#[test]
fn sigterm_during_a_partition_exits_within_the_grace() {
    let case = "SIGTERM during a partition";
    let w = workload(1_500, 50, 200);
    let settings = [
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_MAX_BATCHES_PER_SECOND", "20"),
    ];
    let Some(mut rig) = Rig::start("netfaults::sigterm", w, 1_500, false, &settings) else {
        return;
    };
    rig.ns.partition(NS_REDIS_PORT);
    std::thread::sleep(Duration::from_secs(1));
    rig.daemon.terminate_ok();
    rig.ns.heal();
    let mut c = rig.conn();
    let out = outcome(&mut c, &rig.names);
    assert!(
        !out.source.is_empty(),
        "{case}: the source was drained before the partition"
    );
    assert_accounted(&out, &rig.w, &rig.names, true, false);
}
