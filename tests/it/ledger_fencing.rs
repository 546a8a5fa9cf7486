//! Regression tests from the hostile review of the batch ledger (branch `review-ledger`):
//! delivery numbers never repeat (after `dlq replay`, or when an entry is made anew), an
//! entry never expires while its batch is in flight and an in-flight envelope without an
//! entry is requeued, a function that meets a key of the wrong type changes nothing, an ack
//! retried after a lost reply (under its ack id) counts once, and one list for processing
//! and dead letters is refused with the ledger on.

use std::collections::HashMap;
use std::time::Duration;

use batch_processor::ledger::library::{self, RecoverArgs};
use batch_processor::ledger::{Ack, AckReport, Claim, LedgerError, LedgerKeys};
use redis::aio::MultiplexedConnection;

use crate::harness::*;

/// One envelope of `n` messages made by the daemon with the ledger on (and `extra`), with a
/// claim timeout long enough to keep the daemon's own recovery out of the way.
struct Fixture {
    server: RedisServer,
    names: Names,
    env: Vec<(String, String)>,
    envelope: Vec<u8>,
    id: String,
    keys: LedgerKeys,
}

impl Fixture {
    fn new(n: u64, extra: &[(&str, &str)]) -> Self {
        let server = RedisServer::start();
        let names = Names::new();
        let mut conn = server.conn();
        let size = n.to_string();
        let mut all: Vec<(&str, &str)> = vec![("REDIS_BATCH_SIZE", size.as_str())];
        all.extend_from_slice(extra);
        let mut env = env_with(&server, &names, &all);
        env.extend(ledger_env(&names, "3600"));
        let messages: Vec<Vec<u8>> = (0..n).map(|i| event(i, 100)).collect();
        push_all(&mut conn, &names.source, &messages);
        let mut daemon = spawn_daemon(&env, &["run"]);
        assert!(wait_until(Duration::from_secs(15), || llen(
            &mut conn,
            &names.processing
        ) == 1));
        daemon.terminate_ok();
        let envelope = read_all(&mut conn, &names.processing).remove(0);
        let id = batch_processor::envelope::event_id_of(&envelope)
            .unwrap()
            .to_string();
        let keys = LedgerKeys::new(&ledger_prefix(&names));
        Fixture {
            server,
            names,
            env,
            envelope,
            id,
            keys,
        }
    }

