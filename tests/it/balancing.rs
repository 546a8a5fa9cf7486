//! Replicas of a sharded deployment divide its pipelines: each holds its fair share, a
//! replica that joins or leaves makes the others hand pipelines over (seen in `status`), a
//! SIGKILLed replica's pipelines are taken within about a lease TTL, and through it all
//! every pipeline moves each message exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_processor::settings::Queues;

use crate::harness::*;

/// Holders of each pipeline per `status --json` (`None` for a free one).
fn holders(env: &[(String, String)]) -> Vec<Option<String>> {
    let out = run_cli(env, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    s["pipelines"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r["holder"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How many pipelines each replica holds; free pipelines under `""`.
fn counts(holders: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for h in holders {
        *counts.entry(h.clone().unwrap_or_default()).or_default() += 1;
    }
    counts
}

/// Wait until `status` shows exactly `want` (replica → pipelines held); the last view on
/// failure.
fn wait_for_counts(
    env: &[(String, String)],
    want: &[(&str, usize)],
    limit: Duration,
) -> Result<Duration, String> {
    let want: BTreeMap<String, usize> = want.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    let start = Instant::now();
    let mut last = BTreeMap::new();
    let ok = wait_until(limit, || {
        last = counts(&holders(env));
        last == want
    });
    if ok {
        Ok(start.elapsed())
    } else {
        Err(format!("wanted {want:?}, status shows {last:?}"))
    }
}

/// Push `pushed[p]` onto each pipeline in small chunks from a thread until all is pushed or
/// `stop` is set; returns how many of each were pushed.
fn spawn_producers(
    url: String,
    pipelines: Vec<Queues>,
    pushed: Vec<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<usize>> {
    std::thread::spawn(move || {
        let mut c = connect(&url);
        let mut done = vec![0; pipelines.len()];
        while !stop.load(Ordering::Relaxed) && done.iter().zip(&pushed).any(|(d, p)| *d < p.len()) {
            for (p, q) in pipelines.iter().enumerate() {
                let end = (done[p] + 50).min(pushed[p].len());
                push_all(&mut c, &q.sources[0], &pushed[p][done[p]..end]);
                done[p] = end;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done
    })
}

#[test]
fn replicas_share_the_pipelines_and_rebalance_as_they_come_and_go() {
    let server = RedisServer::start();
    let names = Names::new();
    let pipelines = shard_queues(&names, 4);
    let pushed: Vec<_> = (0..4).map(|p| pipeline_messages(p, 20_000, 101)).collect();
    let base = env_with(
        &server,
        &names,
        &[
            ("REDIS_SHARDS", "4"),
            ("REDIS_LEASE_TTL", "1"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    let named = |name: &str| {
        let mut env = base.clone();
        env.push(("REDIS_CONSUMER_NAME".into(), name.into()));
        env
    };
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producers(
        server.url(),
        pipelines.clone(),
        pushed.clone(),
        stop.clone(),
    );
    let limit = Duration::from_secs(15);

    let mut a = spawn_daemon(&named("r-a"), &["run"]);
    wait_for_counts(&base, &[("r-a", 4)], limit)
        .unwrap_or_else(|e| panic!("{e}: {}", a.all_output()));
    let mut b = spawn_daemon(&named("r-b"), &["run"]);
    wait_for_counts(&base, &[("r-a", 2), ("r-b", 2)], limit).unwrap();
    let mut c = spawn_daemon(&named("r-c"), &["run"]);
    // Four pipelines over three replicas: the first in name order holds two.
    wait_for_counts(&base, &[("r-a", 2), ("r-b", 1), ("r-c", 1)], limit).unwrap();
    let text = run_cli(&base, &["status"]).stdout;
    assert!(
        text.contains("r-c  host") && text.contains("pipelines 1"),
        "{text}"
    );

    b.terminate_ok();
    wait_for_counts(&base, &[("r-a", 2), ("r-c", 2)], limit).unwrap();
    c.kill();
    let took = wait_for_counts(&base, &[("r-a", 4)], limit).unwrap();
    // The lease lives 1 s and a replica counts as alive 1 s after its last beat; the standby
    // and the status polls add a fraction.
    assert!(
        took < Duration::from_millis(2_500),
        "takeover after SIGKILL took {took:?}"
    );

    let done = producer.join().unwrap();
    assert!(done.iter().zip(&pushed).all(|(d, p)| *d == p.len()));
    stop.store(true, Ordering::Relaxed);
    let drained = wait_until(Duration::from_secs(30), || {
        sources_left(|_| server.conn(), &pipelines) == 0
    });
    assert!(drained, "not drained: {}", a.all_output());
    a.terminate_ok();
    assert_pipelines_accounted(|_| server.conn(), &pipelines, &pushed, true);
    assert!(
        !a.all_output().contains("source changed"),
        "{}",
        a.all_output()
    );
}

#[test]
fn replicas_sigkilled_at_random_lose_and_duplicate_nothing() {
    let server = RedisServer::start();
    let names = Names::new();
    let pipelines = shard_queues(&names, 5);
    let pushed: Vec<_> = (0..5).map(|p| pipeline_messages(p, 30_000, 89)).collect();
    let base = env_with(
        &server,
        &names,
        &[
            ("REDIS_SHARDS", "5"),
            ("REDIS_LEASE_TTL", "1"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    let start = |i: usize| {
        let mut env = base.clone();
        env.push(("REDIS_CONSUMER_NAME".into(), format!("k-{i}")));
        spawn_daemon(&env, &["run"])
    };
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producers(server.url(), pipelines.clone(), pushed.clone(), stop);
    let mut replicas: Vec<Daemon> = (0..3).map(start).collect();
    for round in 0..6 {
        std::thread::sleep(random_ms(300, 1_200));
        let victim = fastrand::usize(..replicas.len());
        replicas[victim].kill();
        // Half the time it comes back under a new name, half the time under its own.
        let name = if round % 2 == 0 { victim } else { 10 + round };
        replicas[victim] = start(name);
    }
    let done = producer.join().unwrap();
    assert!(done.iter().zip(&pushed).all(|(d, p)| *d == p.len()));
    let drained = wait_until(Duration::from_secs(40), || {
        sources_left(|_| server.conn(), &pipelines) == 0
    });
    assert!(drained, "not drained: {:?}", holders(&base));
    for r in &mut replicas {
        r.terminate_ok();
    }
    assert_pipelines_accounted(|_| server.conn(), &pipelines, &pushed, true);
}

/// More replicas than pipelines: a replica that took both pipelines alone hands them over
/// when two replicas that sort before it join, since its share is now 0 (a hostile review
/// found it kept both for good).
#[test]
fn a_replica_whose_share_falls_to_zero_hands_its_pipelines_over() {
    let server = RedisServer::start();
    let names = Names::new();
    let base = env_with(
        &server,
        &names,
        &[
            ("REDIS_SHARDS", "2"),
            ("REDIS_LEASE_TTL", "1"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    let named = |name: &str| {
        let mut env = base.clone();
        env.push(("REDIS_CONSUMER_NAME".into(), name.into()));
        env
    };
    let limit = Duration::from_secs(15);
    let mut z = spawn_daemon(&named("r-z"), &["run"]);
    wait_for_counts(&base, &[("r-z", 2)], limit)
        .unwrap_or_else(|e| panic!("{e}: {}", z.all_output()));
    let mut a = spawn_daemon(&named("r-a"), &["run"]);
    let mut b = spawn_daemon(&named("r-b"), &["run"]);
    wait_for_counts(&base, &[("r-a", 1), ("r-b", 1)], limit)
        .unwrap_or_else(|e| panic!("{e}: {}", z.all_output()));
    for d in [&mut a, &mut b, &mut z] {
        d.terminate_ok();
    }
}
