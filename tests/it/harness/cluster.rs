//! A local Redis Cluster for the scale-out tests: `primaries` nodes plus `replicas` per
//! primary, each a throwaway `redis-server --cluster-enabled yes` on a free port with a short
//! `cluster-node-timeout` (a killed primary's replica is promoted within a few seconds),
//! joined by `redis-cli --cluster create`. Every process stops on drop.

use std::process::Command;
use std::time::Duration;

use super::{connect, wait_until, RedisServer};

/// How long a node may be silent before the cluster calls it down (ms).
const NODE_TIMEOUT_MS: &str = "1000";

/// A running local cluster.
pub(crate) struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// Ports of the nodes killed so far, skipped when asking the cluster.
    dead: Vec<u16>,
}

/// One slot range's primary, from `CLUSTER SLOTS`.
struct Range {
    start: u16,
    end: u16,
    port: u16,
}

impl Cluster {
    /// Start and join the nodes, and wait until every slot is served.
    pub(crate) fn start(primaries: usize, replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    NODE_TIMEOUT_MS,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster {
            nodes,
            dead: Vec::new(),
        };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// The port of a live node, for the daemon's `REDIS_PORT`.
    pub(crate) fn seed_port(&self) -> u16 {
        self.live_ports()[0]
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .map(|n| n.port)
            .filter(|p| !self.dead.contains(p))
            .collect()
    }

    /// The slot ranges and their primaries, asked of the first live node that answers.
    fn ranges(&self) -> Vec<Range> {
        for port in self.live_ports() {
            let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                continue;
            };
            let Ok(mut c) = client.get_connection() else {
                continue;
            };
            let reply: redis::RedisResult<redis::Value> =
                redis::cmd("CLUSTER").arg("SLOTS").query(&mut c);
            let reply = reply.map(|v| loose_ranges(&v));
            if let Ok(r) = reply {
                return r
                    .into_iter()
                    .map(|(start, end, (_, port))| Range { start, end, port })
                    .collect();
            }
        }
        Vec::new()
    }

    /// The port of the primary that owns `key`'s slot now.
    pub(crate) fn owner_port(&self, key: &str) -> u16 {
        let slot = batch_processor::scale::slot::key_slot(key);
        self.ranges()
            .iter()
            .find(|r| (r.start..=r.end).contains(&slot))
            .map(|r| r.port)
            .unwrap_or_else(|| panic!("no owner for slot {slot}"))
    }

    /// A connection to the primary that owns `key`.
    pub(crate) fn conn_for(&self, key: &str) -> redis::Connection {
        connect(&format!("redis://127.0.0.1:{}/", self.owner_port(key)))
    }

    /// A connection to the node on `port`.
    pub(crate) fn conn_at(&self, port: u16) -> redis::Connection {
        connect(&format!("redis://127.0.0.1:{port}/"))
    }

    /// SIGKILL the node on `port`.
    pub(crate) fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
        self.dead.push(port);
    }

    /// Wait until every live node says `cluster_state:ok` and every slot's primary is live.
    pub(crate) fn wait_ok(&self, limit: Duration) {
        let ok = wait_until(limit, || {
            let states_ok = self.live_ports().iter().all(|p| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut self.conn_at(*p))
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            });
            let ranges = self.ranges();
            let covered: usize = ranges
                .iter()
                .map(|r| usize::from(r.end - r.start) + 1)
                .sum();
            states_ok && covered == 16384 && ranges.iter().all(|r| !self.dead.contains(&r.port))
        });
        assert!(ok, "the cluster did not become ok");
    }

    /// The node id of the node on `port`.
    pub(crate) fn node_id(&self, port: u16) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn_at(port))
            .unwrap()
    }

    /// Ports of the live primaries.
    pub(crate) fn primaries(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.ranges().iter().map(|r| r.port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Move `slot` to the primary on `to`, key by key, the way `redis-cli --cluster reshard`
    /// does: IMPORTING and MIGRATING, MIGRATE in batches (with `pause` between them, so the
    /// daemon runs into `ASK` and `TRYAGAIN` on the way), then SETSLOT NODE everywhere.
    pub(crate) fn migrate_slot(&self, slot: u16, to: u16, pause: Duration) {
        let from = self
            .ranges()
            .iter()
            .find(|r| (r.start..=r.end).contains(&slot))
            .map(|r| r.port)
            .expect("slot owner");
        assert_ne!(from, to, "the slot is already there");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let (mut src, mut dst) = (self.conn_at(from), self.conn_at(to));
        let setslot = |c: &mut redis::Connection, state: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query(c)
                .unwrap();
        };
        setslot(&mut dst, "IMPORTING", &from_id);
        setslot(&mut src, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(2)
                .query(&mut src)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(10_000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut src)
                .unwrap();
            std::thread::sleep(pause);
        }
        setslot(&mut dst, "NODE", &to_id);
        setslot(&mut src, "NODE", &to_id);
        for port in self.primaries() {
            if port != from && port != to {
                setslot(&mut self.conn_at(port), "NODE", &to_id);
            }
        }
    }
}

/// `CLUSTER SLOTS` ranges read from the raw reply.
fn loose_ranges(v: &redis::Value) -> Vec<(u16, u16, (String, u16))> {
    use redis::Value;
    let Value::Array(ranges) = v else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|r| {
            let Value::Array(f) = r else { return None };
            let int = |v: &Value| match v {
                Value::Int(n) => u16::try_from(*n).ok(),
                _ => None,
            };
            let Value::Array(p) = f.get(2)? else {
                return None;
            };
            Some((
                int(f.first()?)?,
                int(f.get(1)?)?,
                (String::new(), int(p.get(1)?)?),
            ))
        })
        .collect()
}