    async fn conn(&self) -> MultiplexedConnection {
        redis::Client::open(self.server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn claim(&self, c: &mut MultiplexedConnection, worker: &str) -> Claim {
        library::claim(c, &self.keys, &self.names.processing, worker)
            .await
            .unwrap()
            .unwrap()
    }

    /// An ack of `completed` and `failed` more items under a new ack id.
    async fn ack(
        &self,
        c: &mut MultiplexedConnection,
        delivery: u64,
        completed: u64,
        failed: u64,
    ) -> Result<Ack, LedgerError> {
        let ack_id = uuid::Uuid::new_v4().to_string();
        self.ack_as(c, delivery, completed, failed, &ack_id).await
    }

    /// The same under `ack_id`.
    async fn ack_as(
        &self,
        c: &mut MultiplexedConnection,
        delivery: u64,
        completed: u64,
        failed: u64,
        ack_id: &str,
    ) -> Result<Ack, LedgerError> {
        let report = AckReport {
            event_id: &self.id,
            delivery,
            completed,
            failed,
            ack_id,
        };
        library::ack(c, &self.keys, &report).await
    }

    fn recover_args(&self, max: u32, timeout: Duration) -> RecoverArgs<'_> {
        RecoverArgs {
            processing: &self.names.processing,
            dead_letter: &self.names.dead_letter,
            claim_timeout: timeout,
            max_deliveries: max,
            failed_at: "2026-01-01T00:00:00.000000+00:00",
            limit: 100,
        }
    }

    /// Recovery as if every worker's heartbeat had expired, with `max` deliveries allowed.
    async fn recover_now(
        &self,
        c: &mut MultiplexedConnection,
        max: u32,
    ) -> Result<library::Recovered, LedgerError> {
        library::recover(c, &self.keys, self.recover_args(max, Duration::ZERO)).await
    }

    fn entry(&self) -> HashMap<String, String> {
        ledger_entry(&mut self.server.conn(), &self.names, &self.id)
    }

    fn ttl(&self) -> i64 {
        self.ttl_of(&self.keys.batch(&self.id))
    }

    fn ttl_of(&self, key: &str) -> i64 {
        redis::cmd("TTL")
            .arg(key)
            .query(&mut self.server.conn())
            .unwrap()
    }
}

fn refusal<T: std::fmt::Debug>(r: Result<T, LedgerError>) -> String {
    r.unwrap_err()
        .refusal()
        .unwrap_or("not a refusal")
        .to_owned()
}

/// After `dlq replay` the next claim gets a delivery number never handed out before, so the
/// presumed-dead worker's ack is refused and leaves the new holder's list alone.
#[tokio::test]
async fn delivery_numbers_never_repeat_after_a_dlq_replay() {
    let f = Fixture::new(3, &[]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    let a = f.claim(&mut c, "A").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = f.recover_now(&mut c, 1).await.unwrap();
    assert_eq!(r.dead, 1);
    let replay = run_cli(&f.env, &["dlq", "replay"]);
    assert_eq!(replay.code, Some(0), "{}", replay.stderr);
    let b = f.claim(&mut c, "B").await;
    assert!(
        b.delivery > a.delivery,
        "{} after {}",
        b.delivery,
        a.delivery
    );
    // Replay gives the batch REDIS_MAX_DELIVERIES more deliveries.
    assert_eq!(f.entry()["deliveries"], "1");
    let before = f.entry();
    let stale = f.ack(&mut c, a.delivery, 3, 0).await;
    assert_eq!(refusal(stale), "BATCH_STALE");
    assert_eq!(f.entry(), before, "a refused ack changed the entry");
    assert_eq!(
        read_all(&mut conn, &f.keys.inflight("B")),
        vec![f.envelope.clone()]
    );
    let done = f.ack(&mut c, b.delivery, 3, 0).await.unwrap();
    assert_eq!(done.status.as_str(), "completed");
}

/// An entry made anew (it expired, or was deleted, while the batch was queued again) does
/// not restart the delivery numbers either.
#[tokio::test]
async fn delivery_numbers_never_repeat_when_an_entry_is_made_anew() {
    let f = Fixture::new(3, &[]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    let a = f.claim(&mut c, "A").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = f.recover_now(&mut c, 5).await.unwrap();
    assert_eq!(r.requeued, 1);
    redis::cmd("DEL")
        .arg(f.keys.batch(&f.id))
        .query::<()>(&mut conn)
        .unwrap();
    let b = f.claim(&mut c, "B").await;
    assert!(
        b.delivery > a.delivery,
        "{} after {}",
        b.delivery,
        a.delivery
    );
    assert_eq!(f.entry()["total"], "3");
    let stale = f.ack(&mut c, a.delivery, 3, 0).await;
    assert_eq!(refusal(stale), "BATCH_STALE");
    assert_eq!(llen(&mut conn, &f.keys.inflight("B")), 1);
    let done = f.ack(&mut c, b.delivery, 3, 0).await;
    assert_eq!(done.unwrap().status.as_str(), "completed");
}

/// The entry and its ack ids have no expiry while processing, so a healthy worker's ack
/// after longer than the TTL lands; finishing re-arms the expiry of both.
#[tokio::test]
async fn an_entry_never_expires_while_its_batch_is_in_flight() {
    let f = Fixture::new(3, &[("REDIS_BATCH_STATE_TTL", "1")]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    assert!(f.ttl() > 0);
    let a = f.claim(&mut c, "A").await;
    assert_eq!(f.ttl(), -1, "an entry in flight must not expire");
    f.ack(&mut c, a.delivery, 1, 0).await.unwrap();
    let acks = f.keys.acks(&f.id);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(library::heartbeat(&mut c, &f.keys, "A").await.unwrap(), 1);
    }
    assert_eq!(f.ttl_of(&acks), -1, "ack ids in flight must not expire");
    let done = f.ack(&mut c, a.delivery, 2, 0).await.unwrap();
    assert_eq!(done.status.as_str(), "completed");
    assert_eq!(llen(&mut conn, &f.keys.inflight("A")), 0);
    assert!((0..=1).contains(&f.ttl()), "ttl {}", f.ttl());
    assert!(
        (0..=1).contains(&f.ttl_of(&acks)),
        "ttl {}",
        f.ttl_of(&acks)
    );
}

/// An in-flight envelope whose entry is gone (deleted, evicted, or expired under an earlier
/// version) is requeued by recovery even though its worker is alive: nothing could ever ack
/// it out of the list. The worker's late ack is then refused as stale.
#[tokio::test]
async fn an_in_flight_envelope_without_an_entry_is_requeued_while_its_worker_lives() {
    let f = Fixture::new(3, &[]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    let a = f.claim(&mut c, "A").await;
    redis::cmd("DEL")
        .arg(f.keys.batch(&f.id))
        .query::<()>(&mut conn)
        .unwrap();
    let lost = f.ack(&mut c, a.delivery, 3, 0).await;
    assert_eq!(refusal(lost), "BATCH_UNKNOWN");
    assert_eq!(library::heartbeat(&mut c, &f.keys, "A").await.unwrap(), 1);
    let r = library::recover(
        &mut c,
        &f.keys,
        f.recover_args(5, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert_eq!((r.requeued, r.dead, r.workers), (1, 0, 0));
    assert_eq!(llen(&mut conn, &f.keys.inflight("A")), 0);
    assert_eq!(
        read_all(&mut conn, &f.names.processing),
        vec![f.envelope.clone()]
    );
    let entry = f.entry();
    assert_eq!(
        (entry["status"].as_str(), entry["total"].as_str()),
        ("queued", "3")
    );
    let late = f.ack(&mut c, a.delivery, 3, 0).await;
    assert_eq!(refusal(late), "BATCH_STALE");
    // A live worker's own batches are left alone.
    let b = f.claim(&mut c, "B").await;
    let r = library::recover(
        &mut c,
        &f.keys,
        f.recover_args(5, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert_eq!(r.requeued, 0);
    let done = f.ack(&mut c, b.delivery, 3, 0).await;
    assert_eq!(done.unwrap().status.as_str(), "completed");
}

/// A dead-letter key of the wrong type makes recovery refuse before any write: the envelope
/// stays in the dead worker's list and is recovered once the key is fixed.
#[tokio::test]
async fn recovery_meeting_a_wrong_type_key_changes_nothing() {
    let f = Fixture::new(3, &[]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    redis::cmd("SET")
        .arg(&f.names.dead_letter)
        .arg("oops")
        .query::<()>(&mut conn)
        .unwrap();
    f.claim(&mut c, "A").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let entry = f.entry();
    let r = f.recover_now(&mut c, 1).await;
    assert_eq!(refusal(r), "BATCH_WRONGTYPE");
    assert_eq!(
        read_all(&mut conn, &f.keys.inflight("A")),
        vec![f.envelope.clone()]
    );
    assert_eq!(f.entry(), entry);
    redis::cmd("DEL")
        .arg(&f.names.dead_letter)
        .query::<()>(&mut conn)
        .unwrap();
    let r = f.recover_now(&mut c, 1).await.unwrap();
    assert_eq!((r.dead, r.workers), (1, 1));
    assert_eq!(llen(&mut conn, &f.names.dead_letter), 1);
    assert_eq!(llen(&mut conn, &f.keys.inflight("A")), 0);
}

/// Claim and ack meeting a protocol key of the wrong type refuse before any write too.
#[tokio::test]
async fn claim_and_ack_meeting_a_wrong_type_key_change_nothing() {
    let f = Fixture::new(3, &[]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    let set = |conn: &mut redis::Connection, key: &str| {
        redis::cmd("SET")
            .arg(key)
            .arg("oops")
            .query::<()>(conn)
            .unwrap()
    };
    set(&mut conn, &f.keys.totals());
    let claim = library::claim(&mut c, &f.keys, &f.names.processing, "A").await;
    assert_eq!(refusal(claim), "BATCH_WRONGTYPE");
    assert_eq!(
        read_all(&mut conn, &f.names.processing),
        vec![f.envelope.clone()]
    );
    assert_eq!(f.entry()["status"], "queued");
    redis::cmd("DEL")
        .arg(f.keys.totals())
        .query::<()>(&mut conn)
        .unwrap();
    let a = f.claim(&mut c, "A").await;
    set(&mut conn, &f.keys.finished());
    let entry = f.entry();
    let ack = f.ack(&mut c, a.delivery, 3, 0).await;
    assert_eq!(refusal(ack), "BATCH_WRONGTYPE");
    assert_eq!(f.entry(), entry);
    assert_eq!(llen(&mut conn, &f.keys.inflight("A")), 1);
}

/// An ack carries an id: the same ack retried after a lost reply (the same id) counts once
/// and gets the same answer, also after it finished the batch; an id reused for another ack
/// is refused; over-reporting is refused; `batch ack --ack-id` retries the same way.
#[tokio::test]
async fn an_ack_retried_after_a_lost_reply_counts_once() {
    let f = Fixture::new(3, &[]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    let a = f.claim(&mut c, "A").await;
    for _ in 0..2 {
        let first = f.ack_as(&mut c, a.delivery, 1, 0, "ack-1").await.unwrap();
        assert_eq!((first.status.as_str(), first.completed), ("processing", 1));
    }
    let reused = f.ack_as(&mut c, a.delivery, 2, 0, "ack-1").await;
    assert_eq!(refusal(reused), "BATCH_ARGS");
    let over = f.ack(&mut c, a.delivery, 2, 1).await;
    assert_eq!(refusal(over), "BATCH_OVER");
    assert_eq!(
        (
            f.entry()["completed"].as_str(),
            f.entry()["failed"].as_str()
        ),
        ("1", "0")
    );
    let delivery = a.delivery.to_string();
    let ack = |args: &[&str]| {
        let mut all = vec![
            "batch",
            "ack",
            f.id.as_str(),
            "--delivery",
            delivery.as_str(),
        ];
        all.extend_from_slice(args);
        run_cli(&f.env, &all)
    };
    for _ in 0..2 {
        let last = ack(&["--completed", "1", "--failed", "1", "--ack-id", "ack-2"]);
        assert_eq!(last.code, Some(0), "{}", last.stderr);
        assert!(
            last.stdout
                .contains("completed_with_failures (2 completed, 1 failed of 3; ack id ack-2)"),
            "{}",
            last.stdout
        );
    }
    // The first ack retried late still gets its own answer and adds nothing; a new ack
    // after the finish is stale.
    let late = f.ack_as(&mut c, a.delivery, 1, 0, "ack-1").await.unwrap();
    assert_eq!((late.status.as_str(), late.completed), ("processing", 1));
    let after = ack(&["--completed", "1"]);
    assert_eq!(after.code, Some(1));
    assert!(after.stderr.contains("BATCH_STALE"), "{}", after.stderr);
    let totals: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(f.keys.totals())
        .query(&mut conn)
        .unwrap();
    assert_eq!((totals["items_completed"], totals["items_failed"]), (2, 1));
    assert_eq!(totals["completed_with_failures"], 1);
}

/// An ack-id key of the wrong type is refused before any write, like every protocol key.
#[tokio::test]
async fn an_ack_meeting_a_wrong_type_ack_id_key_changes_nothing() {
    let f = Fixture::new(3, &[]);
    let mut c = f.conn().await;
    let mut conn = f.server.conn();
    let a = f.claim(&mut c, "A").await;
    redis::cmd("SET")
        .arg(f.keys.acks(&f.id))
        .arg("oops")
        .query::<()>(&mut conn)
        .unwrap();
    let entry = f.entry();
    assert_eq!(
        refusal(f.ack(&mut c, a.delivery, 3, 0).await),
        "BATCH_WRONGTYPE"
    );
    assert_eq!(f.entry(), entry);
    assert_eq!(llen(&mut conn, &f.keys.inflight("A")), 1);
}

/// With the ledger on, recovery would put a dead batch back in line if the dead-letter list
/// were the processing queue: the daemon refuses to start (exit 2, naming the variables).
#[test]
fn one_list_for_processing_and_dead_letters_is_refused_with_the_ledger_on() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut env = env_with(
        &server,
        &names,
        &[("REDIS_DEAD_LETTER_QUEUE", names.processing.as_str())],
    );
    env.extend(ledger_env(&names, "60"));
    let out = run_cli(&env, &["run"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    for var in [
        "REDIS_DEAD_LETTER_QUEUE",
        "REDIS_PROCESSING_QUEUE",
        "REDIS_BATCH_LEDGER",
    ] {
        assert!(out.stderr.contains(var), "{var}: {}", out.stderr);
    }
}
