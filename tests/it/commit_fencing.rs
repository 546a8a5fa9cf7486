//! The commit transaction against a real Redis: it hands messages over whole or not at all,
//! refuses a stale lease value (fencing), refuses a commit whose predecessor did not run
//! (the lease chain) or whose legacy lease an earlier release took, refuses a commit whose
//! tail was changed by a foreign writer after the read, and undoes its pushes when one of
//! them failed. With the batch ledger on, a commit writes one entry per envelope, and a refused
//! commit none.

use std::time::{Duration, Instant};

use batch_processor::mover::commit::{Commit, CommitError, Read, Request};
use batch_processor::mover::plan::{self, Limits, Peeked, Runs};
use batch_processor::redis::connection::StreamTarget;
use batch_processor::redis::keys::Keys;
use batch_processor::redis::raw::{Item, RawConnection};
use batch_processor::settings::{LedgerSettings, Queues};

use batch_processor::message::Profile;

use crate::harness::*;

const PROFILE: Profile = Profile {
    max_bytes: 1 << 20,
    max_depth: 64,
};

struct Fixture {
    server: RedisServer,
    queues: Queues,
    keys: Keys,
    /// `REDIS_MAX_PROCESSING_QUEUE_LENGTH` for the commits.
    max_processing: Option<usize>,
    /// The batch ledger, when a test turns it on.
    ledger: Option<LedgerSettings>,
}

impl Fixture {
    fn new() -> Self {
        Self::with_sources(1)
    }

    /// A fixture whose commits take from `n` source lists (highest priority first).
    fn with_sources(n: usize) -> Self {
        let server = RedisServer::start();
        let names = Names::new();
        let sources = names.sources(n);
        Fixture {
            keys: Keys::new(&names.key_prefix, &sources),
            queues: Queues {
                sources,
                processing: names.processing,
                dead_letter: names.dead_letter,
            },
            server,
            max_processing: None,
            ledger: None,
        }
    }

    /// The first source list.
    fn source(&self) -> &str {
        &self.queues.sources[0]
    }

    /// The mover's kind of request connection.
    async fn conn(&self) -> RawConnection {
        let info = redis::IntoConnectionInfo::into_connection_info(self.server.url()).unwrap();
        let target = StreamTarget {
            addr: info.addr().clone(),
            redis: info.redis_settings().clone(),
            tls_root_cert: None,
            tls_client_cert: None,
            connect_timeout: Duration::from_secs(5),
        };
        RawConnection::connect(&target, Duration::from_secs(5))
            .await
            .unwrap()
    }

    /// Peek `count` items at the tail, plan whole batches of 2 (partial flushed), and send
    /// the commit carrying `before` → `after`.
    async fn commit(&self, count: usize, before: &str, after: &str) -> Result<(), CommitError> {
        self.commit_after(count, before, after, |_| {}).await
    }

    /// [`Fixture::commit`], with `meddle` changing the source between the read and the
    /// commit, as a foreign writer would.
    async fn commit_after(
        &self,
        count: usize,
        before: &str,
        after: &str,
        meddle: impl FnOnce(&mut redis::Connection),
    ) -> Result<(), CommitError> {
        self.commit_runs(&[count], before, after, meddle).await
    }

