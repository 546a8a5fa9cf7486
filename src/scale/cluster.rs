//! Redis Cluster routing without redis-rs's cluster client (whose pipelines do not carry
//! MULTI/EXEC well, redis-rs#731): each pipeline's keys share one slot, so the daemon finds
//! the primary that owns that slot (`CLUSTER SLOTS` on any node it knows) and talks to it
//! over plain connections. A redirection (`MOVED`, `ASK`), `TRYAGAIN` or `CLUSTERDOWN` is an
//! error like any other: the mover ends its session, drops its copies and re-takes the lease
//! (fencing keeps that safe), and its next connection asks again who owns the slot.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::{ConnectionAddr, RedisError, Value};

use crate::redis::connection::Connector;
use crate::settings::{ClusterMode, RedisSettings};

/// Longest the start-up detection (`CLUSTER INFO`) may take.
const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Finds the primary that owns a slot. Cheap to clone; clones share the nodes learned.
#[derive(Debug, Clone)]
pub struct Router {
    settings: RedisSettings,
    /// Nodes seen in the last `CLUSTER SLOTS` answer, asked before the configured one.
    known: Arc<Mutex<Vec<(String, u16)>>>,
}

/// Why no owner was found.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No node answered `CLUSTER SLOTS`.
    #[error("no cluster node answered CLUSTER SLOTS (last error: {0})")]
    Unreachable(#[source] RedisError),
    /// The nodes answered, but none owns the slot (the cluster is being set up or is down).
    #[error("no primary owns slot {0}")]
    Unowned(u16),
}

impl ClusterError {
    /// As a Redis error, for the connection paths that return one.
    pub fn into_redis(self) -> RedisError {
        match self {
            ClusterError::Unreachable(e) => e,
            e @ ClusterError::Unowned(_) => RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                e.to_string(),
            )),
        }
    }
}

impl Router {
    /// A router that starts from the configured node.
    pub fn new(settings: &RedisSettings) -> Self {
        Router {
            settings: settings.clone(),
            known: Arc::default(),
        }
    }

    /// The settings for talking to the primary that owns `slot` now.
    pub async fn owner(&self, slot: u16) -> Result<RedisSettings, ClusterError> {
        let mut candidates = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        candidates.push(configured(&self.settings));
        let mut last = None;
        for (host, port) in candidates {
            let node = at(&self.settings, &host, port);
            match slots(&node).await {
                Ok(ranges) => {
                    let nodes: Vec<(String, u16)> =
                        ranges.iter().map(|r| r.primary.clone()).collect();
                    *self.known.lock().unwrap_or_else(PoisonError::into_inner) = nodes;
                    let owner = ranges.iter().find(|r| (r.start..=r.end).contains(&slot));
                    return match owner {
                        Some(r) => Ok(at(&self.settings, &r.primary.0, r.primary.1)),
                        None => Err(ClusterError::Unowned(slot)),
                    };
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ClusterError::Unreachable(last.unwrap_or_else(|| {
            RedisError::from(std::io::Error::from(std::io::ErrorKind::NotFound))
        })))
    }
}

/// Whether Redis is a cluster: as configured, or for `auto`, what `CLUSTER INFO` on the
/// configured node says within a second. A server without cluster support answers it with an
/// `ERR` reply; no answer, or a refusal (an ACL user without `+cluster|info`), counts as a
/// single server and is logged with a hint.
pub async fn detect(settings: &RedisSettings, mode: ClusterMode) -> bool {
    match mode {
        ClusterMode::On => true,
        ClusterMode::Off => false,
        ClusterMode::Auto => {
            let ask = async {
                let connector = Connector::new(settings).map_err(|e| e.0.source)?;
                let mut conn = connector.command_connection().await?;
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async::<String>(&mut conn)
                    .await
            };
            match tokio::time::timeout(DETECT_TIMEOUT, ask).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) if e.code() == Some("ERR") => false,
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer within a second".to_owned(),
                    };
                    tracing::info!(
                        message = "cluster detection failed",
                        error,
                        effect = "assuming a single server",
                        hint = "set REDIS_CLUSTER=true or false, or allow +cluster|info"
                    );
                    false
                }
            }
        }
    }
}

/// On a cluster, `settings` aimed at the primary that owns `key`'s slot, for a one-shot
/// command; otherwise, or when no node answers (the command then fails with Redis's own
/// redirection, which names the node), unchanged.
pub async fn routed(settings: &RedisSettings, router: Option<&Router>, key: &str) -> RedisSettings {
    match router {
        Some(router) => router
            .owner(crate::scale::slot::key_slot(key))
            .await
            .unwrap_or_else(|_| settings.clone()),
        None => settings.clone(),
    }
}

/// A router when Redis is a cluster (as configured or detected), for the operator commands.
pub async fn router_if_cluster(settings: &RedisSettings, mode: ClusterMode) -> Option<Router> {
    detect(settings, mode).await.then(|| Router::new(settings))
}

/// One range of `CLUSTER SLOTS`: its slots and its primary's address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    start: u16,
    end: u16,
    primary: (String, u16),
}

/// `CLUSTER SLOTS` on `node`.
async fn slots(node: &RedisSettings) -> Result<Vec<SlotRange>, RedisError> {
    let connector = Connector::new(node).map_err(|e| e.0.source)?;
    let mut conn = connector.node_connection().await?;
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    Ok(parse_slots(&reply))
}

/// The ranges of a `CLUSTER SLOTS` reply: `[start, end, [host, port, id, ...], replicas...]`
/// each; malformed entries are skipped.
fn parse_slots(reply: &Value) -> Vec<SlotRange> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let int = |v: &Value| match v {
                Value::Int(n) => u16::try_from(*n).ok(),
                _ => None,
            };
            let Value::Array(primary) = fields.get(2)? else {
                return None;
            };
            let host = match primary.first()? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            Some(SlotRange {
                start: int(fields.first()?)?,
                end: int(fields.get(1)?)?,
                primary: (host, int(primary.get(1)?)?),
            })
        })
        .collect()
}

/// The configured node's host and port (none for a Unix socket, which no cluster uses).
fn configured(settings: &RedisSettings) -> (String, u16) {
    match settings.connection.addr() {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => (h.clone(), *p),
        _ => (String::new(), 0),
    }
}

/// `settings` pointed at `host:port`, with the same credentials, database, TLS and timeouts.
pub fn at(settings: &RedisSettings, host: &str, port: u16) -> RedisSettings {
    let addr = match settings.connection.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params,
        },
        ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.to_owned(), port),
        other => other,
    };
    RedisSettings {
        connection: settings.connection.clone().set_addr(addr),
        // A cluster node is reached directly, never through sentinels.
        sentinel: None,
        ..settings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn slot_ranges_are_read_from_the_reply() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id1")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7003), bulk("id4")]),
            ]),
            Value::Array(vec![Value::Int(5461)]),
        ]);
        assert_eq!(
            parse_slots(&reply),
            [SlotRange {
                start: 0,
                end: 5460,
                primary: ("127.0.0.1".into(), 7000)
            }]
        );
    }
}
