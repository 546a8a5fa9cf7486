//! A TCP proxy for network-fault tests: listens on a free loopback port and forwards each
//! connection it accepts to a target address, in both directions, with controls a test can
//! use while traffic flows:
//!
//! - an added delay per direction, changeable at run time ([`Proxy::set_delays`]): each chunk
//!   is delivered `delay` after it was read, in order, through a queue of
//!   `(deliver_at, bytes)` per direction, so a delay adds latency but never limits throughput;
//! - a blackhole ([`Proxy::blackhole`], [`Proxy::heal`]): nothing moves in either direction
//!   and no socket is closed, so peers see silence, neither FIN nor RST. Like a network
//!   partition under TCP, the bytes are not lost: what was sent meanwhile is held (the proxy
//!   stops reading, so senders soon block on full buffers) and delivered in order after the
//!   heal, as retransmission would deliver it; a client that gave up meanwhile then gets
//!   late replies on its old connection. Connections accepted while blackholed stay silent
//!   too;
//! - a cut ([`Proxy::cut`]): every current connection is closed abruptly, with a reset to both
//!   peers; new connections are served as usual.
//!
//! The proxy runs on a thread of its own with a current-thread tokio runtime (moved into a
//! test's network namespace with [`Proxy::start_in`]); dropping the
//! [`Proxy`] stops it and closes every connection.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{enter, Netns};

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// What the test asks of the proxy; every connection watches it.
#[derive(Debug, Clone, Copy, Default)]
struct Control {
    /// Added delay from the client to the target.
    up: Duration,
    /// Added delay from the target to the client.
    down: Duration,
    /// Nothing moves while set.
    blackholed: bool,
    /// Bumped by every cut: connections accepted before it close.
    cuts: u64,
    /// The proxy is stopping.
    stopped: bool,
}

/// A running proxy. Stopped (every connection closed) on drop.
pub(crate) struct Proxy {
    /// The loopback port it listens on.
    pub port: u16,
    control: Arc<watch::Sender<Control>>,
    open: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `target` adding `delay` in each direction.
    pub(crate) fn start(target: SocketAddr, delay: Duration) -> Self {
        Self::spawn(target, delay, None)
    }

    /// A proxy inside the network namespace `ns`: it listens on the namespace's loopback
    /// and connects to `target` there.
    pub(crate) fn start_in(ns: &Netns, target: SocketAddr, delay: Duration) -> Self {
        Self::spawn(target, delay, Some(ns.file()))
    }