    /// Peek `counts[k]` items at the tail of source `k`, then as [`Fixture::commit_after`]:
    /// one commit over the runs, highest priority first.
    async fn commit_runs(
        &self,
        counts: &[usize],
        before: &str,
        after: &str,
        meddle: impl FnOnce(&mut redis::Connection),
    ) -> Result<(), CommitError> {
        let mut sync = self.server.conn();
        let tails: Vec<Vec<Peeked>> = counts
            .iter()
            .zip(&self.queues.sources)
            .map(|(&count, source)| {
                read_all(&mut sync, source)
                    .into_iter()
                    .take(count)
                    .map(|b| Peeked::new(b, PROFILE, Instant::now()))
                    .collect()
            })
            .collect();
        let runs = Runs::new(tails.iter().map(Vec::as_slice).collect());
        meddle(&mut sync);
        let plan = plan::plan(
            &runs,
            Limits {
                batch_size: 2,
                max_envelopes: 100,
                max_lower_envelopes: usize::MAX,
                flush_seen_by: Some(Instant::now()),
                max_envelope_bytes: plan::MAX_ENVELOPE_BYTES,
                max_commit_bytes: plan::MAX_COMMIT_BYTES,
                max_value_bytes: 512 << 20,
            },
            &self.queues,
            "2026-01-01T00:00:00.000000+00:00",
        );
        let request = Request::new(
            &self.keys,
            &self.queues,
            Commit {
                plan: &plan,
                pending: &runs,
                lease_before: before,
                lease_after: after,
                now_ms: 1,
                max_processing: self.max_processing,
                replica_ack: None,
                ledger: self.ledger.as_ref(),
            },
            &[],
        );
        let reads = request
            .send(&mut self.conn().await, &self.queues)
            .await?
            .reads;
        assert!(reads.is_empty(), "a commit without reads read {reads:?}");
        Ok(())
    }

    /// Set every source lease and legacy lease, as an acquisition does.
    fn set_lease(&self, value: &str) {
        for key in self.keys.leases() {
            self.set(key, value);
        }
    }

    fn set(&self, key: &str, value: &str) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut self.server.conn())
            .unwrap();
    }

    fn lease(&self) -> Option<String> {
        redis::cmd("GET")
            .arg(self.keys.lease())
            .query(&mut self.server.conn())
            .unwrap()
    }
}

fn seed(f: &Fixture) {
    let mut c = f.server.conn();
    let msgs = vec![
        event(0, 80),
        b"bad".to_vec(),
        event(1, 80),
        event(2, 80),
        event(3, 80),
    ];
    push_all(&mut c, f.source(), &msgs);
}

#[tokio::test]
async fn a_commit_hands_over_whole_and_moves_the_lease_chain() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    f.commit(5, "me/t.0", "me/t.1").await.expect("commit");
    let mut c = f.server.conn();
    assert_eq!(llen(&mut c, f.source()), 0);
    let seqs: Vec<u64> = read_all(&mut c, &f.queues.processing)
        .iter()
        .flat_map(|e| batch_raw(e))
        .map(|m| seq_of(&m))
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert_eq!(read_all(&mut c, &f.queues.dead_letter).len(), 1);
    assert_eq!(f.lease().as_deref(), Some("me/t.1"));
    let stats: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(f.keys.stats())
        .query(&mut c)
        .unwrap();
    assert_eq!(stats["messages"], 4);
    assert_eq!(stats["batches"], 2);
    assert_eq!(stats["dead_letters"], 1);
}

#[tokio::test]
async fn a_stale_lease_value_is_refused_and_nothing_changes() {
    let f = Fixture::new();
    seed(&f);
    // Another replica took over since this commit was built.
    f.set_lease("other/x.0");
    let err = f.commit(5, "me/t.0", "me/t.1").await.unwrap_err();
    assert!(matches!(err, CommitError::Fenced { .. }), "{err:?}");
    let mut c = f.server.conn();
    assert_eq!(llen(&mut c, f.source()), 5);
    assert_eq!(llen(&mut c, &f.queues.processing), 0);
    assert_eq!(llen(&mut c, &f.queues.dead_letter), 0);
    assert_eq!(f.lease().as_deref(), Some("other/x.0"));
    // No lease at all (it expired) is refused the same way.
    let _: () = redis::cmd("DEL").arg(f.keys.lease()).query(&mut c).unwrap();
    assert!(matches!(
        f.commit(5, "me/t.0", "me/t.1").await,
        Err(CommitError::Fenced { .. })
    ));
    assert_eq!(llen(&mut c, f.source()), 5);
    assert_eq!(llen(&mut c, &f.queues.processing), 0);
}

#[tokio::test]
async fn a_commit_whose_predecessor_did_not_run_is_refused() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    // The commit built after one that never ran expects the value that one would have left.
    let err = f.commit(2, "me/t.1", "me/t.2").await.unwrap_err();
    assert!(matches!(err, CommitError::Fenced { .. }), "{err:?}");
    let mut c = f.server.conn();
    assert_eq!(llen(&mut c, f.source()), 5);
    assert_eq!(llen(&mut c, &f.queues.processing), 0);
}

