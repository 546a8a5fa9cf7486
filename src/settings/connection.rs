//! Connection settings: where Redis is (a host, a URL, or the sentinels that name the
//! primary), the credentials (given directly or in `_FILE` secrets), TLS, timeouts and the
//! optional replica acknowledgement of commits.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

use super::keys::env_name;
use super::raw::RawSettings;
use super::{tls, RedisSettings, SettingsError};

/// Redis Sentinel: the sentinels to ask for the primary, and how to talk to them.
#[derive(Clone)]
pub struct SentinelSettings {
    /// `host:port` of each sentinel, asked in this order.
    pub nodes: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// ACL user on the sentinels, if any.
    pub username: Option<String>,
    /// Password on the sentinels, if any. Never printed.
    pub password: Option<String>,
    /// Whether the sentinels speak TLS (with the same CA and client certificate as the data
    /// nodes).
    pub tls: bool,
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("nodes", &self.nodes)
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// `REDIS_MIN_REPLICAS_ACK`: after each commit, `WAIT` for this many replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAck {
    /// Replicas that must acknowledge a commit.
    pub replicas: NonZeroU32,
    /// How long to wait for them before reporting the commit as not acknowledged.
    pub timeout: Duration,
}

/// Address, credentials, TLS, Sentinel and timeouts.
pub(super) fn validate(raw: &RawSettings) -> Result<RedisSettings, SettingsError> {
    let sentinel = sentinel(raw)?;
    let tls_flag = raw.flag("tls")?;
    let mut connection = match (raw.get("url"), &sentinel) {
        (Some(url), None) => {
            if tls_flag {
                let expected = "false with REDIS_URL (a rediss:// URL turns TLS on)";
                return Err(SettingsError::invalid("tls", "true", expected));
            }
            connection_from_url(url)?
        }
        _ => connection_from_parts(raw, tls_flag)?,
    };
    connection = with_password_file(raw, connection)?;
    let data_tls = matches!(connection.addr(), ConnectionAddr::TcpTls { .. });
    let uses_tls = data_tls || sentinel.as_ref().is_some_and(|s| s.tls);
    Ok(RedisSettings {
        connection,
        tls_root_cert: tls::root_cert(raw, uses_tls)?,
        tls_client_cert: tls::client_cert(raw, uses_tls)?,
        sentinel,
        replica_ack: replica_ack(raw)?,
        connect_timeout: raw.seconds("connect_timeout", 0.001, 3600.0)?,
        command_timeout: raw.seconds("command_timeout", 0.001, 3600.0)?,
        block_timeout: raw.seconds("block_timeout", 0.01, 3600.0)?,
        proto_max_bulk_len: raw.int("proto_max_bulk_len", 1 << 20, 1 << 32)?,
    })
}

/// `REDIS_URL`, which replaces host, port, db, username and password.
fn connection_from_url(url: &str) -> Result<ConnectionInfo, SettingsError> {
    let allowed = "a redis:// or rediss:// URL such as redis://user:pass@host:6379/0";
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(SettingsError::invalid("url", url, allowed));
    }
    let info = url
        .into_connection_info()
        .map_err(|_| SettingsError::invalid("url", url, allowed))?;
    // `redis://secret@host` reads as a user name without a password, and user names are
    // logged; insist on the unambiguous forms.
    let authority = url.split_once("://").map_or("", |(_, rest)| rest);
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if !userinfo.contains(':') {
            return Err(SettingsError::invalid(
                "url",
                url,
                "a password as redis://:password@host or redis://user:password@host",
            ));
        }
    }
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP2);
    Ok(info.set_redis_settings(redis))
}

/// Host, port, db and the optional credentials, when no URL is set. With Sentinel the host
/// and port are placeholders: the connector replaces them with the primary's address.
fn connection_from_parts(raw: &RawSettings, tls: bool) -> Result<ConnectionInfo, SettingsError> {
    let host = raw.name("host")?;
    let port: u16 = raw.int("port", 1, 65535)?;
    let db: i64 = raw.int("db", 0, 1_000_000)?;
    let mut redis = redis::RedisConnectionInfo::default()
        .set_db(db)
        .set_protocol(ProtocolVersion::RESP2);
    if let Some(user) = raw.get("username") {
        redis = redis.set_username(user);
    }
    if let Some(pass) = raw.get("password") {
        redis = redis.set_password(pass);
    }
    let info = address(host, port, tls)
        .into_connection_info()
        .map_err(|_| {
            SettingsError::invalid(
                "host",
                raw.get("host").unwrap_or_default(),
                "a host name or address",
            )
        })?;
    Ok(info.set_redis_settings(redis))
}

