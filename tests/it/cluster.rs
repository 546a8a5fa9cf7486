//! Scale-out on a local Redis Cluster (three primaries, one replica each, started per test):
//! sharded pipelines drain exactly once, each on the primary that owns its slot, while
//! replicas come, go and are SIGKILLed; a primary SIGKILLed mid-drain fails over to its
//! replica and the audit holds against what the promoted node has; a pipeline's slot moves
//! to another primary mid-drain; untagged names are refused on a detected cluster.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use batch_processor::settings::Queues;

use crate::harness::*;

/// The daemon's environment on `cluster` with `shards` pipelines (the cluster detected).
fn cluster_env(
    cluster: &Cluster,
    names: &Names,
    shards: usize,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let port = cluster.seed_port().to_string();
    let shards = shards.to_string();
    let mut all = vec![
        ("REDIS_PORT", port.as_str()),
        ("REDIS_SHARDS", shards.as_str()),
        ("REDIS_LEASE_TTL", "1"),
        ("REDIS_PROCESSING_TIMEOUT", "0.1"),
    ];
    all.extend_from_slice(extra);
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in [
        ("REDIS_RAW_DATA_QUEUE", names.source.as_str()),
        ("REDIS_PROCESSING_QUEUE", names.processing.as_str()),
        ("REDIS_DEAD_LETTER_QUEUE", names.dead_letter.as_str()),
        ("REDIS_KEY_PREFIX", names.key_prefix.as_str()),
        ("REDIS_HTTP_ADDR", "off"),
        ("REDIS_LOG_FORMAT", "json"),
        ("REDIS_RETRY_MAX_DELAY", "0.5"),
    ]
    .into_iter()
    .chain(all)
    {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn named(env: &[(String, String)], name: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("REDIS_CONSUMER_NAME".into(), name.into()));
    env
}

/// Holders per pipeline, from `status --json` through the cluster.
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

/// Wait until the pipelines are held by exactly the replicas `names`, each at least once.
fn wait_held_by(env: &[(String, String)], names: &[&str], limit: Duration) -> Vec<Option<String>> {
    let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let mut last = Vec::new();
    let ok = wait_until(limit, || {
        last = holders(env);
        let seen: BTreeSet<String> = last.iter().flatten().cloned().collect();
        !last.is_empty() && last.iter().all(Option::is_some) && seen == want
    });
    assert!(ok, "wanted holders {want:?}, status shows {last:?}");
    last
}

fn left(cluster: &Cluster, pipelines: &[Queues]) -> usize {
    sources_left(|q| cluster.conn_for(&q.sources[0]), pipelines)
}

#[test]
fn pipelines_drain_exactly_once_on_their_own_primaries_while_replicas_come_and_go() {
    let cluster = Cluster::start(3, 1);
    let names = Names::new();
    let env = cluster_env(&cluster, &names, 3, &[]);

    // Untagged names are refused once the cluster is detected, with corrected names shown.
    let out = run_cli(&env_without_shards(&env), &["run"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("hash tag") && out.stderr.contains("REDIS_SHARDS=N"),
        "{}",
        out.stderr
    );

    let pipelines = shard_queues(&names, 3);
    let owners: BTreeSet<u16> = pipelines
        .iter()
        .map(|q| cluster.owner_port(&q.processing))
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "three shards spread over the three primaries"
    );
    let pushed: Vec<_> = (0..3).map(|p| pipeline_messages(p, 40_000, 113)).collect();
    push_pipelines(|q| cluster.conn_for(&q.sources[0]), &pipelines, &pushed);

    let mut a = spawn_daemon(&named(&env, "c-a"), &["run"]);
    wait_held_by(&env, &["c-a"], Duration::from_secs(15));
    let mut b = spawn_daemon(&named(&env, "c-b"), &["run"]);
    let both = wait_held_by(&env, &["c-a", "c-b"], Duration::from_secs(15));
    let text = run_cli(&env, &["status"]).stdout;
    assert!(text.contains("c-b  host"), "{text}");
    // A third replica, then SIGKILLs at random moments: the survivors take over.
    let mut c = spawn_daemon(&named(&env, "c-c"), &["run"]);
    std::thread::sleep(random_ms(200, 1_500));
    b.kill();
    std::thread::sleep(random_ms(200, 1_500));
    c.kill();
    let start = Instant::now();
    wait_held_by(&env, &["c-a"], Duration::from_secs(15));
    eprintln!(
        "after {both:?}, c-a held everything again {:?} after the last SIGKILL",
        start.elapsed()
    );

    let drained = wait_until(Duration::from_secs(60), || left(&cluster, &pipelines) == 0);
    assert!(drained, "not drained: {}", a.all_output());
    let out = run_cli(&env, &["dlq", "list", "--json"]);
    let docs: serde_json::Value = serde_json::from_str(&out.stdout).expect("dlq list --json");
    assert_eq!(docs.as_array().map(Vec::len), Some(3), "{}", out.stdout);
    a.terminate_ok();
    assert_pipelines_accounted(
        |q| cluster.conn_for(&q.processing),
        &pipelines,
        &pushed,
        true,
    );
}

/// `env` as a single bare-named pipeline.
fn env_without_shards(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k != "REDIS_SHARDS")
        .cloned()
        .collect()
}