    /// The proxy's thread enters `netns` (when given) before it opens any socket.
    fn spawn(target: SocketAddr, delay: Duration, netns: Option<std::fs::File>) -> Self {
        let control = Arc::new(watch::Sender::new(Control {
            up: delay,
            down: delay,
            ..Control::default()
        }));
        let open = Arc::new(AtomicUsize::new(0));
        let (ctl, count) = (control.clone(), open.clone());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                if let Some(ns) = &netns {
                    enter(ns);
                }
                let listener = StdListener::bind("127.0.0.1:0").expect("bind proxy port");
                listener
                    .set_nonblocking(true)
                    .expect("nonblocking listener");
                let port = listener.local_addr().expect("proxy address").port();
                port_tx.send(port).expect("proxy port");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(accept_loop(listener, target, ctl, count));
                // Dropping the runtime drops every connection task and its sockets.
            })
            .expect("spawn proxy thread");
        let port = port_rx.recv().expect("the proxy thread binds its port");
        Proxy {
            port,
            control,
            open,
            thread: Some(thread),
        }
    }

    /// A proxy to a redis-server (or anything) on a loopback `port`.
    pub(crate) fn to_port(port: u16, delay: Duration) -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], port)), delay)
    }

    /// The port as a string, for `REDIS_PORT`.
    pub(crate) fn port_str(&self) -> String {
        self.port.to_string()
    }

    /// Change the added delay in both directions. Chunks already queued keep their delivery
    /// time; order is always kept.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.set_delays(delay, delay);
    }

    /// Change the added delay client → target (`up`) and target → client (`down`).
    pub(crate) fn set_delays(&self, up: Duration, down: Duration) {
        self.control.send_modify(|c| {
            c.up = up;
            c.down = down;
        });
    }

    /// Stop all forwarding, both directions, without closing anything.
    pub(crate) fn blackhole(&self) {
        self.control.send_modify(|c| c.blackholed = true);
    }

    /// Resume forwarding after [`blackhole`](Self::blackhole): what was held is delivered.
    pub(crate) fn heal(&self) {
        self.control.send_modify(|c| c.blackholed = false);
    }

    /// Close every current connection abruptly (a reset to both peers).
    pub(crate) fn cut(&self) {
        self.control.send_modify(|c| c.cuts += 1);
    }

    /// Connections currently open through the proxy.
    pub(crate) fn connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.control.send_modify(|c| c.stopped = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: StdListener,
    target: SocketAddr,
    control: Arc<watch::Sender<Control>>,
    open: Arc<AtomicUsize>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let mut ctl = control.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = ctl.wait_for(|c| c.stopped) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        let ctl = control.subscribe();
        let open = open.clone();
        tokio::spawn(async move {
            open.fetch_add(1, Ordering::SeqCst);
            connection(client, target, ctl).await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Serve one accepted connection until either side closes, a write fails, or a cut.
async fn connection(mut client: TcpStream, target: SocketAddr, ctl: watch::Receiver<Control>) {
    let cuts = ctl.borrow().cuts;
    let mut cut_watch = ctl.clone();
    let _ = client.set_nodelay(true);
    let connected = tokio::select! {
        _ = cut_watch.wait_for(|c| c.cuts != cuts || c.stopped) => return,
        up = TcpStream::connect(target) => up,
    };
    // Nothing listens there: the client sees its connection closed.
    let Ok(mut upstream) = connected else { return };
    let _ = upstream.set_nodelay(true);
    let aborted = {
        let (client_r, client_w) = client.split();
        let (up_r, up_w) = upstream.split();
        let forward = async {
            tokio::try_join!(
                direction(client_r, up_w, ctl.clone(), |c| c.up),
                direction(up_r, client_w, ctl.clone(), |c| c.down),
            )
        };
        tokio::select! {
            _ = cut_watch.wait_for(|c| c.cuts != cuts || c.stopped) => true,
            done = forward => done.is_err(),
        }
    };
    if aborted {
        // Close with a reset rather than a FIN.
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

/// Forward `from` to `to`, each chunk `delay(control)` after it was read (the delay in
/// force when it was read), holding everything while blackholed. Ends after forwarding
/// the end of the stream; an error when a write fails (the peer is gone).
async fn direction(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    ctl: watch::Receiver<Control>,
    delay: fn(&Control) -> Duration,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut read_ctl = ctl.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if read_ctl.wait_for(|c| !c.blackholed).await.is_err() {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = Instant::now() + delay(&read_ctl.borrow());
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
        // Dropping `tx` lets the writer finish after the last chunk.
    };
    let mut write_ctl = ctl;
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if write_ctl.wait_for(|c| !c.blackholed).await.is_err() {
                return Ok(());
            }
            to.write_all(&bytes).await?;
        }
        // The source closed: pass the end of the stream on, after the data.
        to.shutdown().await
    };
    // The writer ends once the reader has ended and everything is delivered, or when a
    // write fails; then the reader is dropped with it.
    let reader = async move {
        reader.await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        written = writer => written,
        () = reader => unreachable!("the reader never completes"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;
    use crate::harness::RedisServer;

    fn ping(conn: &mut redis::Connection) -> Duration {
        let started = Instant::now();
        let pong: String = redis::cmd("PING").query(conn).expect("PING");
        assert_eq!(pong, "PONG");
        started.elapsed()
    }

    fn raw_conn(proxy: &Proxy) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect to proxy");
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .expect("read timeout");
        s
    }

    /// Whether `+PONG` arrives within the read timeout.
    fn pong_arrives(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    #[test]
    fn delay_applies_both_ways_and_can_change() {
        let server = RedisServer::start();
        let proxy = Proxy::to_port(server.port, Duration::from_millis(100));
        let mut conn = crate::harness::connect(&format!("redis://127.0.0.1:{}/", proxy.port));
        let rtt = ping(&mut conn);
        assert!(rtt >= Duration::from_millis(200), "round trip {rtt:?}");
        assert!(rtt < Duration::from_millis(1000), "round trip {rtt:?}");
        assert_eq!(proxy.connections(), 1);

        // A 4 MB value goes through in about one round trip: 64 KB chunks are not paced
        // one per delay (which would take 6 s).
        let value = vec![b'v'; 4 << 20];
        let started = Instant::now();
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg(&value)
            .query(&mut conn)
            .unwrap();
        let back: Vec<u8> = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
        let took = started.elapsed();
        assert_eq!(back, value);
        assert!(
            took < Duration::from_millis(2000),
            "two round trips of 4 MB took {took:?}"
        );

        proxy.set_delays(Duration::from_millis(300), Duration::ZERO);
        let rtt = ping(&mut conn);
        assert!(rtt >= Duration::from_millis(300), "round trip {rtt:?}");
        assert!(rtt < Duration::from_millis(1000), "round trip {rtt:?}");
        proxy.set_delay(Duration::ZERO);
        let rtt = ping(&mut conn);
        assert!(rtt < Duration::from_millis(150), "round trip {rtt:?}");
    }

    #[test]
    fn blackhole_holds_everything_until_healed_then_cut_resets() {
        let server = RedisServer::start();
        let proxy = Proxy::to_port(server.port, Duration::ZERO);
        let mut old = raw_conn(&proxy);
        old.write_all(b"PING\r\n").unwrap();
        assert!(pong_arrives(&mut old));

        proxy.blackhole();
        old.write_all(b"PING\r\n").unwrap();
        assert!(!pong_arrives(&mut old), "a reply crossed the blackhole");
        // A connection made meanwhile is accepted but silent too.
        let mut new = raw_conn(&proxy);
        new.write_all(b"PING\r\n").unwrap();
        assert!(!pong_arrives(&mut new), "a reply crossed the blackhole");

        proxy.heal();
        assert!(pong_arrives(&mut old), "the held reply was not delivered");
        assert!(pong_arrives(&mut new), "the held reply was not delivered");

        proxy.cut();
        let mut buf = [0u8; 16];
        match old.read(&mut buf) {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            Ok(n) => panic!("read {n} bytes after a cut, expected a reset"),
        }
        assert!(wait_until_closed(&proxy));
        let mut after = raw_conn(&proxy);
        after.write_all(b"PING\r\n").unwrap();
        assert!(pong_arrives(&mut after), "a new connection after a cut");
    }

    fn wait_until_closed(proxy: &Proxy) -> bool {
        crate::harness::wait_until(Duration::from_secs(2), || proxy.connections() == 0)
    }
}