#[tokio::test]
async fn a_failed_push_undoes_the_other_and_keeps_the_source() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    let mut c = f.server.conn();
    // The processing list is not a list: its LPUSH fails inside the transaction.
    let _: () = redis::cmd("SET")
        .arg(&f.queues.processing)
        .arg("x")
        .query(&mut c)
        .unwrap();
    let err = f.commit(5, "me/t.0", "me/t.1").await.unwrap_err();
    match &err {
        CommitError::Refused { key, detail, .. } => {
            assert_eq!(key, &f.queues.processing);
            assert!(detail.starts_with("WRONGTYPE"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(llen(&mut c, f.source()), 5);
    // The dead letter pushed in the same transaction was taken back.
    assert_eq!(llen(&mut c, &f.queues.dead_letter), 0);
    assert_eq!(f.lease().as_deref(), Some("me/t.0"));
}

#[tokio::test]
async fn a_check_that_errors_undoes_the_pushes() {
    let f = Fixture::new();
    seed(&f);
    let mut c = f.server.conn();
    // The lease key holds a hash: GET on it raises WRONGTYPE inside the script.
    let _: () = redis::cmd("HSET")
        .arg(f.keys.lease())
        .arg("a")
        .arg("b")
        .query(&mut c)
        .unwrap();
    let err = f.commit(5, "me/t.0", "me/t.1").await.unwrap_err();
    assert!(matches!(err, CommitError::Refused { .. }), "{err:?}");
    assert_eq!(llen(&mut c, f.source()), 5);
    assert_eq!(llen(&mut c, &f.queues.processing), 0);
    assert_eq!(llen(&mut c, &f.queues.dead_letter), 0);
}

#[tokio::test]
async fn a_broken_stats_key_does_not_undo_a_done_commit() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    let mut c = f.server.conn();
    let _: () = redis::cmd("SET")
        .arg(f.keys.stats())
        .arg("not a hash")
        .query(&mut c)
        .unwrap();
    f.commit(5, "me/t.0", "me/t.1").await.expect("commit");
    assert_eq!(llen(&mut c, f.source()), 0);
    assert_eq!(llen(&mut c, &f.queues.processing), 2);
    assert_eq!(f.lease().as_deref(), Some("me/t.1"));
}

#[tokio::test]
async fn a_plain_read_checks_the_lease_value_its_predecessors_leave() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.3");
    let plan = plan::Plan::default();
    let read = |before: &'static str| {
        Request::new(
            &f.keys,
            &f.queues,
            Commit {
                plan: &plan,
                pending: &Runs::default(),
                lease_before: before,
                lease_after: before,
                now_ms: 1,
                max_processing: None,
                replica_ack: None,
                ledger: None,
            },
            &[Read {
                source: 0,
                skip: 1,
                count: 2,
            }],
        )
    };
    // The value the commits before it leave: the read goes through, oldest first.
    let reads = read("me/t.3")
        .send(&mut f.conn().await, &f.queues)
        .await
        .unwrap()
        .reads;
    let items: Vec<Vec<Vec<u8>>> = reads
        .into_iter()
        .map(|r| {
            r.items
                .into_iter()
                .map(|item| match item {
                    Item::Whole(b) => b.to_vec(),
                    Item::Skipped(s) => panic!("skipped {}", s.len),
                })
                .collect()
        })
        .collect();
    assert_eq!(items, vec![vec![b"bad".to_vec(), event(1, 80)]]);
    // A commit it was meant to follow has not run (or ran after it): refused.
    let err = read("me/t.4")
        .send(&mut f.conn().await, &f.queues)
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::Fenced { .. }), "{err:?}");
}

/// Nothing changed: the source, the processing and dead-letter lists and the lease are as
/// `seed` left them with the lease at `lease`.
fn assert_untouched(f: &Fixture, source_len: usize, lease: &str) {
    let mut c = f.server.conn();
    assert_eq!(llen(&mut c, f.source()), source_len);
    assert_eq!(llen(&mut c, &f.queues.processing), 0);
    assert_eq!(llen(&mut c, &f.queues.dead_letter), 0);
    assert_eq!(f.lease().as_deref(), Some(lease));
}

