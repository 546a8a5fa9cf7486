//! Chaos: one daemon drains tens of thousands of messages (some bad) while producers keep
//! pushing, and faults land at random moments: its connections killed, its scripts flushed,
//! Redis out of memory, Redis stalled past the command timeout, the lease deleted or stolen,
//! the daemon stopped past its lease TTL, the daemon killed and restarted, Redis killed and
//! restarted from its AOF. Once the faults stop, everything must be drained within a time
//! limit, exactly once and in push order (only one daemon is alive at any time).
//!
//! The seed is printed at the start; `CHAOS_SEED=<seed>` replays the same sequence of
//! faults, details and producer chunks (the moments they hit the daemon still vary).

use std::time::{Duration, Instant};

use crate::harness::*;

/// Faults go on for at least this long, and until the producer is done.
const FAULTS_FOR: Duration = Duration::from_secs(18);
/// Past this, faults stop even if the producer is not done.
const FAULTS_AT_MOST: Duration = Duration::from_secs(35);
/// Once faults stop, the source must be empty within this.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

#[test]
fn chaos_drain_ends_exactly_once_and_in_order() {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => s.parse().expect("CHAOS_SEED must be a u64"),
        Err(_) => fastrand::u64(..),
    };
    eprintln!("chaos: seed {seed} (replay with CHAOS_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);

    let server = RedisServer::start_with(CHAOS_SERVER_ARGS);
    let names = Names::new();
    let w = workload(30_000, 50, 200);
    // A third waits as a backlog before the daemon starts; the rest comes live.
    let backlog = w.messages.len() / 3;
    let mut c = chaos_conn(&server.url(), "setup");
    push_all(&mut c, &names.source, &w.messages[..backlog]);
    let counter = format!("{}:chaos:pushed", names.key_prefix);

    let lease_ttl = Duration::from_secs(1);
    let command_timeout = Duration::from_millis(500);
    let mut rig = ChaosRig::new(
        server,
        names.clone(),
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
            ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
            ("REDIS_LEASE_TTL", "1"),
            ("REDIS_COMMAND_TIMEOUT", "0.5"),
            ("REDIS_CONNECT_TIMEOUT", "0.5"),
            ("REDIS_RETRY_MAX_DELAY", "0.3"),
        ],
        lease_ttl,
        command_timeout,
    );
    let producer = spawn_exactly_once_producer(
        rig.server.url(),
        names.source.clone(),
        counter.clone(),
        w.messages[backlog..].to_vec(),
        rng.u64(..),
    );

    // Every kind once, in random order, then kinds drawn at random.
    let mut deck = Fault::ALL.to_vec();
    rng.shuffle(&mut deck);
    while rig.started.elapsed() < FAULTS_AT_MOST
        && (!deck.is_empty() || rig.started.elapsed() < FAULTS_FOR || !producer.is_finished())
    {
        std::thread::sleep(Duration::from_millis(rng.u64(30..=250)));
        let fault = deck
            .pop()
            .unwrap_or_else(|| Fault::ALL[rng.usize(..Fault::ALL.len())]);
        rig.inject(fault, &mut rng);
    }
    let faults_over = Instant::now();
    eprintln!(
        "chaos: faults over after {:?}: {}",
        rig.started.elapsed(),
        rig.log.summary()
    );
    let retries = producer.join().expect("producer thread");
    let mut c = chaos_conn(&rig.server.url(), "audit");
    let pushed: Option<usize> = redis::cmd("GET").arg(&counter).query(&mut c).unwrap();
    assert_eq!(
        pushed,
        Some(w.messages.len() - backlog),
        "the producer did not finish within {FAULTS_AT_MOST:?}"
    );
    eprintln!("chaos: producer done ({retries} chunks retried)");

    let drained = wait_drained(&mut c, &names, DRAIN_LIMIT);
    let drain_took = faults_over.elapsed();
    let out = outcome(&mut c, &names);
    eprintln!(
        "chaos: {} envelopes, {} dead letters, {} left in the source, {drain_took:?} after the \
         faults stopped; total {:?}",
        out.envelopes.len(),
        out.dead.len(),
        out.source.len(),
        rig.started.elapsed()
    );
    let alive = rig.daemon.is_running();
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(alive, "the daemon exited");
        assert!(
            drained,
            "not drained within {DRAIN_LIMIT:?} after the faults stopped: {} left",
            out.source.len()
        );
        assert_accounted(&out, &w, &names, true, true);
        // Dead letters keep push order among themselves too.
        let dead: Vec<&[u8]> = out.dead.iter().map(|d| &d.original[..]).collect();
        let bad: Vec<&[u8]> = w.bad.iter().map(|b| &b[..]).collect();
        assert!(dead == bad, "dead letters out of push order");
        for f in Fault::ALL {
            assert!(
                rig.log.counts()[&f] > 0,
                "{f:?} was never injected: the test proves less than it claims"
            );
        }
    }));
    if let Err(panic) = verdict {
        let path = std::env::temp_dir().join(format!("chaos-{seed}.log"));
        let text = format!("seed {seed}\n{}\n\n{}", rig.log.report(), rig.all_logs());
        std::fs::write(&path, text).unwrap();
        eprintln!(
            "chaos: FAILED with seed {seed}; faults and daemon logs in {}",
            path.display()
        );
        std::panic::resume_unwind(panic);
    }
    rig.daemon.terminate_ok();
}

