//! The lease keeper: a task that renews the mover's lease on a connection of its own.
//!
//! Renewing between requests, on the mover's own connection, ties the lease to request
//! latency: on a slow link with large messages one read plus one commit can outlast the TTL,
//! and then every commit would be refused. The keeper renews every third of the TTL whatever
//! the mover is doing, and only checks the acquisition's token (not the commit sequence), so
//! it never races the commits in flight. The mover hands it the lease to keep
//! ([`KeeperHandle::keep`]) and reads back the news ([`KeeperHandle::news`]).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::lease::ttl_ms;
use crate::redis::connection::Connector;

const RENEW: &str = include_str!("../redis/scripts/lease_renew.lua");

/// A lease to keep: the acquisition's value prefix `<consumer>/<token>.` and when it was
/// taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `<consumer>/<token>.`.
    pub prefix: String,
    /// When the acquisition was sent.
    pub acquired_at: std::time::Instant,
}

/// What the keeper last learned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum News {
    /// Nothing yet.
    #[default]
    None,
    /// The lease with this prefix was renewed by a request sent at `sent_at`.
    Renewed {
        /// The acquisition's prefix.
        prefix: String,
        /// When the renewal was sent: the lease lives a TTL from then.
        sent_at: std::time::Instant,
    },
    /// The lease with this prefix is held by someone else now.
    Lost {
        /// The acquisition's prefix.
        prefix: String,
    },
}

/// The mover's side of the keeper. Dropping it ends the task.
#[derive(Debug)]
pub struct KeeperHandle {
    want: watch::Sender<Option<Grant>>,
    news: watch::Receiver<News>,
}

impl KeeperHandle {
    /// Keep this lease from now on (`None`: keep none).
    pub fn keep(&self, grant: Option<Grant>) {
        self.want.send_replace(grant);
    }

    /// The latest news.
    pub fn news(&self) -> News {
        self.news.borrow().clone()
    }
}

/// Where and how the keeper renews.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// Opens the keeper's own connection.
    pub connector: Connector,
    /// Every lease the holder keeps (see [`crate::redis::keys::Keys::leases`]).
    pub keys: Vec<String>,
    /// The lease's time to live.
    pub ttl: Duration,
    /// Longest one renewal may take.
    pub command_timeout: Duration,
}

/// Start the keeper. It stops when the handle is dropped (every wait races that), within one
/// command timeout.
pub fn spawn(config: KeeperConfig) -> KeeperHandle {
    let (want, want_rx) = watch::channel(None);
    let (news_tx, news) = watch::channel(News::None);
    let keeper = Keeper {
        config,
        want: want_rx,
        news: news_tx,
        conn: None,
        script: Script::new(RENEW),
    };
    tokio::spawn(keeper.run().instrument(tracing::info_span!("lease_keeper")));
    KeeperHandle { want, news }
}

struct Keeper {
    config: KeeperConfig,
    want: watch::Receiver<Option<Grant>>,
    news: watch::Sender<News>,
    /// The connection, and the connector's generation when it was made.
    conn: Option<(MultiplexedConnection, u64)>,
    script: Script,
}

/// How one renewal attempt ended.
enum Renewal {
    Kept,
    Lost,
    Failed,
}

impl Keeper {
    async fn run(mut self) {
        // When the lease being kept was last acquired or renewed.
        let mut last: Option<(String, std::time::Instant)> = None;
        loop {
            let grant = self.want.borrow_and_update().clone();
            // Be connected, with the script loaded, before a renewal is due: from the start,
            // and again after a failure. (When one is due, the renewal connects itself.)
            let renewal_due = grant.as_ref().is_some_and(|g| {
                let since = match &last {
                    Some((prefix, at)) if *prefix == g.prefix => *at,
                    _ => g.acquired_at,
                };
                since + self.config.ttl / 3 <= std::time::Instant::now()
            });
            if self.conn.is_none() && !renewal_due {
                let _ = self.connect().await;
            }
            let due = grant.as_ref().map(|g| {
                let since = match &last {
                    Some((prefix, at)) if *prefix == g.prefix => *at,
                    _ => g.acquired_at,
                };
                Instant::from_std(since + self.config.ttl / 3)
            });
            tokio::select! {
                biased;
                changed = self.want.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                _ = sleep_until(due) => {}
            }
            let Some(grant) = grant else { continue };
            let sent_at = std::time::Instant::now();
            match self.renew(&grant.prefix).await {
                Renewal::Kept => {
                    last = Some((grant.prefix.clone(), sent_at));
                    self.news.send_replace(News::Renewed {
                        prefix: grant.prefix,
                        sent_at,
                    });
                }
                Renewal::Lost => {
                    self.news.send_replace(News::Lost {
                        prefix: grant.prefix,
                    });
                    // Nothing to keep until the mover hands over a new lease.
                    if self.want.changed().await.is_err() {
                        return;
                    }
                }
                Renewal::Failed => {
                    // Try again soon: the lease lives on for two thirds of its TTL.
                    let retry = (self.config.ttl / 10).min(Duration::from_millis(200));
                    tokio::select! {
                        changed = self.want.changed() => if changed.is_err() { return },
                        _ = tokio::time::sleep(retry) => {}
                    }
                }
            }
        }
    }

    /// Open the keeper's connection and load the renewal script, so that the first renewal
    /// costs one round trip (on a slow link, the NOSCRIPT dance alone can outlast a short
    /// TTL). Does nothing when already connected.
    async fn connect(&mut self) -> Result<(), Renewal> {
        let generation = self.config.connector.generation();
        match &self.conn {
            Some((_, made)) if *made == generation => return Ok(()),
            // With Sentinel, the primary moved on since this connection was made.
            Some(_) => self.conn = None,
            None => {}
        }
        let limit = self.config.command_timeout;
        let mut conn =
            match tokio::time::timeout(limit, self.config.connector.command_connection()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => return Err(self.failed(&error)),
                Err(_) => return Err(self.failed(&"connect timed out")),
            };
        // Best effort: without it the first renewal loads the script itself.
        let load = self.script.load_async(&mut conn);
        let _ = tokio::time::timeout(limit, load).await;
        self.conn = Some((conn, generation));
        Ok(())
    }

    async fn renew(&mut self, prefix: &str) -> Renewal {
        let limit = self.config.command_timeout;
        if let Err(failed) = self.connect().await {
            return failed;
        }
        let Some((conn, _)) = self.conn.as_mut() else {
            return Renewal::Failed;
        };
        let mut invocation = self.script.key(&self.config.keys);
        invocation.arg(prefix).arg(ttl_ms(self.config.ttl));
        let call = invocation.invoke_async::<i64>(conn);
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(1)) => Renewal::Kept,
            Ok(Ok(_)) => Renewal::Lost,
            Ok(Err(error)) => self.failed(&error),
            Err(_) => self.failed(&"renewal timed out"),
        }
    }

    fn failed(&mut self, error: &dyn std::fmt::Display) -> Renewal {
        self.conn = None;
        tracing::debug!(message = "lease renewal failed", %error);
        Renewal::Failed
    }
}

/// Sleep until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
