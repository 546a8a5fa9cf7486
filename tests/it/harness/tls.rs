//! TLS test fixtures: a private CA and a server certificate for 127.0.0.1 made with
//! `openssl`, and a TLS-only `redis-server` using them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

/// Run `openssl` with a space-separated argument line in `dir`.
fn openssl(dir: &Path, args: &str) {
    let status = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success(), "openssl {args} failed");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate (`client.pem`,
/// `client.key`), both signed by it.
pub(crate) fn make_certs(dir: &Path) {
    openssl(
        dir,
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca",
    );
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf",
    );
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=batch-processor",
    );
    // An extension makes it an X.509 v3 certificate, the only version webpki accepts.
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        dir,
        "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.cnf",
    );
}

/// A TLS-only `redis-server` (no plain port), killed on drop.
pub(crate) struct TlsRedis {
    child: Child,
    pub port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start a TLS-only server with the certificates [`make_certs`] left in `dir`.
pub(crate) fn start_tls_redis(dir: &Path) -> TlsRedis {
    start_tls_redis_with(dir, false)
}

/// Like [`start_tls_redis`]; with `client_certs` the server requires a client certificate
/// signed by the CA (`--tls-auth-clients yes`).
pub(crate) fn start_tls_redis_with(dir: &Path, client_certs: bool) -> TlsRedis {
    let auth_clients = if client_certs { "yes" } else { "no" };
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-port")
        .arg(port.to_string())
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args([
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            auth_clients,
        ])
        .arg("--dir")
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "TLS redis-server did not start"
    );
    TlsRedis { child, port }
}

/// A synchronous admin connection to the TLS server on `port`, presenting the client
/// certificate [`make_certs`] left in `dir`.
pub(crate) fn connect_tls(dir: &Path, port: u16) -> redis::Connection {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let client = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}/"),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read("client.pem"),
                client_key: read("client.key"),
            }),
            root_cert: Some(read("ca.pem")),
        },
    )
    .unwrap();
    client.get_connection().unwrap()
}
