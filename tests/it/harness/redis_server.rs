//! Throwaway `redis-server` processes: one per test, on a free port, stopped on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::signal;

/// A throwaway `redis-server` process. Killed (and its directory removed) on drop.
pub(crate) struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// For a TLS-only server: the directory of the certificates [`super::make_certs`] made.
    tls: Option<std::path::PathBuf>,
    child: Option<Child>,
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl RedisServer {
    /// A plain server: no persistence.
    pub(crate) fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server that persists every write (AOF, fsync always), so it can be restarted
    /// without losing data.
    pub(crate) fn start_persistent() -> Self {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    /// A server without persistence whose default user needs `password`.
    pub(crate) fn start_with_password(password: &str) -> Self {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
        ])
    }

    /// A server with extra `redis-server` arguments.
    pub(crate) fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            tls: None,
            child: None,
        };
        server.spawn();
        server
    }

    /// A TLS-only server (`port` is its TLS port) with the certificates in `certs`, which
    /// requires client certificates and replicates over TLS; plus `args`.
    pub(crate) fn start_tls_with(certs: &std::path::Path, args: &[&str]) -> Self {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            tls: Some(certs.to_owned()),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.arg("--port").arg(self.port.to_string()),
            Some(certs) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(certs.join("server.pem"))
                .arg("--tls-key-file")
                .arg(certs.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.pem"))
                .args(["--tls-replication", "yes"]),
        };
        let child = command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let listening = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if listening && self.tls.is_some() {
                // No persistence, so nothing to load: listening is ready.
                return;
            }
            if listening {
                // Accepting connections; with AOF it may still be loading, so ask.
                if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection())
                {
                    let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                    match pong {
                        Ok(_) => return,
                        // Auth-protected servers answer NOAUTH: they are up.
                        Err(e)
                            if e.code() == Some("NOAUTH")
                                || e.kind() == redis::ErrorKind::AuthenticationFailed =>
                        {
                            return
                        }
                        Err(_) => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A synchronous client connection for setting up and checking tests.
    pub(crate) fn conn(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// The URL with credentials (`user` `None` means the default user).
    pub(crate) fn url_auth(&self, user: Option<&str>, password: &str) -> String {
        format!(
            "redis://{}:{}@127.0.0.1:{}/",
            user.unwrap_or(""),
            password,
            self.port
        )
    }

    /// A connection that authenticates first.
    pub(crate) fn conn_auth(&self, user: Option<&str>, password: &str) -> redis::Connection {
        connect(&self.url_auth(user, password))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Stop the server the hard way (SIGKILL). With `start_persistent` the data survives.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server stops answering but keeps its connections.
    pub(crate) fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub(crate) fn resume(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "CONT");
        }
        self.kill();
    }
}

/// A synchronous connection to `url` (for threads that cannot borrow the server).
/// `ACL SETUSER name rules...` as the server's admin.
pub(crate) fn acl_setuser(admin: &mut redis::Connection, name: &str, rules: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(name)
        .arg(rules)
        .query(admin)
        .unwrap();
}

pub(crate) fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to test redis")
}
