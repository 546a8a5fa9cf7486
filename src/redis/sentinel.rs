//! Finding the primary through Redis Sentinel.
//!
//! redis-rs's own Sentinel client hands back a plain connection and never follows a
//! failover, so the daemon asks for itself: the sentinels in turn, on every new connection,
//! with the same connect and response timeouts as every other connection. A node the
//! sentinels still name while it steps down is caught by asking it for its `ROLE`.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisError, ServerErrorKind,
};

use crate::settings::{address, SentinelSettings};

/// Ask the sentinels in turn for the address of `settings.master`'s primary; the error of the
/// last one asked when none answers.
pub(crate) async fn primary_addr(
    settings: &SentinelSettings,
    certs: &Option<redis::TlsCertificates>,
    config: &AsyncConnectionConfig,
) -> Result<(String, u16), RedisError> {
    let mut last = RedisError::from((redis::ErrorKind::EmptySentinelList, "no sentinel given"));
    for (host, port) in &settings.nodes {
        match ask(settings, host, *port, certs, config).await {
            Ok(addr) => return Ok(addr),
            Err(e) => {
                tracing::debug!(message = "sentinel did not answer", sentinel = %format!("{host}:{port}"), error = %e);
                last = e;
            }
        }
    }
    Err(last)
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME` on one sentinel.
async fn ask(
    settings: &SentinelSettings,
    host: &str,
    port: u16,
    certs: &Option<redis::TlsCertificates>,
    config: &AsyncConnectionConfig,
) -> Result<(String, u16), RedisError> {
    let mut redis =
        redis::RedisConnectionInfo::default().set_protocol(redis::ProtocolVersion::RESP2);
    if let Some(user) = &settings.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password);
    }
    let info = address(host.to_owned(), port, settings.tls)
        .into_connection_info()?
        .set_redis_settings(redis);
    let client = client(info, certs, settings.tls)?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&settings.master)
        .query_async(&mut conn)
        .await?;
    reply.ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::MasterNameNotFoundBySentinel,
            "the sentinel does not know the master name",
            settings.master.clone(),
        ))
    })
}

/// A client for `info`, with the TLS material when `tls`.
pub(crate) fn client(
    info: ConnectionInfo,
    certs: &Option<redis::TlsCertificates>,
    tls: bool,
) -> Result<redis::Client, RedisError> {
    match certs {
        Some(certs) if tls => redis::Client::build_with_tls(info, certs.clone()),
        _ => redis::Client::open(info),
    }
}

/// Fail with `READONLY` unless the node behind `conn` is a primary: during a failover the
/// sentinels may still name a node that has just become a replica.
pub(crate) async fn check_primary(
    conn: &mut MultiplexedConnection,
    addr: &str,
) -> Result<(), RedisError> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    match role.first() {
        Some(redis::Value::BulkString(b)) if b == b"master" => Ok(()),
        other => Err(RedisError::from((
            redis::ErrorKind::Server(ServerErrorKind::ReadOnly),
            "the node the sentinels named is not the primary",
            format!("{addr} answers ROLE {other:?}"),
        ))),
    }
}

/// The connect and response timeouts for talking to a sentinel.
pub(crate) fn sentinel_config(connect: Duration, response: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response))
}
