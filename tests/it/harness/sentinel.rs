//! A local Sentinel deployment: a primary, one replica and three sentinels on free ports,
//! with failure detection and failover timeouts short enough for a test (a SIGKILLed primary
//! is replaced within about two seconds).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{connect, free_port, wait_until, RedisServer};

/// The name the sentinels monitor the primary under.
pub(crate) const MASTER_NAME: &str = "bp-primary";

/// How a rig is secured: passwords of the data nodes' default user and of the sentinels, and
/// TLS everywhere (with client certificates) using the certificates in a directory.
#[derive(Debug, Clone, Default)]
pub(crate) struct RigOptions {
    pub data: Option<String>,
    pub sentinel: Option<String>,
    pub tls: Option<std::path::PathBuf>,
}

/// One `redis-server --sentinel` process, killed on drop.
struct Sentinel {
    port: u16,
    password: Option<String>,
    tls: Option<std::path::PathBuf>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sentinel {
    fn start(primary_port: u16, auth: &RigOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        let listen = match &auth.tls {
            None => format!("port {port}\n"),
            Some(certs) => format!(
                "port 0\ntls-port {port}\ntls-replication yes\ntls-cert-file {c}/server.pem\n\
                 tls-key-file {c}/server.key\ntls-ca-cert-file {c}/ca.pem\n",
                c = certs.display()
            ),
        };
        let mut text = format!(
            "{listen}bind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 500\n\
             sentinel failover-timeout {MASTER_NAME} 2000\n",
            dir = dir.path().display()
        );
        if let Some(pw) = &auth.data {
            text.push_str(&format!("sentinel auth-pass {MASTER_NAME} {pw}\n"));
        }
        if let Some(pw) = &auth.sentinel {
            text.push_str(&format!("requirepass {pw}\n"));
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "sentinel on port {port} did not start"
        );
        Sentinel {
            port,
            password: auth.sentinel.clone(),
            tls: auth.tls.clone(),
            child,
            _dir: dir,
        }
    }

    fn conn(&self) -> redis::Connection {
        match &self.tls {
            Some(certs) => super::connect_tls(certs, self.port),
            None => connect(&url(self.port, self.password.as_deref())),
        }
    }

    /// How many other sentinels, and how many replicas, this one knows for the primary.
    fn peers_and_replicas(&self) -> (usize, usize) {
        let mut c = self.conn();
        let count = |sub: &str, c: &mut redis::Connection| {
            redis::cmd("SENTINEL")
                .arg(sub)
                .arg(MASTER_NAME)
                .query::<Vec<redis::Value>>(c)
                .map_or(0, |v| v.len())
        };
        (count("SENTINELS", &mut c), count("REPLICAS", &mut c))
    }
}

/// A primary, its replica and three sentinels that agree on them.
pub(crate) struct SentinelRig {
    /// The two data nodes; which one is the primary changes with a failover.
    pub nodes: [RedisServer; 2],
    sentinels: Vec<Sentinel>,
    auth: RigOptions,
}

/// `redis://` URL of a local node, with the default user's password if any.
fn url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    }
}

impl SentinelRig {
    /// Start everything and wait until the replica is in sync and every sentinel knows the
    /// replica and the two other sentinels (so a failover can be agreed on at once).
    pub(crate) fn start() -> Self {
        Self::start_with(RigOptions::default())
    }

    /// [`start`](Self::start), with the data nodes and the sentinels asking for passwords.
    pub(crate) fn start_with(auth: RigOptions) -> Self {
        let mut data_args = vec!["--save", "", "--appendonly", "no"];
        if let Some(pw) = &auth.data {
            data_args.extend(["--requirepass", pw, "--masterauth", pw]);
        }
        let start = |args: &[&str]| match &auth.tls {
            Some(certs) => RedisServer::start_tls_with(certs, args),
            None => RedisServer::start_with(args),
        };
        let primary = start(&data_args);
        let port = primary.port.to_string();
        data_args.extend(["--replicaof", "127.0.0.1", &port]);
        let replica = start(&data_args);
        let mut rc = node_conn(replica.port, &auth);
        assert!(
            wait_until(Duration::from_secs(10), || info_replication(&mut rc)
                .contains("master_link_status:up")),
            "the replica did not sync"
        );
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(primary.port, &auth))
            .collect();
        assert!(
            wait_until(Duration::from_secs(20), || sentinels
                .iter()
                .all(|s| s.peers_and_replicas() == (2, 1))),
            "the sentinels did not discover each other and the replica"
        );
        SentinelRig {
            nodes: [primary, replica],
            sentinels,
            auth,
        }
    }

    /// A connection to the data node on `port`, authenticated when the rig has a password,
    /// over TLS when it has TLS.
    pub(crate) fn node_conn(&self, port: u16) -> redis::Connection {
        node_conn(port, &self.auth)
    }

    /// `REDIS_SENTINELS` for the daemon.
    pub(crate) fn sentinels_setting(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary according to the first sentinel.
    pub(crate) fn primary_port(&self) -> u16 {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut self.sentinels[0].conn())
            .unwrap();
        port
    }

    /// The data node on `port`.
    pub(crate) fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a data node of the rig")
    }

    /// `SENTINEL FAILOVER`: promote the replica without the primary failing.
    pub(crate) fn force_failover(&self) {
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query(&mut self.sentinels[0].conn())
            .unwrap();
    }

    /// Wait until every sentinel names a primary other than `old_port`, and that node says it
    /// is a primary; returns its port.
    pub(crate) fn wait_new_primary(&self, old_port: u16, limit: Duration) -> u16 {
        let promoted = wait_until(limit, || {
            let port = self.primary_port();
            port != old_port
                && self.sentinels.iter().all(|s| {
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER_NAME)
                        .query::<(String, u16)>(&mut s.conn())
                        .is_ok_and(|(_, p)| p == port)
                })
                && role(port) == "master"
        });
        assert!(promoted, "no new primary within {limit:?}");
        self.primary_port()
    }
}

