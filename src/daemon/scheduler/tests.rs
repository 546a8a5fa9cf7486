use super::*;

/// Tests that run a scheduler take turns: one of them captures the job span, and tracing
/// caches whether a span is enabled per call site, process-wide; a call site first reached
/// by another test's thread without a subscriber at the wrong moment stays disabled.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Shared record of what a test job did.
#[derive(Clone, Default)]
struct Log {
    starts: Arc<Mutex<Vec<Duration>>>,
    ends: Arc<Mutex<Vec<Duration>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Log {
    fn starts(&self) -> Vec<Duration> {
        self.starts.lock().unwrap().clone()
    }
    fn ends(&self) -> Vec<Duration> {
        self.ends.lock().unwrap().clone()
    }
}

struct TestJob {
    name: &'static str,
    period: Duration,
    at_start: bool,
    takes: Vec<Duration>,
    fails: bool,
    origin: Instant,
    log: Log,
    dropped_mid_run: Arc<AtomicBool>,
}

impl TestJob {
    fn new(name: &'static str, period_ms: u64, origin: Instant) -> Self {
        TestJob {
            name,
            period: Duration::from_millis(period_ms),
            at_start: true,
            takes: Vec::new(),
            fails: false,
            origin,
            log: Log::default(),
            dropped_mid_run: Arc::new(AtomicBool::new(false)),
        }
    }
    /// Durations of the successive runs; the last one repeats.
    fn taking(mut self, ms: &[u64]) -> Self {
        self.takes = ms.iter().map(|m| Duration::from_millis(*m)).collect();
        self
    }
}

/// Sets its flag when dropped before `disarm`.
struct DropFlag(Arc<AtomicBool>, bool);
impl Drop for DropFlag {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

impl Job for TestJob {
    fn name(&self) -> &'static str {
        self.name
    }
    fn period(&self) -> Duration {
        self.period
    }
    fn run_at_start(&self) -> bool {
        self.at_start
    }
    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let n = self.log.starts.lock().unwrap().len();
            self.log.starts.lock().unwrap().push(self.origin.elapsed());
            let now = self.log.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.log.max_running.fetch_max(now, Ordering::SeqCst);
            let mut guard = DropFlag(self.dropped_mid_run.clone(), true);
            let take = self
                .takes
                .get(n)
                .or(self.takes.last())
                .copied()
                .unwrap_or_default();
            tokio::time::sleep(take).await;
            guard.1 = false;
            self.log.running.fetch_sub(1, Ordering::SeqCst);
            self.log.ends.lock().unwrap().push(self.origin.elapsed());
            if self.fails {
                Err(format!("boom #{n}").into())
            } else {
                Ok(())
            }
        })
    }
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}

