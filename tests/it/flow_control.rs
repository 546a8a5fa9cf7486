//! Flow control for a slow, costly consumer: an output rate limit that holds on average with
//! its burst allowance, and a batch byte cap that no envelope passes unless it holds a single
//! message. Waiting messages stay in the source; every message still leaves exactly once and in
//! order.

use std::time::Duration;

use chrono::DateTime;

use crate::harness::*;

#[test]
fn a_limit_of_two_batches_per_second_holds_over_several_seconds() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(60, 0, 120);
    push_all(&mut c, &names.source, &w.messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "2"),
            ("REDIS_MAX_BATCHES_PER_SECOND", "2"),
            ("REDIS_BATCH_BURST", "2"),
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    let stamps: Vec<f64> = envelopes(&mut c, &names.processing)
        .iter()
        .map(|e| {
            let t = DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
            t.timestamp_micros() as f64 / 1e6
        })
        .collect();
    // It flows at about the rate: 2 at once, then 2 a second (with room for a busy machine).
    assert!(stamps.len() >= 6, "only {} envelopes in 4 s", stamps.len());
    assert!(
        stamps.len() <= 2 + 2 * 5,
        "{} envelopes in 4 s",
        stamps.len()
    );
    // No window holds more than the burst plus the rate times its length (+1 for timestamps
    // taken when a commit is planned, a little before it is sent).
    for i in 0..stamps.len() {
        for j in i..stamps.len() {
            let allowed = 2.0 + 2.0 * (stamps[j] - stamps[i]) + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} envelopes within {:.3} s",
                j - i + 1,
                stamps[j] - stamps[i]
            );
        }
    }
    // The rest waits in the source, and leaves in order once the daemon is done waiting.
    assert!(llen(&mut c, &names.source) > 0);
    d.terminate_ok();
    assert_accounted(&outcome(&mut c, &names), &w, &names, true, false);
}

#[test]
fn no_envelope_passes_the_batch_byte_cap_unless_it_holds_one_message() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    // Mostly 100-byte events, some 300-byte ones, and one of 1,000 bytes (over the cap).
    let messages: Vec<Vec<u8>> = (0..60)
        .map(|seq| match seq {
            30 => event(seq, 1000),
            s if s % 7 == 0 => event(s, 300),
            s => event(s, 100),
        })
        .collect();
    push_all(&mut c, &names.source, &messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_MAX_BATCH_BYTES", "450"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ],
    );
    assert!(wait_drained(&mut c, &names, Duration::from_secs(20)));
    d.terminate_ok();
    let batches: Vec<Vec<Vec<u8>>> = read_all(&mut c, &names.processing)
        .iter()
        .map(|e| batch_raw(e))
        .collect();
    let mut seen = Vec::new();
    for batch in &batches {
        let bytes: usize = batch.iter().map(|m| m.len() + 1).sum();
        assert!(
            bytes <= 450 || batch.len() == 1,
            "an envelope of {} messages holds {bytes} bytes",
            batch.len()
        );
        seen.extend(batch.iter().map(|m| seq_of(m)));
    }
    assert_eq!(
        seen,
        (0..60).collect::<Vec<u64>>(),
        "every message once, in order"
    );
    assert!(
        batches.iter().any(|b| b.len() == 1 && b[0].len() == 1000),
        "the large message travels alone"
    );
}

/// Move every envelope from `from` to `to`, oldest first (as a transformer would take them),
/// until `stop` is set and `from` is empty.
fn consume(
    url: String,
    from: String,
    to: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = connect(&url);
        loop {
            let moved: Option<Vec<u8>> = redis::cmd("LMOVE")
                .arg(&from)
                .arg(&to)
                .arg("RIGHT")
                .arg("LEFT")
                .query(&mut c)
                .unwrap();
            if moved.is_none() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
}

#[test]
fn back_pressure_holds_the_processing_limit_survives_a_kill_and_resumes_by_itself() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let w = workload(1000, 0, 120);
    push_all(&mut c, &names.source, &w.messages);
    let http = free_port();
    let addr = format!("127.0.0.1:{http}");
    let settings = [
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_MAX_PROCESSING_QUEUE_LENGTH", "20"),
        ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ("REDIS_HTTP_ADDR", addr.as_str()),
        ("REDIS_CONSUMER_NAME", "bp-1"),
    ];
    let mut d = start_daemon(&server, &names, &settings);
    // Nobody consumes: the list fills to the limit and never passes it.
    let mut highest = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        highest = highest.max(llen(&mut c, &names.processing));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        highest, 20,
        "the processing list passed (or never reached) its limit"
    );
    assert_eq!(
        llen(&mut c, &names.source),
        800,
        "waiting messages stay in the source"
    );
    assert!(
        d.wait_for_line("\"paused\"", Duration::from_secs(5)),
        "{}",
        d.all_output()
    );
    // Pausing is healthy, and shows in the metrics.
    assert_eq!(http_get(http, "/readyz").0, 200);
    let (_, metrics) = http_get(http, "/metrics");
    assert_eq!(metric(&metrics, "batch_processor_paused"), Some(1.0));
    // A kill while paused loses nothing; the restarted daemon pauses too.
    d.kill();
    let mut d = start_daemon(&server, &names, &settings);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(llen(&mut c, &names.processing), 20);
    // A transformer appears: flow resumes by itself and everything drains.
    let consumed = format!("{}:consumed", names.processing);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = consume(
        server.url(),
        names.processing.clone(),
        consumed.clone(),
        stop.clone(),
    );
    assert!(wait_drained(&mut c, &names, Duration::from_secs(30)));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    consumer.join().unwrap();
    assert!(d.wait_for_line("\"resumed\"", Duration::from_secs(5)));
    d.terminate_ok();
    let taken = Names {
        processing: consumed,
        ..names.clone()
    };
    assert_accounted(&outcome(&mut c, &taken), &w, &taken, true, true);
}