/// Block until every write so far on the primary that owns `key` reached its replica.
fn wait_replicated(cluster: &Cluster, key: &str) {
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5_000)
        .query(&mut cluster.conn_for(key))
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge");
}

#[test]
fn a_primary_sigkilled_mid_drain_fails_over_and_every_message_stays_exactly_once() {
    let mut cluster = Cluster::start(3, 1);
    let names = Names::new();
    let env = cluster_env(&cluster, &names, 3, &[]);
    let pipelines = shard_queues(&names, 3);
    let pushed: Vec<_> = (0..3).map(|p| pipeline_messages(p, 60_000, 97)).collect();
    push_pipelines(|q| cluster.conn_for(&q.sources[0]), &pipelines, &pushed);
    // The pushes are on the replicas before the kill: the test is about the daemon's commits,
    // not about a producer's writes that an asynchronous replica never saw.
    for q in &pipelines {
        wait_replicated(&cluster, &q.sources[0]);
    }
    let victim = &pipelines[1];
    let before = llen(
        &mut cluster.conn_for(&victim.sources[0]),
        &victim.sources[0],
    );
    let mut daemon = spawn_daemon(&named(&env, "f-a"), &["run"]);
    let started = wait_until(Duration::from_secs(20), || {
        llen(
            &mut cluster.conn_for(&victim.sources[0]),
            &victim.sources[0],
        ) < before * 3 / 4
    });
    assert!(started, "no progress: {}", daemon.all_output());
    let port = cluster.owner_port(&victim.processing);
    cluster.kill(port);
    cluster.wait_ok(Duration::from_secs(30));
    assert_ne!(
        cluster.owner_port(&victim.processing),
        port,
        "a replica was promoted"
    );
    let drained = wait_until(Duration::from_secs(90), || left(&cluster, &pipelines) == 0);
    assert!(
        drained,
        "not drained after the failover: {}",
        daemon.all_output()
    );
    let failed = problem_lines(&daemon);
    eprintln!("errors met: {}; last: {:?}", failed.len(), failed.last());
    daemon.terminate_ok();
    // Exactly once against what the promoted replica holds: a commit the dead primary had not
    // yet sent to its replica is gone whole (its trim and its envelopes), so its messages
    // were still in the promoted node's source and were moved again.
    assert_pipelines_accounted(
        |q| cluster.conn_for(&q.processing),
        &pipelines,
        &pushed,
        true,
    );
}