async fn run_for(scheduler: Scheduler, total: Duration) {
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(scheduler.run(cancel.clone()));
    tokio::time::sleep(total).await;
    cancel.cancel();
    handle.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn runs_on_its_period() {
    let _serial = SERIAL.lock().await;
    let origin = Instant::now();
    let fast = TestJob::new("fast", 1000, origin);
    let mut late = TestJob::new("late", 1500, origin);
    late.at_start = false;
    let (fast_log, late_log) = (fast.log.clone(), late.log.clone());
    let mut s = Scheduler::new();
    s.add(fast);
    s.add(late);
    assert_eq!(s.job_names(), vec!["fast", "late"]);
    run_for(s, Duration::from_millis(3500)).await;
    assert_eq!(fast_log.starts(), ms(&[0, 1000, 2000, 3000]));
    assert_eq!(late_log.starts(), ms(&[1500, 3000]));
}

#[tokio::test(start_paused = true)]
async fn a_slow_job_never_overlaps_itself() {
    let _serial = SERIAL.lock().await;
    let origin = Instant::now();
    // Period 1 s, each run takes 2.5 s.
    let job = TestJob::new("slow", 1000, origin).taking(&[2500]);
    let log = job.log.clone();
    let mut s = Scheduler::new();
    s.add(job);
    run_for(s, Duration::from_millis(8000)).await;
    assert_eq!(log.max_running.load(Ordering::SeqCst), 1);
    // Each run starts right when the previous one ends: overdue ticks fire once, not
    // once per missed period.
    assert_eq!(log.starts(), ms(&[0, 2500, 5000, 7500]));
    assert_eq!(log.ends(), ms(&[2500, 5000, 7500]));
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_are_coalesced_after_a_stall() {
    let _serial = SERIAL.lock().await;
    let origin = Instant::now();
    // One run of 10.3 s (a stall) in a 1 s period, then quick runs.
    let job = TestJob::new("stalled", 1000, origin).taking(&[10_300, 0]);
    let log = job.log.clone();
    let mut s = Scheduler::new();
    s.add(job);
    run_for(s, Duration::from_millis(12_500)).await;
    // Ten missed ticks give one run at 10.3 s, then the period resumes from there.
    assert_eq!(log.starts(), ms(&[0, 10_300, 11_300, 12_300]));
}

#[tokio::test(start_paused = true)]
async fn a_frozen_clock_jump_gives_one_run_not_a_burst() {
    let _serial = SERIAL.lock().await;
    let origin = Instant::now();
    let job = TestJob::new("jump", 1000, origin);
    let log = job.log.clone();
    let mut s = Scheduler::new();
    s.add(job);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(s.run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The whole process stalls for 20 s (as under SIGSTOP): no timer fires meanwhile.
    tokio::time::advance(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cancel.cancel();
    handle.await.unwrap();
    assert_eq!(log.starts(), ms(&[0, 20_500, 21_500]));
}

/// A writer that collects formatted log output for assertions.
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

#[tokio::test(start_paused = true)]
async fn a_failing_job_stays_scheduled_and_others_are_unaffected() {
    let _serial = SERIAL.lock().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests run on other threads without a subscriber; recompute every callsite's
    // interest now that this one exists, so none stays cached as disabled.
    tracing::callsite::rebuild_interest_cache();

    let origin = Instant::now();
    let mut bad = TestJob::new("bad", 1000, origin);
    bad.fails = true;
    let good = TestJob::new("good", 1000, origin).taking(&[100]);
    let (bad_log, good_log) = (bad.log.clone(), good.log.clone());
    let mut s = Scheduler::new();
    s.add(bad);
    s.add(good);
    run_for(s, Duration::from_millis(4500)).await;
    assert_eq!(bad_log.starts(), ms(&[0, 1000, 2000, 3000, 4000]));
    assert_eq!(good_log.starts(), ms(&[0, 1000, 2000, 3000, 4000]));
    assert_eq!(good_log.ends(), ms(&[100, 1100, 2100, 3100, 4100]));

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let failed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["fields"]["message"] == "job failed")
        .collect();
    // Every failure is logged, with the job's name, the error and the streak; only
    // the 1st, 2nd and 4th at warn.
    assert_eq!(failed.len(), 5, "{text}");
    for (i, line) in failed.iter().enumerate() {
        assert_eq!(line["fields"]["job"], "bad");
        assert_eq!(line["fields"]["error"], format!("boom #{i}"));
        assert_eq!(line["fields"]["consecutive_failures"], i as u64 + 1);
        assert_eq!(line["span"]["name"], "job");
        assert_eq!(line["span"]["job"], "bad");
        let level = if [0, 1, 3].contains(&i) {
            "WARN"
        } else {
            "DEBUG"
        };
        assert_eq!(line["level"], level, "{line}");
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_a_run_in_progress_at_once() {
    let _serial = SERIAL.lock().await;
    let origin = Instant::now();
    let stuck = TestJob::new("stuck", 1000, origin).taking(&[3_600_000]);
    let idle = TestJob::new("idle", 60_000, origin);
    let (stuck_log, dropped) = (stuck.log.clone(), stuck.dropped_mid_run.clone());
    let mut s = Scheduler::new();
    s.add(stuck);
    s.add(idle);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(s.run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cancelled_at = origin.elapsed();
    cancel.cancel();
    handle.await.unwrap();
    // No time passed between the cancel and the return: nothing waited for the hour.
    assert_eq!(origin.elapsed(), cancelled_at);
    assert_eq!(stuck_log.starts(), ms(&[0]));
    assert!(stuck_log.ends().is_empty());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the run in progress was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn no_jobs_waits_for_cancel() {
    let _serial = SERIAL.lock().await;
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(Scheduler::new().run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!handle.is_finished());
    cancel.cancel();
    handle.await.unwrap();
}