/// The address of `host:port`, over TLS (with host name verification) when `tls`.
pub fn address(host: String, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}

/// `REDIS_PASSWORD_FILE` applied to `info`, whose password must then come from nowhere else.
fn with_password_file(
    raw: &RawSettings,
    info: ConnectionInfo,
) -> Result<ConnectionInfo, SettingsError> {
    let Some(path) = raw.get("password_file") else {
        return Ok(info);
    };
    let from_url = raw.get("url").is_some() && info.redis_settings().password().is_some();
    if raw.get("password").is_some() || from_url {
        let expected = "to be set only without REDIS_PASSWORD and without a password in REDIS_URL";
        return Err(SettingsError::invalid("password_file", path, expected));
    }
    match secret(raw, "password")? {
        Some(password) => {
            let redis = info.redis_settings().clone().set_password(password);
            Ok(info.set_redis_settings(redis))
        }
        None => Ok(info),
    }
}

/// The secret `key`, given directly or as the contents of the file named by `<key>_file`
/// (the Docker and Kubernetes secrets convention); setting both is an error. One trailing
/// newline is trimmed, since editors and `echo` add it.
fn secret(raw: &RawSettings, key: &str) -> Result<Option<String>, SettingsError> {
    let file_key = format!("{key}_file");
    let Some(path) = raw.get(&file_key) else {
        return Ok(raw.get(key).map(str::to_owned));
    };
    if raw.get(key).is_some() {
        let expected = format!("to be set only without {}", env_name(key));
        return Err(SettingsError::invalid(&file_key, path, expected));
    }
    let bytes = raw.file(&file_key, "file")?.unwrap_or_default();
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SettingsError::invalid(&file_key, path, "a file holding UTF-8 text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(SettingsError::invalid(
            &file_key,
            path,
            "a file holding a non-empty secret",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// The Sentinel settings, when `sentinels` is set. The sentinels take the place of the
/// address, so an address set beside them is an error rather than silently ignored.
fn sentinel(raw: &RawSettings) -> Result<Option<SentinelSettings>, SettingsError> {
    let Some(list) = raw.get("sentinels") else {
        for key in [
            "sentinel_master",
            "sentinel_username",
            "sentinel_password",
            "sentinel_password_file",
        ] {
            if let Some(v) = raw.get(key) {
                return Err(SettingsError::invalid(
                    key,
                    v,
                    "to be set only with REDIS_SENTINELS",
                ));
            }
        }
        return Ok(None);
    };
    for key in ["url", "host", "port"] {
        if raw.is_explicit(key) {
            return Err(SettingsError::invalid(
                key,
                raw.get(key).unwrap_or_default(),
                "to be unset with REDIS_SENTINELS (the sentinels name the primary)",
            ));
        }
    }
    let nodes = sentinel_nodes(list).ok_or_else(|| {
        let expected = "comma-separated host:port pairs such as 10.0.0.1:26379,10.0.0.2:26379";
        SettingsError::invalid("sentinels", list, expected)
    })?;
    Ok(Some(SentinelSettings {
        nodes,
        master: raw.name("sentinel_master")?,
        username: raw.get("sentinel_username").map(str::to_owned),
        password: secret(raw, "sentinel_password")?,
        tls: raw.flag("sentinel_tls")?,
    }))
}

/// `host:port,host:port,...`; `None` when any part is not one.
fn sentinel_nodes(list: &str) -> Option<Vec<(String, u16)>> {
    list.split(',')
        .map(|node| {
            let (host, port) = node.trim().rsplit_once(':')?;
            let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (!host.is_empty()).then(|| (host.to_owned(), port))
        })
        .collect()
}

/// `REDIS_MIN_REPLICAS_ACK` and its timeout; off when empty.
fn replica_ack(raw: &RawSettings) -> Result<Option<ReplicaAck>, SettingsError> {
    if raw.get("min_replicas_ack").is_none() {
        return Ok(None);
    }
    let n: u32 = raw.int("min_replicas_ack", 1, 1000)?;
    Ok(Some(ReplicaAck {
        replicas: NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
        timeout: raw.seconds("min_replicas_timeout", 0.001, 3600.0)?,
    }))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod loading_tests;