#[test]
fn a_pipelines_slot_migrating_mid_drain_loses_and_duplicates_nothing() {
    let cluster = Cluster::start(3, 0);
    let names = Names::new();
    let env = cluster_env(&cluster, &names, 2, &[]);
    let pipelines = shard_queues(&names, 2);
    let pushed: Vec<_> = (0..2).map(|p| pipeline_messages(p, 80_000, 101)).collect();
    push_pipelines(|q| cluster.conn_for(&q.sources[0]), &pipelines, &pushed);
    let moving = &pipelines[0];
    let slot = batch_processor::scale::slot::key_slot(&moving.processing);
    let from = cluster.owner_port(&moving.processing);
    let to = *cluster.primaries().iter().find(|p| **p != from).unwrap();
    let mut daemon = spawn_daemon(&named(&env, "m-a"), &["run"]);
    let before = pushed[0].len();
    let started = wait_until(Duration::from_secs(20), || {
        llen(
            &mut cluster.conn_for(&moving.sources[0]),
            &moving.sources[0],
        ) < before * 3 / 4
    });
    assert!(started, "no progress: {}", daemon.all_output());
    cluster.migrate_slot(slot, to, Duration::from_millis(200));
    assert_eq!(cluster.owner_port(&moving.processing), to);
    let drained = wait_until(Duration::from_secs(60), || left(&cluster, &pipelines) == 0);
    assert!(
        drained,
        "not drained after the migration: {}",
        daemon.all_output()
    );
    let redirected = problem_lines(&daemon);
    eprintln!(
        "redirections met: {}; first: {:?}",
        redirected.len(),
        redirected.first()
    );
    daemon.terminate_ok();
    assert_pipelines_accounted(
        |q| cluster.conn_for(&q.processing),
        &pipelines,
        &pushed,
        true,
    );
}

#[test]
fn the_ledger_lives_with_each_pipeline_and_its_library_on_each_primary() {
    let cluster = Cluster::start(3, 0);
    let names = Names::new();
    let mut env = cluster_env(&cluster, &names, 3, &[]);
    env.extend(ledger_env(&names, "5"));
    let pipelines = shard_queues(&names, 3);
    let pushed: Vec<_> = (0..3).map(|p| pipeline_messages(p, 2_000, 0)).collect();
    push_pipelines(|q| cluster.conn_for(&q.sources[0]), &pipelines, &pushed);
    let mut daemon = spawn_daemon(&named(&env, "l-a"), &["run"]);
    let drained = wait_until(Duration::from_secs(30), || left(&cluster, &pipelines) == 0);
    assert!(drained, "not drained: {}", daemon.all_output());
    // `shards` names each shard's ledger prefix, under the shard's tag.
    let out = run_cli(&env, &["shards", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("shards --json");
    for (row, q) in rows.as_array().unwrap().iter().zip(&pipelines) {
        let tag = batch_processor::scale::slot::hash_tag(&q.processing);
        let want = format!("{}{{{tag}}}:", ledger_prefix(&names));
        assert_eq!(row["batch_state_prefix"], want.as_str());
        // The library is on the pipeline's primary, and every envelope has its entry there.
        let mut conn = cluster.conn_for(&q.processing);
        let libs: redis::Value = redis::cmd("FUNCTION").arg("LIST").query(&mut conn).unwrap();
        assert!(format!("{libs:?}").contains("batch_ledger"), "{libs:?}");
        let ids: Vec<String> = envelopes(&mut conn, &q.processing)
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 200);
        for id in &ids[..3] {
            let entry: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("{want}{id}"))
                .query(&mut conn)
                .unwrap();
            assert_eq!(
                entry.get("status").map(String::as_str),
                Some("queued"),
                "{entry:?}"
            );
        }
    }
    // `batch show` finds a batch in whichever pipeline holds it.
    let last = &pipelines[2];
    let id = envelopes(&mut cluster.conn_for(&last.processing), &last.processing)[0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = run_cli(&env, &["batch", "show", &id, "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    daemon.terminate_ok();
    assert_pipelines_accounted(
        |q| cluster.conn_for(&q.processing),
        &pipelines,
        &pushed,
        true,
    );
}