/// What Redis is doing when the daemon gets SIGTERM.
#[derive(Debug, Clone, Copy)]
enum RedisState {
    Answering,
    Paused,
    DebugSleep,
    Down,
}

/// The shutdown promise (exit 0 within `REDIS_SHUTDOWN_GRACE` plus 0.1 s, whatever Redis is
/// doing) with graces shorter than the 1 s the mover allows itself to release the lease:
/// SIGTERM mid-drain while Redis answers, is SIGSTOPped, is in `DEBUG SLEEP`, or is down.
/// Nothing is lost or reordered by the interrupted drain.
#[test]
fn chaos_sigterm_exits_within_a_short_grace_whatever_redis_is_doing() {
    let mut failures = Vec::new();
    for state in [
        RedisState::Answering,
        RedisState::Paused,
        RedisState::DebugSleep,
        RedisState::Down,
    ] {
        for grace in ["0", "0.5"] {
            // Persistent, so that the data survives the "Down" case.
            let mut server = RedisServer::start_with(CHAOS_SERVER_ARGS);
            let names = Names::new();
            let mut c = server.conn();
            let w = workload(20_000, 50, 200);
            push_all(&mut c, &names.source, &w.messages);
            let mut d = start_daemon(
                &server,
                &names,
                &[
                    ("REDIS_SHUTDOWN_GRACE", grace),
                    ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
                    ("REDIS_PREFETCH", "200"),
                ],
            );
            assert!(
                wait_until(Duration::from_secs(10), || llen(&mut c, &names.processing)
                    > 0),
                "the daemon never started moving"
            );
            let sleeper = match state {
                RedisState::Answering => None,
                RedisState::Paused => {
                    server.pause();
                    None
                }
                RedisState::DebugSleep => {
                    let url = server.url();
                    let t = std::thread::spawn(move || {
                        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
                            .arg("SLEEP")
                            .arg(2)
                            .query(&mut connect(&url));
                    });
                    std::thread::sleep(Duration::from_millis(50));
                    Some(t)
                }
                RedisState::Down => {
                    server.kill();
                    None
                }
            };
            std::thread::sleep(Duration::from_millis(300));
            let limit = d.sigterm_limit();
            let (code, took) = d.terminate();
            eprintln!("chaos: SIGTERM with Redis {state:?}, grace {grace} s: exit {code:?} after {took:?}");
            if code != Some(0) || took > limit {
                failures.push(format!(
                    "Redis {state:?}, grace {grace} s: exit {code:?} after {took:?} (limit {limit:?})"
                ));
            }
            match state {
                RedisState::Paused => server.resume(),
                RedisState::Down => server.restart(),
                _ => {}
            }
            if let Some(t) = sleeper {
                t.join().unwrap();
            }
            let mut c = server.conn();
            assert_accounted(&outcome(&mut c, &names), &w, &names, true, false);
        }
    }
    assert!(
        failures.is_empty(),
        "SIGTERM broke the promise (grace + 0.1 s, + {SIGTERM_ALLOWANCE:?} allowance):\n{}",
        failures.join("\n")
    );
}
