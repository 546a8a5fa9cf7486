//! Many pipelines in one deployment (`REDIS_SHARDS`), on one standalone server: every
//! pipeline drains exactly once with its bad messages dead-lettered on its own list; the
//! metrics, readiness and `status` show each pipeline; `shards` prints the names and picks a
//! shard by key; bad combinations of names exit 2.

use std::time::Duration;

use crate::harness::*;

#[test]
fn shards_drain_exactly_once_each_with_their_own_dead_letters() {
    let server = RedisServer::start();
    let names = Names::new();
    let pipelines = shard_queues(&names, 3);
    let pushed: Vec<_> = (0..3).map(|p| pipeline_messages(p, 3_000, 97)).collect();
    push_pipelines(|_| server.conn(), &pipelines, &pushed);
    let http_port = free_port();
    let addr = format!("127.0.0.1:{http_port}");
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_SHARDS", "3"),
            ("REDIS_CONSUMER_NAME", "solo"),
            ("REDIS_HTTP_ADDR", &addr),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    let mut daemon = spawn_daemon(&env, &["run"]);
    let drained = wait_until(Duration::from_secs(30), || {
        sources_left(|_| server.conn(), &pipelines) == 0
    });
    assert!(drained, "not drained: {}", daemon.all_output());
    let ready = wait_until(Duration::from_secs(5), || {
        let (_, text) = http_get(http_port, "/metrics");
        metric(&text, "batch_processor_lease_held") == Some(3.0)
    });
    assert!(ready, "{}", http_get(http_port, "/metrics").1);
    assert_eq!(http_get(http_port, "/readyz").0, 200);
    let (_, text) = http_get(http_port, "/metrics");
    for q in &pipelines {
        let label = format!("{{pipeline=\"{}\"}}", q.sources[0]);
        let held = format!("batch_processor_pipeline_lease_held{label}");
        assert_eq!(metric(&text, &held), Some(1.0), "{text}");
        let messages = format!("batch_processor_pipeline_messages_total{label}");
        assert_eq!(metric(&text, &messages), Some(3_000.0), "{text}");
    }
    assert_eq!(
        metric(&text, "batch_processor_messages_total"),
        Some(9_000.0)
    );

    let out = run_cli(&env, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
    let rows = s["pipelines"].as_array().expect("pipelines");
    assert_eq!(rows.len(), 3);
    for (row, q) in rows.iter().zip(&pipelines) {
        assert_eq!(row["name"], q.sources[0]);
        assert_eq!(row["holder"], "solo");
        assert_eq!(row["totals"]["messages"], 3_000);
    }
    assert_eq!(s["totals"]["messages"], 9_000);
    let text = run_cli(&env, &["status"]).stdout;
    assert!(text.contains("solo  host"), "{text}");

    daemon.terminate_ok();
    assert_pipelines_accounted(|_| server.conn(), &pipelines, &pushed, true);
    // dlq commands go through every pipeline's dead-letter list.
    let out = run_cli(&env, &["dlq", "list", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let docs: serde_json::Value = serde_json::from_str(&out.stdout).expect("dlq list --json");
    for (doc, q) in docs.as_array().expect("array").iter().zip(&pipelines) {
        assert_eq!(doc["pipeline"], q.sources[0]);
        assert_eq!(doc["result"]["total"], 30, "{doc}");
    }
}

#[test]
fn shards_prints_the_names_and_picks_a_shard_by_key() {
    let server = RedisServer::start();
    let names = Names::new();
    let env = env_with(&server, &names, &[("REDIS_SHARDS", "3")]);
    let out = run_cli(&env, &["shards"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let pipelines = shard_queues(&names, 3);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    for (i, (line, q)) in lines.iter().zip(&pipelines).enumerate() {
        let want = format!("{i}\t{}\t{}\t{}", q.sources[0], q.processing, q.dead_letter);
        assert_eq!(*line, want);
    }
    // zlib.crc32(b"user-42") % 3 == 2097592435 % 3 == 1
    let out = run_cli(&env, &["shards", "--key", "user-42", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("shards --json");
    assert_eq!(rows[0]["shard"], 1);
    assert_eq!(rows[0]["sources"][0], pipelines[1].sources[0]);
    // Without shards, the one pipeline is the configured lists.
    let out = run_cli(&daemon_env(&server, &names), &["shards"]);
    assert_eq!(
        out.stdout.trim(),
        format!(
            "0\t{}\t{}\t{}",
            names.source, names.processing, names.dead_letter
        )
    );
}

#[test]
fn braces_with_shards_and_untagged_names_on_a_cluster_exit_2() {
    let server = RedisServer::start();
    let names = Names::new();
    let braced = format!("{}{{x}}", names.source);
    let env = env_with(
        &server,
        &names,
        &[("REDIS_SHARDS", "2"), ("REDIS_RAW_DATA_QUEUE", &braced)],
    );
    let out = run_cli(&env, &["check-config"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("REDIS_RAW_DATA_QUEUE"),
        "{}",
        out.stderr
    );
    let env = env_with(&server, &names, &[("REDIS_CLUSTER", "true")]);
    let out = run_cli(&env, &["run"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let e = &out.stderr;
    assert!(
        e.contains("hash tag") && e.contains(&format!("{}:{{", names.processing)),
        "{e}"
    );
    for bad in [("REDIS_SHARDS", "257"), ("REDIS_CLUSTER", "maybe")] {
        let out = run_cli(&env_with(&server, &names, &[bad]), &["check-config"]);
        assert_eq!(out.code, Some(2), "{bad:?}: {}", out.stderr);
        assert!(out.stderr.contains(bad.0), "{}", out.stderr);
    }
}
