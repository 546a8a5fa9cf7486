//! The HTTP probes, the metrics endpoint and the periodic jobs, in process, against a real
//! redis-server: readiness follows Redis going away and coming back within 2 s, /metrics
//! shows the list lengths, the heartbeat registers the replica, the stats line and scheduled mode
//! tick.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch_processor::daemon::context::Context;
use batch_processor::daemon::jobs::daemon_scheduler;
use batch_processor::mover::allowance::BatchAllowance;
use batch_processor::redis::connection::Connector;
use batch_processor::redis::keys::Keys;
use batch_processor::settings;
use batch_processor::telemetry::health::Health;
use batch_processor::telemetry::http::{self, HttpError};
use batch_processor::telemetry::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

/// The HTTP server and the daemon's scheduler running against a private redis-server.
struct Rig {
    server: RedisServer,
    names: Names,
    ctx: Context,
    addr: SocketAddr,
    shutdown: CancellationToken,
    http: JoinHandle<Result<(), HttpError>>,
    jobs: JoinHandle<()>,
}

impl Rig {
    async fn start(extra: &[(&str, &str)]) -> Rig {
        let server = RedisServer::start();
        let names = Names::new();
        let port = server.port.to_string();
        let mut env = vec![
            ("REDIS_PORT", port.as_str()),
            ("REDIS_RAW_DATA_QUEUE", names.source.as_str()),
            ("REDIS_PROCESSING_QUEUE", names.processing.as_str()),
            ("REDIS_DEAD_LETTER_QUEUE", names.dead_letter.as_str()),
            ("REDIS_KEY_PREFIX", names.key_prefix.as_str()),
            ("REDIS_HTTP_ADDR", "127.0.0.1:0"),
        ];
        env.extend_from_slice(extra);
        let settings = settings::load(&env, None).expect("settings");
        let ctx = Context {
            connector: Connector::new(&settings.redis).expect("connector"),
            keys: Keys::new(&settings.replica.key_prefix, &settings.queues.sources),
            allowance: Some(BatchAllowance::new()),
            settings: Arc::new(settings),
            metrics: Metrics::new(),
            health: Health::default(),
            started_at: chrono::Utc::now(),
        };
        let shutdown = CancellationToken::new();
        let listener = http::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let http = tokio::spawn(http::serve(
            listener,
            ctx.health.clone(),
            ctx.metrics.clone(),
            shutdown.clone(),
        ));
        let jobs = tokio::spawn(daemon_scheduler(ctx.clone()).run(shutdown.clone()));
        Rig {
            server,
            names,
            ctx,
            addr,
            shutdown,
            http,
            jobs,
        }
    }

    async fn get(&self, path: &str) -> Response {
        get(self.addr, path).await
    }

    /// Cancel, and check that both the server and the scheduler stop promptly.
    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(2), async {
            self.http.await.unwrap().expect("http ended cleanly");
            self.jobs.await.unwrap();
        })
        .await;
        assert!(stopped.is_ok(), "http and jobs stop within 2 s of shutdown");
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: String,
    body: String,
}