#[tokio::test]
async fn a_legacy_lease_held_by_an_earlier_release_fences_the_commit() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    // A replica of the earlier release took the key it knows (after ours expired).
    f.set(&f.keys.legacy_lease(), "old-host-7/0123456789abcdef.4");
    let err = f.commit(5, "me/t.0", "me/t.1").await.unwrap_err();
    assert!(matches!(err, CommitError::Fenced { .. }), "{err:?}");
    assert_untouched(&f, 5, "me/t.0");
}

#[tokio::test]
async fn a_tail_changed_by_a_foreign_writer_after_the_read_is_refused() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    let source = f.source().to_owned();
    // A producer RPUSHes: the tail is no longer the oldest item read.
    let err = f
        .commit_after(5, "me/t.0", "me/t.1", |c| {
            let _: () = redis::cmd("RPUSH").arg(&source).arg("x").query(c).unwrap();
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::TailChanged { .. }), "{err:?}");
    assert_untouched(&f, 6, "me/t.0");
}

#[tokio::test]
async fn items_removed_or_replaced_inside_the_trim_are_noticed() {
    let f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    let source = f.source().to_owned();
    // The commit covers [e0, bad, e1]; an operator's LREM of "bad" shifts e2 into the
    // newest covered position.
    let err = f
        .commit_after(3, "me/t.0", "me/t.1", |c| {
            let _: () = redis::cmd("LREM")
                .arg(&source)
                .arg(0)
                .arg("bad")
                .query(c)
                .unwrap();
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::TailChanged { .. }), "{err:?}");
    assert_untouched(&f, 4, "me/t.0");
    // An LSET of the oldest item.
    let err = f
        .commit_after(3, "me/t.0", "me/t.1", |c| {
            let _: () = redis::cmd("LSET")
                .arg(&source)
                .arg(-1)
                .arg("{}")
                .query(c)
                .unwrap();
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::TailChanged { .. }), "{err:?}");
    assert_untouched(&f, 4, "me/t.0");
    // Left alone, the same commit goes through.
    f.commit(3, "me/t.0", "me/t.1").await.expect("commit");
}

#[tokio::test]
async fn a_commit_that_would_pass_the_processing_limit_is_refused() {
    let mut f = Fixture::new();
    seed(&f);
    f.set_lease("me/t.0");
    let mut c = f.server.conn();
    push_all(
        &mut c,
        &f.queues.processing,
        &[b"e1".to_vec(), b"e2".to_vec()],
    );
    // Room for one more envelope; the commit carries two.
    f.max_processing = Some(3);
    let err = f.commit(5, "me/t.0", "me/t.1").await.unwrap_err();
    assert!(matches!(err, CommitError::Paused { .. }), "{err:?}");
    assert_eq!(llen(&mut c, f.source()), 5);
    assert_eq!(llen(&mut c, &f.queues.processing), 2);
    assert_eq!(llen(&mut c, &f.queues.dead_letter), 0);
    assert_eq!(f.lease().as_deref(), Some("me/t.0"));
    // With room for both it goes through, exactly up to the limit.
    f.max_processing = Some(4);
    f.commit(5, "me/t.0", "me/t.1").await.expect("commit");
    assert_eq!(llen(&mut c, &f.queues.processing), 4);
}

impl Fixture {
    /// Turn the ledger on under a prefix of this test's own; returns the prefix.
    fn with_ledger(&mut self) -> String {
        let prefix = format!("{}:state:", self.source());
        let mut settings = batch_processor::settings::load(&Vec::<(&str, &str)>::new(), None)
            .unwrap()
            .ledger;
        settings.enabled = true;
        settings.state_prefix = prefix.clone();
        settings.state_ttl = 1234;
        self.ledger = Some(settings);
        prefix
    }

    /// The ledger entries under `prefix`.
    fn entries(&self, prefix: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut self.server.conn())
            .unwrap()
    }
}

