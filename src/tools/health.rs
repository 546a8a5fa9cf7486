//! `batch-processor health`: ask this daemon's own probe endpoint whether it is live (or
//! ready), for a container's HEALTHCHECK.
//!
//! It reads the same settings as the daemon, so the address follows `REDIS_HTTP_ADDR`
//! wherever the operator moves it, and the image needs no curl. A wildcard listen address
//! (`0.0.0.0`, `[::]`) is asked on the matching loopback. One bounded HTTP/1.1 GET; exit 0
//! for a 200, 1 for anything else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole check may take unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes read from a probe's answer; probe bodies are one short line.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Which endpoint to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: the process answers.
    Live,
    /// `/readyz`: Redis answers and the mover runs.
    Ready,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Live => "/healthz",
            Probe::Ready => "/readyz",
        }
    }
}

/// Why the daemon is not healthy, or could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// `REDIS_HTTP_ADDR` is `off`: there is nothing to ask.
    #[error("REDIS_HTTP_ADDR is off, so the daemon serves no probes to check")]
    HttpOff,
    /// No connection, or no complete answer in time.
    #[error("no answer from http://{addr}{path}: {reason}")]
    NoAnswer {
        /// Where it asked.
        addr: SocketAddr,
        /// The endpoint.
        path: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The daemon answered with something other than 200.
    #[error("http://{addr}{path} answered {status}: {body}")]
    Unhealthy {
        /// Where it asked.
        addr: SocketAddr,
        /// The endpoint.
        path: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The first line of the body (the reasons, for `/readyz`).
        body: String,
    },
}

/// The address to ask for a daemon listening on `listen`: wildcards become loopback.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Ask the daemon listening on `http_addr` (`None`: probes are off) whether it is healthy;
/// `Ok` holds the one-line report.
pub async fn check(
    http_addr: Option<SocketAddr>,
    probe: Probe,
    timeout: Duration,
) -> Result<String, HealthError> {
    let addr = probe_addr(http_addr.ok_or(HealthError::HttpOff)?);
    let path = probe.path();
    let no_answer = |reason: String| HealthError::NoAnswer { addr, path, reason };
    let response = tokio::time::timeout(timeout, get(addr, path))
        .await
        .map_err(|_| no_answer(format!("nothing within {timeout:?}")))?
        .map_err(|e| no_answer(e.to_string()))?;
    let (status, body) = parse(&response).ok_or_else(|| no_answer("not HTTP".to_string()))?;
    if status == 200 {
        Ok(format!("http://{addr}{path}: {status} {body}"))
    } else {
        Err(HealthError::Unhealthy {
            addr,
            path,
            status,
            body,
        })
    }
}

/// One GET with `Connection: close`, read to the end.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
    Ok(response)
}

/// The status code and the body's first line of an HTTP/1.x response.
fn parse(response: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut status_line = head.lines().next()?.split_whitespace();
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    let body = body.lines().next().unwrap_or_default().trim().to_string();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_asked_on_loopback_and_the_port_is_kept() {
        let cases = [
            ("0.0.0.0:9464", "127.0.0.1:9464"),
            ("[::]:8080", "[::1]:8080"),
            ("10.1.2.3:9000", "10.1.2.3:9000"),
        ];
        for (listen, asked) in cases {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(probe_addr(listen).to_string(), asked);
        }
    }

    #[test]
    fn responses_give_their_status_and_first_body_line() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready";
        assert_eq!(parse(ok), Some((200, "ready".to_string())));
        let not = b"HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready: redis unreachable\nmore";
        assert_eq!(
            parse(not),
            Some((503, "not ready: redis unreachable".to_string()))
        );
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), None, "incomplete head");
    }

    #[tokio::test]
    async fn probes_off_and_nobody_listening_are_failures() {
        let off = check(None, Probe::Live, DEFAULT_TIMEOUT).await;
        assert!(matches!(off, Err(HealthError::HttpOff)), "{off:?}");
        // Bind then drop: the port is closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let closed = check(Some(addr), Probe::Ready, DEFAULT_TIMEOUT).await;
        assert!(
            matches!(
                closed,
                Err(HealthError::NoAnswer {
                    path: "/readyz",
                    ..
                })
            ),
            "{closed:?}"
        );
    }
}