/// A minimal HTTP/1.1 GET, bounded so a hung server fails the test instead of hanging it.
async fn get(addr: SocketAddr, path: &str) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to http");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} answered within 2 s"));
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    Response {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// Poll `check` every 20 ms until it holds or `limit` passes; the time it took if it held.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const TWO_S: Duration = Duration::from_secs(2);

#[tokio::test]
async fn readiness_follows_redis_and_the_mover() {
    let mut rig = Rig::start(&[]).await;

    // Redis answers, but the mover has not started: not ready, and the body says why.
    let waited = within(TWO_S, async || {
        rig.get("/readyz").await.body == "not ready: mover not running"
    })
    .await;
    assert!(waited.is_some(), "{:?}", rig.get("/readyz").await);
    let r = rig.get("/readyz").await;
    assert_eq!(r.status, 503);

    let live = rig.get("/healthz").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok"));

    rig.ctx.health.set_mover_running(true);
    let r = rig.get("/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready"));

    // Redis goes away: not ready within 2 s, still alive.
    rig.server.kill();
    let waited = within(TWO_S, async || rig.get("/readyz").await.status == 503).await;
    assert!(waited.is_some(), "readyz turned 503 within 2 s");
    let r = rig.get("/readyz").await;
    assert_eq!(r.body, "not ready: redis unreachable");
    let live = rig.get("/healthz").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok"));
    // The failed probes were counted by kind.
    let metrics = rig.get("/metrics").await.body;
    assert!(
        metrics.contains("batch_processor_redis_errors_total{kind=\"io\"}"),
        "{metrics}"
    );

    // Redis comes back: ready within 2 s.
    rig.server.restart();
    let waited = within(TWO_S, async || rig.get("/readyz").await.status == 200).await;
    assert!(waited.is_some(), "readyz turned 200 within 2 s");
    assert_eq!(rig.get("/readyz").await.body, "ready");

    // The mover stops: not ready again at once (no Redis involved).
    rig.ctx.health.set_mover_running(false);
    let r = rig.get("/readyz").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "not ready: mover not running")
    );

    rig.stop().await;
}

#[tokio::test]
async fn a_silent_redis_turns_readiness_off_without_hanging() {
    let rig = Rig::start(&[]).await;
    rig.ctx.health.set_mover_running(true);
    assert!(
        within(TWO_S, async || rig.get("/readyz").await.status == 200)
            .await
            .is_some()
    );
    // SIGSTOP: connections stay open but nothing answers.
    rig.server.pause();
    let waited = within(TWO_S, async || rig.get("/readyz").await.status == 503).await;
    rig.server.resume();
    assert!(
        waited.is_some(),
        "readyz turned 503 within 2 s of Redis going silent"
    );
    let metrics = rig.get("/metrics").await.body;
    assert!(
        metrics.contains("batch_processor_redis_errors_total{kind=\"timeout\"}"),
        "{metrics}"
    );
    assert!(
        within(TWO_S, async || rig.get("/readyz").await.status == 200)
            .await
            .is_some()
    );
    rig.stop().await;
}

#[tokio::test]
async fn metrics_show_every_series_and_the_list_lengths() {
    let rig = Rig::start(&[]).await;
    let mut conn = rig.server.conn();
    let events: Vec<Vec<u8>> = (0..7).map(|i| event(i, 200)).collect();
    push_all(&mut conn, &rig.names.source, &events);
    push_all(&mut conn, &rig.names.processing, &events[..2]);
    push_all(&mut conn, &rig.names.dead_letter, &events[..3]);
    // What the mover records when it sends a batch.
    rig.ctx.metrics.messages.inc_by(5);
    rig.ctx.metrics.batches.inc();
    rig.ctx.metrics.batch_size.observe(5.0);
    rig.ctx.metrics.oldest_message_age.observe(0.25);

    let n = &rig.names;
    let expected = [
        format!("{} 7\n", queue_series("source", &n.source)),
        format!("{} 2\n", queue_series("processing", &n.processing)),
        format!("{} 3\n", queue_series("dead_letter", &n.dead_letter)),
    ];
    let waited = within(TWO_S, async || {
        let text = rig.get("/metrics").await.body;
        expected.iter().all(|line| text.contains(line.as_str()))
    })
    .await;
    let r = rig.get("/metrics").await;
    assert!(waited.is_some(), "{}", r.body);
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    for line in [
        "batch_processor_messages_total 5\n",
        "batch_processor_batches_total 1\n",
        "batch_processor_dead_letters_total 0\n",
        "batch_processor_batch_size_count 1\n",
        "batch_processor_batch_size_sum 5.0\n",
        "batch_processor_oldest_message_age_seconds_count 1\n",
        "# TYPE batch_processor_batch_size histogram\n",
        "# TYPE batch_processor_oldest_message_age_seconds histogram\n",
        "# TYPE batch_processor_queue_length gauge\n",
        "# TYPE batch_processor_redis_errors counter\n",
    ] {
        assert!(r.body.contains(line), "missing {line:?} in\n{}", r.body);
    }
    // Nothing failed against a healthy Redis: every error series is still at zero.
    let errors: Vec<&str> = r
        .body
        .lines()
        .filter(|l| l.starts_with("batch_processor_redis_errors_total{"))
        .collect();
    assert!(
        errors.iter().any(|l| l.contains("kind=\"io\"")),
        "{}",
        r.body
    );
    assert!(errors.iter().all(|l| l.ends_with(" 0")), "{}", r.body);

    // The gauge follows the list.
    let _: i64 = redis::cmd("RPOP")
        .arg(&rig.names.source)
        .arg(4)
        .query::<Vec<Vec<u8>>>(&mut conn)
        .map(|v| v.len() as i64)
        .unwrap();
    let waited = within(TWO_S, async || {
        rig.get("/metrics")
            .await
            .body
            .contains(&format!("{} 3\n", queue_series("source", &n.source)))
    })
    .await;
    assert!(waited.is_some());

    assert_eq!(rig.get("/nope").await.status, 404);
    // An idle client (a scraper's kept-alive connection) does not hold up shutdown.
    let _idle = TcpStream::connect(rig.addr).await.unwrap();
    rig.stop().await;
}