#[tokio::test]
async fn with_the_ledger_each_envelope_gets_its_entry_in_the_commit() {
    let mut f = Fixture::new();
    let prefix = f.with_ledger();
    seed(&f);
    f.set_lease("me/t.0");
    f.commit(5, "me/t.0", "me/t.1").await.expect("commit");
    let mut c = f.server.conn();
    let envelopes = envelopes(&mut c, &f.queues.processing);
    assert_eq!(envelopes.len(), 2);
    assert_eq!(f.entries(&prefix).len(), 2);
    for e in &envelopes {
        let key = format!("{prefix}{}", e["event_id"].as_str().unwrap());
        let h: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query(&mut c).unwrap();
        assert_eq!(h["status"], "queued");
        assert_eq!(h["total"], e["payload"]["size"].to_string());
        assert_eq!(h["completed"], "0");
        assert_eq!(h["failed"], "0");
        assert_eq!(h["deliveries"], "0");
        assert_eq!(h["created_at"], "1");
        assert_eq!(h["source"], f.source());
        let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut c).unwrap();
        assert!((1200..=1234).contains(&ttl), "ttl {ttl}");
    }
}

#[tokio::test]
async fn a_refused_commit_writes_no_ledger_entry() {
    let mut f = Fixture::new();
    let prefix = f.with_ledger();
    seed(&f);
    // Fenced: another replica holds the lease.
    f.set_lease("other/x.0");
    let err = f.commit(5, "me/t.0", "me/t.1").await.unwrap_err();
    assert!(matches!(err, CommitError::Fenced { .. }), "{err:?}");
    assert!(f.entries(&prefix).is_empty());
    // The tail changed under the reader.
    f.set_lease("me/t.0");
    let err = f
        .commit_after(5, "me/t.0", "me/t.1", |c| {
            let _: Vec<u8> = redis::cmd("RPOP").arg(f.source()).query(c).unwrap();
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::TailChanged { .. }), "{err:?}");
    assert!(f.entries(&prefix).is_empty());
    // Back-pressure: the processing list is full.
    let mut c = f.server.conn();
    push_all(&mut c, &f.queues.processing, &[b"e1".to_vec()]);
    f.max_processing = Some(1);
    let err = f.commit(4, "me/t.0", "me/t.1").await.unwrap_err();
    assert!(matches!(err, CommitError::Paused { .. }), "{err:?}");
    assert!(f.entries(&prefix).is_empty());
    assert_eq!(llen(&mut c, &f.queues.processing), 1);
    // Let through, the same commit writes its entries.
    f.max_processing = None;
    f.commit(4, "me/t.0", "me/t.1").await.expect("commit");
    let pushed = llen(&mut c, &f.queues.processing) - 1;
    assert!(pushed > 0);
    assert_eq!(f.entries(&prefix).len(), pushed);
}

/// Two sources, highest priority first: `[u0, bad-u]` and `[e10, e11, bad-b, e12]`.
fn seed_two(f: &Fixture) -> [Vec<Vec<u8>>; 2] {
    let mut c = f.server.conn();
    let urgent = vec![event(0, 80), b"bad-u".to_vec()];
    let bulk = vec![
        event(10, 80),
        event(11, 80),
        b"bad-b".to_vec(),
        event(12, 80),
    ];
    push_all(&mut c, &f.queues.sources[0], &urgent);
    push_all(&mut c, &f.queues.sources[1], &bulk);
    [urgent, bulk]
}

/// Both sources and both destinations are as `seed_two` left them, and the chain still holds
/// `lease`.
fn assert_two_untouched(f: &Fixture, seeded: &[Vec<Vec<u8>>; 2], lease: &str) {
    let mut c = f.server.conn();
    for (source, items) in f.queues.sources.iter().zip(seeded) {
        assert_eq!(&read_all(&mut c, source), items, "{source} changed");
    }
    assert_eq!(llen(&mut c, &f.queues.processing), 0);
    assert_eq!(llen(&mut c, &f.queues.dead_letter), 0);
    assert_eq!(f.lease().as_deref(), Some(lease));
}

