//! A blocking HTTP client for the daemon's probes and a Prometheus text reader.

use std::time::Duration;

/// A blocking HTTP/1.1 GET; returns the status code and the body.
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).expect("GET from the daemon's HTTP server")
}

/// [`http_get`], or `None` when nothing answers (yet) or the answer is cut short.
pub(crate) fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of an unlabelled series (or a full `name{labels}` key) in Prometheus text.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// The series of the list-length gauge for the list `list` in the role `queue`.
pub(crate) fn queue_series(queue: &str, list: &str) -> String {
    format!("batch_processor_queue_length{{queue=\"{queue}\",list=\"{list}\"}}")
}