#[tokio::test]
async fn heartbeat_registers_the_replica() {
    let rig = Rig::start(&[
        ("REDIS_CONSUMER_NAME", "replica-a"),
        ("REDIS_LEASE_TTL", "0.6"),
    ])
    .await;
    let keys = &rig.ctx.keys;
    let mut conn = rig.server.conn();
    let now_ms = chrono::Utc::now().timestamp_millis();
    // A replica last seen two hours ago is dropped; one seen ten minutes ago is kept.
    let _: i64 = redis::cmd("ZADD")
        .arg(keys.replicas())
        .arg(now_ms - 2 * 3600 * 1000)
        .arg("ghost")
        .arg(now_ms - 600 * 1000)
        .arg("recent")
        .query(&mut conn)
        .unwrap();

    let hash_key = keys.replica("replica-a");
    let mut hash = std::collections::HashMap::<String, String>::new();
    let waited = within(TWO_S, async || {
        hash = redis::cmd("HGETALL")
            .arg(&hash_key)
            .query(&mut conn)
            .unwrap();
        !hash.is_empty()
    })
    .await;
    assert!(waited.is_some(), "the heartbeat wrote {hash_key}");
    assert_eq!(hash["consumer"], "replica-a");
    assert_eq!(
        hash["host"],
        gethostname::gethostname().to_string_lossy().as_ref()
    );
    assert_eq!(hash["pid"], std::process::id().to_string());
    assert_eq!(
        hash["started_at"],
        batch_processor::envelope::format_timestamp(rig.ctx.started_at)
    );
    assert_eq!(hash["holds_lease"], "0");
    assert_eq!(hash["messages"], "0");
    assert_eq!(hash["batches"], "0");
    assert_eq!(hash["dead_letters"], "0");
    assert_eq!(hash["rate"].parse::<f64>().unwrap(), 0.0);
    let beat_ms: i64 = hash["heartbeat_at_ms"].parse().unwrap();
    assert!(beat_ms >= now_ms - 1000, "{beat_ms} vs {now_ms}");

    // The hash expires after 3 x lease_ttl unless renewed.
    let pttl: i64 = redis::cmd("PTTL").arg(&hash_key).query(&mut conn).unwrap();
    assert!(pttl > 0 && pttl <= 1800, "{pttl}");

    let members: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(keys.replicas())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut conn)
        .unwrap();
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["recent", "replica-a"]);
    assert!(members[1].1 >= beat_ms);

    // Taking the lease and moving messages shows in the next heartbeats.
    rig.ctx.metrics.lease_held.set(1);
    rig.ctx.metrics.messages.inc_by(4);
    rig.ctx.metrics.batches.inc_by(2);
    rig.ctx.metrics.dead_letters.inc();
    let waited = within(TWO_S, async || {
        hash = redis::cmd("HGETALL")
            .arg(&hash_key)
            .query(&mut conn)
            .unwrap();
        hash["holds_lease"] == "1"
    })
    .await;
    assert!(waited.is_some(), "{hash:?}");
    assert_eq!(hash["messages"], "4");
    assert_eq!(hash["batches"], "2");
    assert_eq!(hash["dead_letters"], "1");
    assert!(hash["heartbeat_at_ms"].parse::<i64>().unwrap() > beat_ms);
    rig.stop().await;
}

