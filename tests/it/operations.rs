//! Operations against a running daemon: metrics and status agree with what was moved, and
//! scheduled mode takes no more than its batches per tick.

use std::time::Duration;

use crate::harness::*;

#[test]
fn metrics_and_status_match_what_was_moved() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut messages: Vec<Vec<u8>> = (0..95).map(|i| event(i, 300)).collect();
    for (k, pos) in [3usize, 20, 41, 77, 90].iter().enumerate() {
        messages.insert(*pos, format!("not json {k}").into_bytes());
    }
    push_all(&mut c, &names.source, &messages);

    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.3"),
            ("REDIS_HTTP_ADDR", &http_addr),
            ("REDIS_CONSUMER_NAME", "ops-1"),
            ("REDIS_LEASE_TTL", "1"),
        ],
    );
    let mut daemon = spawn_daemon(&env, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || {
            llen(&mut c, &names.source) == 0 && llen(&mut c, &names.processing) == 10
        }),
        "the daemon did not move everything"
    );
    // The probe refreshes the length gauges once a second, the heartbeat every lease_ttl/3.
    let settled = wait_until(Duration::from_secs(10), || {
        let (_, text) = http_get(http_port, "/metrics");
        metric(&text, &queue_series("processing", &names.processing)) == Some(10.0)
    });
    assert!(settled, "gauges never caught up");

    let (status, text) = http_get(http_port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "batch_processor_messages_total"), Some(95.0));
    assert_eq!(metric(&text, "batch_processor_batches_total"), Some(10.0));
    assert_eq!(
        metric(&text, "batch_processor_dead_letters_total"),
        Some(5.0)
    );
    assert_eq!(
        metric(&text, "batch_processor_batch_size_count"),
        Some(10.0)
    );
    assert_eq!(metric(&text, "batch_processor_batch_size_sum"), Some(95.0));
    assert_eq!(
        metric(&text, "batch_processor_oldest_message_age_seconds_count"),
        Some(10.0)
    );
    assert_eq!(
        metric(&text, &queue_series("source", &names.source)),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, &queue_series("dead_letter", &names.dead_letter)),
        Some(5.0)
    );
    assert_eq!(metric(&text, "batch_processor_lease_held"), Some(1.0));
    let envelope_sizes: u64 = envelopes(&mut c, &names.processing)
        .iter()
        .map(|e| e["payload"]["size"].as_u64().unwrap())
        .sum();
    assert_eq!(envelope_sizes, 95);
    assert_eq!(http_get(http_port, "/healthz").0, 200);
    assert_eq!(http_get(http_port, "/readyz").0, 200);

    // status reads the same numbers from Redis alone.
    let out = run_cli(&env, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
    assert_eq!(s["queues"]["sources"][0]["length"], 0);
    assert_eq!(s["queues"]["processing"]["length"], 10);
    assert_eq!(s["queues"]["dead_letter"]["length"], 5);
    assert_eq!(s["totals"]["messages"], 95);
    assert_eq!(s["totals"]["batches"], 10);
    assert_eq!(s["totals"]["dead_letters"], 5);
    assert_eq!(s["lease"]["holder"], "ops-1");
    let replicas = s["replicas"].as_array().expect("replicas");
    assert!(wait_until(Duration::from_secs(5), || {
        let out = run_cli(&env, &["status", "--json"]);
        let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        s["replicas"][0]["messages"] == 95
    }));
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["consumer"], "ops-1");
    assert_eq!(replicas[0]["holds_lease"], true);
    assert!(!s["last_envelope_at"].is_null());

    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn beat_mode_takes_at_most_the_configured_batches_per_tick() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let messages: Vec<Vec<u8>> = (0..50).map(|i| event(i, 200)).collect();
    push_all(&mut c, &names.source, &messages);
    // One tick at start-up, the next an hour later: exactly one tick's worth may leave.
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "5"),
            ("REDIS_SCHEDULE", "3600"),
            ("REDIS_MAX_BATCHES_PER_TICK", "2"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    let mut daemon = spawn_daemon(&env, &[]);
    assert!(wait_until(Duration::from_secs(10), || llen(
        &mut c,
        &names.processing
    ) >= 2));
    // Give it every chance to take more than it may.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(llen(&mut c, &names.processing), 2);
    assert_eq!(llen(&mut c, &names.source), 40);
    let seqs: Vec<u64> = read_all(&mut c, &names.processing)
        .iter()
        .flat_map(|e| batch_raw(e))
        .map(|m| seq_of(&m))
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    // The rest is untouched, in order, for the next tick.
    let left: Vec<u64> = read_all(&mut c, &names.source)
        .iter()
        .map(|m| seq_of(m))
        .collect();
    assert_eq!(left, (10..50).collect::<Vec<_>>());
}

#[test]
fn busy_envelope_logging_is_summarised_and_accounts_for_every_envelope() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut messages: Vec<Vec<u8>> = (0..5_000).map(|i| event(i, 200)).collect();
    for k in 0..30 {
        messages.insert(k * 150, format!("bad {k}").into_bytes());
    }
    push_all(&mut c, &names.source, &messages);
    let env = env_with(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_LOG_ENVELOPES_PER_SECOND", "5"),
        ],
    );
    let mut daemon = spawn_daemon(&env, &[]);
    assert!(wait_until(Duration::from_secs(30), || llen(
        &mut c,
        &names.processing
    ) == 500));
    // The summary for the last busy second is written when the next second starts.
    std::thread::sleep(Duration::from_millis(1500));
    daemon.terminate();
    let lines = daemon.json_lines();
    let info = |m: &str| {
        lines
            .iter()
            .filter(move |l| l["message"] == m && l["level"] == "INFO")
            .collect::<Vec<_>>()
    };
    let per_envelope = info("envelope sent").len() as u64;
    let summaries = info("envelopes summary");
    let summarised: u64 = summaries
        .iter()
        .map(|l| l["envelopes"].as_u64().unwrap())
        .sum();
    let summarised_messages: u64 = summaries
        .iter()
        .map(|l| l["messages"].as_u64().unwrap())
        .sum();
    assert!(!summaries.is_empty(), "no summary line");
    // Every envelope is on an info line of its own or counted in a summary, exactly once.
    assert_eq!(per_envelope + summarised, 500);
    assert_eq!(per_envelope * 10 + summarised_messages, 5_000);
    // Far fewer lines than envelopes: never a line per message, nor per envelope when busy.
    assert!(per_envelope < 100, "{per_envelope} per-envelope lines");
    let dead_lines = lines
        .iter()
        .filter(|l| l["message"] == "dead letters written" && l["level"] == "WARN")
        .map(|l| l["count"].as_u64().unwrap())
        .sum::<u64>();
    let dead_summarised: u64 = summaries
        .iter()
        .map(|l| l["dead_letters"].as_u64().unwrap())
        .sum();
    assert_eq!(dead_lines + dead_summarised, 30);
}

#[test]
fn a_taken_http_port_fails_the_start_with_exit_1_and_a_clear_line() {
    let server = RedisServer::start();
    let names = Names::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let env = env_with(&server, &names, &[("REDIS_HTTP_ADDR", &addr)]);
    let out = start_cli(&env, &["run"]).finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(&addr), "{}", out.stderr);
}
