//! Opening the raw connection's stream as [`StreamTarget`] says: TCP, TLS trusting the
//! configured CA (or the web's roots when none is configured, as redis-rs does), or a Unix
//! socket; then `AUTH` and `SELECT`, as redis-rs would send them.

use std::sync::Arc;

use redis::{ConnectionAddr, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::{RawConnection, RawError};
use crate::redis::connection::StreamTarget;

/// A byte stream to Redis.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Connect within the target's connect timeout.
pub(super) async fn open(target: &StreamTarget) -> Result<Box<dyn Io>, RawError> {
    let after = target.connect_timeout;
    match tokio::time::timeout(after, connect(target)).await {
        Ok(io) => io,
        Err(_) => Err(RawError::Timeout {
            what: "connect",
            after,
        }),
    }
}

async fn connect(target: &StreamTarget) -> Result<Box<dyn Io>, RawError> {
    let io_error = |source| RawError::Io {
        what: "connect",
        source,
    };
    match &target.addr {
        ConnectionAddr::Tcp(host, port) => {
            let tcp = tcp(host, *port).await?;
            Ok(Box::new(tcp))
        }
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            ..
        } => {
            let config = client_config(target)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| RawError::Config(format!("TLS server name {host:?}: {e}")))?;
            let tcp = tcp(host, *port).await?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(io_error)?;
            Ok(Box::new(tls))
        }
        ConnectionAddr::Unix(path) => {
            Ok(Box::new(UnixStream::connect(path).await.map_err(io_error)?))
        }
        other => Err(RawError::Config(format!(
            "unsupported address for the request connection: {other:?}"
        ))),
    }
}

async fn tcp(host: &str, port: u16) -> Result<TcpStream, RawError> {
    let io_error = |source| RawError::Io {
        what: "connect",
        source,
    };
    let tcp = TcpStream::connect((host, port)).await.map_err(io_error)?;
    tcp.set_nodelay(true).map_err(io_error)?;
    Ok(tcp)
}

/// The TLS client configuration: the configured CA, or the web's roots without one; and the
/// client certificate when one is configured.
fn client_config(target: &StreamTarget) -> Result<rustls::ClientConfig, RawError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| RawError::Config(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    match target.tls_root_cert.as_deref() {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| RawError::Config(format!("CA certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| RawError::Config(format!("CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match &target.tls_client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("client key", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("client certificate", &e))
        }
    }
}

/// `AUTH` (with the user name when there is one) and `SELECT`, each checked.
pub(super) async fn hello(conn: &mut RawConnection, target: &StreamTarget) -> Result<(), RawError> {
    let info = &target.redis;
    if let Some(password) = info.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = info.username() {
            auth.arg(user);
        }
        auth.arg(password);
        call(conn, "AUTH", &auth).await?;
    }
    if info.db() != 0 {
        call(conn, "SELECT", redis::cmd("SELECT").arg(info.db())).await?;
    }
    Ok(())
}

async fn call(
    conn: &mut RawConnection,
    command: &'static str,
    cmd: &redis::Cmd,
) -> Result<(), RawError> {
    conn.send(&cmd.get_packed_command()).await?;
    let after = conn.timeout();
    let reply = tokio::time::timeout(after, conn.value())
        .await
        .map_err(|_| RawError::Timeout {
            what: command,
            after,
        })??;
    match reply {
        Value::ServerError(error) => Err(RawError::Refused { command, error }),
        _ => Ok(()),
    }
}