/// A connection to the data node on `port` of a rig secured by `auth`.
fn node_conn(port: u16, auth: &RigOptions) -> redis::Connection {
    match &auth.tls {
        Some(certs) => super::connect_tls(certs, port),
        None => connect(&url(port, auth.data.as_deref())),
    }
}

/// `INFO replication` of a node.
fn info_replication(c: &mut redis::Connection) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query(c)
        .unwrap_or_default()
}

/// The first element of `ROLE` on the node at `port` (`master`, `slave`), or empty when it
/// does not answer.
pub(crate) fn role(port: u16) -> String {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
        .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c))
        .ok()
        .and_then(|v| match v.first() {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// What became of one chunk the [`spawn_following_producer`] pushed.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    /// Indexes of its messages in the producer's list.
    pub range: std::ops::Range<usize>,
    /// The node it was sent to.
    pub port: u16,
    /// The node acknowledged the `LPUSH` (otherwise the connection failed with the push in
    /// flight: it may or may not have landed).
    pub acknowledged: bool,
    /// `WAIT 1` confirmed that a replica has it too.
    pub replicated: bool,
}

impl SentinelRig {
    /// The port of the first sentinel, for threads that cannot borrow the rig.
    pub(crate) fn first_sentinel_port(&self) -> u16 {
        self.sentinels[0].port
    }
}

/// Push `messages[from..]` onto `list` in chunks of `chunk`, `pause` apart, always to the
/// primary the sentinel at `sentinel_port` names; after each push, `WAIT 1 100` tells whether a
/// replica has it. A push refused with `READONLY` (a demoted primary) wrote nothing and is
/// sent again; a push whose connection failed is recorded as not acknowledged and never
/// sent again, so no message is ever pushed twice.
pub(crate) fn spawn_following_producer(
    sentinel_port: u16,
    list: String,
    messages: Vec<Vec<u8>>,
    from: usize,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<Vec<Push>> {
    std::thread::spawn(move || {
        let mut pushes = Vec::new();
        let mut start = from;
        while start < messages.len() {
            let range = start..(start + chunk).min(messages.len());
            pushes.push(push_to_primary(sentinel_port, &list, &messages, range));
            start = pushes.last().map_or(start, |p: &Push| p.range.end);
            std::thread::sleep(pause);
        }
        pushes
    })
}

fn push_to_primary(
    sentinel_port: u16,
    list: &str,
    messages: &[Vec<u8>],
    range: std::ops::Range<usize>,
) -> Push {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "producer: no primary");
        let sentinel = connect(&format!("redis://127.0.0.1:{sentinel_port}/"));
        let Some(mut conn) = primary_conn(sentinel) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let port = conn.1;
        let pushed: redis::RedisResult<()> = redis::cmd("LPUSH")
            .arg(list)
            .arg(&messages[range.clone()])
            .query(&mut conn.0);
        match pushed {
            Ok(()) => {
                let replicas: i64 = redis::cmd("WAIT")
                    .arg(1)
                    .arg(100)
                    .query(&mut conn.0)
                    .unwrap_or(0);
                return Push {
                    range,
                    port,
                    acknowledged: true,
                    replicated: replicas >= 1,
                };
            }
            Err(e) if e.code() == Some("READONLY") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => {
                return Push {
                    range,
                    port,
                    acknowledged: false,
                    replicated: false,
                }
            }
        }
    }
}

/// A connection (with timeouts) to the primary `sentinel` names, and its port.
fn primary_conn(mut sentinel: redis::Connection) -> Option<(redis::Connection, u16)> {
    let (_, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(MASTER_NAME)
        .query(&mut sentinel)
        .ok()?;
    let conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some((conn, port))
}