#[tokio::test]
async fn a_commit_spanning_two_sources_trims_both_in_priority_order() {
    let f = Fixture::with_sources(2);
    seed_two(&f);
    f.set_lease("me/t.0");
    // All of the urgent source, and three of the bulk source's four items.
    f.commit_runs(&[2, 3], "me/t.0", "me/t.1", |_| {})
        .await
        .expect("commit");
    let mut c = f.server.conn();
    assert_eq!(llen(&mut c, &f.queues.sources[0]), 0);
    assert_eq!(read_all(&mut c, &f.queues.sources[1]), vec![event(12, 80)]);
    // Batches of two: [u0, e10], then [e11] flushed; the urgent message leads.
    let seqs: Vec<u64> = read_all(&mut c, &f.queues.processing)
        .iter()
        .flat_map(|e| batch_raw(e))
        .map(|m| seq_of(&m))
        .collect();
    assert_eq!(seqs, vec![0, 10, 11]);
    let dead: Vec<(Vec<u8>, String)> = read_all(&mut c, &f.queues.dead_letter)
        .iter()
        .map(|d| parse_dead_letter(d))
        .map(|d| (d.original, d.source_queue))
        .collect();
    assert_eq!(
        dead,
        vec![
            (b"bad-u".to_vec(), f.queues.sources[0].clone()),
            (b"bad-b".to_vec(), f.queues.sources[1].clone()),
        ],
        "each dead letter names its own source"
    );
    assert_eq!(f.lease().as_deref(), Some("me/t.1"));
}

#[tokio::test]
async fn a_commit_spanning_two_sources_is_all_or_nothing() {
    let f = Fixture::with_sources(2);
    let seeded = seed_two(&f);
    f.set_lease("me/t.0");
    // The lower source's tail changes under the commit: neither source is trimmed, and
    // nothing is pushed.
    let bulk = f.queues.sources[1].clone();
    let err = f
        .commit_runs(&[2, 3], "me/t.0", "me/t.1", |c| {
            let _: () = redis::cmd("RPUSH").arg(&bulk).arg("x").query(c).unwrap();
        })
        .await
        .unwrap_err();
    match &err {
        CommitError::TailChanged { source_queue } => assert_eq!(source_queue, &bulk),
        other => panic!("{other:?}"),
    }
    // Take the foreign item away again, so the sources are as seeded.
    let _: () = redis::cmd("RPOP")
        .arg(&bulk)
        .query(&mut f.server.conn())
        .unwrap();
    assert_two_untouched(&f, &seeded, "me/t.0");
    // Another deployment holds the lower source's lease: fenced, and again nothing changes.
    f.set(&f.keys.leases()[2], "other/x.0");
    let err = f
        .commit_runs(&[2, 3], "me/t.0", "me/t.1", |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::Fenced { .. }), "{err:?}");
    assert_two_untouched(&f, &seeded, "me/t.0");
    // With every lease back, the same commit goes through.
    f.set_lease("me/t.0");
    f.commit_runs(&[2, 3], "me/t.0", "me/t.1", |_| {})
        .await
        .expect("commit");
    let mut c = f.server.conn();
    assert_eq!(llen(&mut c, &f.queues.sources[0]), 0);
    assert_eq!(llen(&mut c, &bulk), 1);
}

#[tokio::test]
async fn a_ledger_entry_names_the_sources_its_envelope_drew_on() {
    let mut f = Fixture::with_sources(2);
    let prefix = f.with_ledger();
    seed_two(&f);
    f.set_lease("me/t.0");
    f.commit_runs(&[2, 4], "me/t.0", "me/t.1", |_| {})
        .await
        .expect("commit");
    let mut c = f.server.conn();
    let mut sources = Vec::new();
    for e in envelopes(&mut c, &f.queues.processing) {
        let key = format!("{prefix}{}", e["event_id"].as_str().unwrap());
        let h: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query(&mut c).unwrap();
        assert_eq!(h["total"], e["payload"]["size"].to_string());
        sources.push(h["source"].clone());
    }
    let (urgent, bulk) = (&f.queues.sources[0], &f.queues.sources[1]);
    // [u0, e10] spans both lists; [e11, e12] comes from the bulk list alone.
    assert_eq!(sources, vec![format!("{urgent},{bulk}"), bulk.clone()]);
}