/// A writer that collects log output for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, message: &str) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }
}

// Current-thread runtime: every task runs on this thread, under the capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn stats_line_reports_totals_lengths_and_rate() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests run on other threads without a subscriber; recompute every callsite's
    // interest now that this one exists, so none stays cached as disabled.
    tracing::callsite::rebuild_interest_cache();

    let rig = Rig::start(&[("REDIS_STATS_INTERVAL", "0.2")]).await;
    let mut conn = rig.server.conn();
    let events: Vec<Vec<u8>> = (0..3).map(|i| event(i, 100)).collect();
    push_all(&mut conn, &rig.names.source, &events);
    push_all(&mut conn, &rig.names.dead_letter, &events[..1]);
    rig.ctx.metrics.messages.inc_by(10);
    rig.ctx.metrics.batches.inc_by(2);
    rig.ctx.metrics.dead_letters.inc();

    let waited = within(Duration::from_secs(3), async || {
        // Again while waiting: a call site first reached on another thread at the wrong
        // moment may have cached "disabled" after the rebuild above.
        tracing::callsite::rebuild_interest_cache();
        captured
            .lines("stats")
            .iter()
            .any(|l| l["fields"]["source_len"] == 3)
    })
    .await;
    assert!(waited.is_some(), "{:?}", captured.lines("stats"));
    let lines = captured.lines("stats");
    let line = &lines
        .iter()
        .find(|l| l["fields"]["source_len"] == 3)
        .unwrap()["fields"];
    assert_eq!(line["messages"], 10);
    assert_eq!(line["batches"], 2);
    assert_eq!(line["dead_letters"], 1);
    assert_eq!(line["processing_len"], 0);
    assert_eq!(line["dead_letter_len"], 1);
    assert_eq!(line["redis_reachable"], true);
    assert_eq!(lines[0]["level"], "INFO");
    // The first line covers the 10 messages; later lines, with nothing moved, say 0.
    assert!(
        lines[0]["fields"]["rate_per_s"].as_f64().unwrap() > 0.0,
        "{lines:?}"
    );
    let waited = within(TWO_S, async || captured.lines("stats").len() >= 3).await;
    assert!(waited.is_some());
    let lines = captured.lines("stats");
    assert_eq!(lines[2]["fields"]["rate_per_s"].as_f64(), Some(0.0));
    rig.stop().await;
}

#[tokio::test]
async fn beat_mode_grants_batches_every_tick() {
    let rig = Rig::start(&[
        ("REDIS_SCHEDULE", "0.3"),
        ("REDIS_MAX_BATCHES_PER_TICK", "2"),
    ])
    .await;
    let permits = rig.ctx.allowance.clone().unwrap();
    assert!(within(TWO_S, async || permits.available() == 2)
        .await
        .is_some());
    permits.spend(2);
    assert_eq!(permits.available(), 0);
    assert!(within(TWO_S, async || permits.available() == 2)
        .await
        .is_some());
    rig.stop().await;
}
