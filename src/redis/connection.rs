//! Connections to Redis, each with timeouts that fit its use.
//!
//! redis-rs gives every async connection a 500 ms response timeout by default, which also
//! cuts blocking commands. Here every connection gets an explicit timeout: the command
//! timeout for ordinary work, and the command timeout plus the server-side block time for
//! the connection that waits on an empty source. Blocking waits get a connection of their
//! own because a blocked multiplexed connection stalls every clone of it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use crate::redis::error::{ErrorKind, RedisFailure};
use crate::settings::RedisSettings;

/// The `command` of a [`RedisFailure`] when no connection could be made.
pub const CONNECT: &str = "connect";

/// Opens connections to the configured Redis.
#[derive(Debug, Clone)]
pub struct Connector {
    client: redis::Client,
    settings: RedisSettings,
}

/// The connection could not be set up (before any network I/O).
#[derive(Debug, thiserror::Error)]
#[error("cannot configure the Redis client for {}: {}", .0.addr, .0.source)]
pub struct ConfigError(#[source] pub RedisFailure);

impl Connector {
    /// A connector for `settings`. Installs the TLS crypto provider on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, ConfigError> {
        // Fails only when a provider is already installed, which is what we want anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match &settings.tls_root_cert {
            None => redis::Client::open(settings.connection.clone()),
            Some(pem) => redis::Client::build_with_tls(
                settings.connection.clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        }
        .map_err(|source| {
            ConfigError(RedisFailure::new(
                settings.display_addr(),
                "configure",
                source,
            ))
        })?;
        Ok(Connector {
            client,
            settings: settings.clone(),
        })
    }

    /// The address, for log lines.
    pub fn addr(&self) -> String {
        self.settings.display_addr()
    }

    /// `command` failed on this connector's server.
    pub fn failure(&self, command: &'static str, source: RedisError) -> RedisFailure {
        RedisFailure::new(self.addr(), command, source)
    }

    /// A connection for non-blocking commands.
    pub async fn command_connection(&self) -> Result<MultiplexedConnection, RedisError> {
        self.connect(self.settings.command_timeout).await
    }

    /// A connection for blocking waits of up to `block`: its response timeout leaves room
    /// for the server-side block time.
    pub async fn blocking_connection(
        &self,
        block: Duration,
    ) -> Result<MultiplexedConnection, RedisError> {
        self.connect(self.settings.command_timeout + block).await
    }

    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// Where a connection of the crate's own ([`crate::redis::raw`]) goes and how: the address,
/// the TLS trust, the credentials and the database. Resolved here, in one place, so whatever
/// decides the address for redis-rs's connections decides it for these too.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    /// Host and port (TLS or not), or a Unix socket.
    pub addr: redis::ConnectionAddr,
    /// User, password and database.
    pub redis: redis::RedisConnectionInfo,
    /// The CA certificate (PEM) a TLS server must chain to, when configured.
    pub tls_root_cert: Option<Vec<u8>>,
    /// Bound on opening the stream.
    pub connect_timeout: Duration,
}

impl Connector {
    /// Where and how to open a connection of the crate's own, as of now.
    pub async fn stream_target(&self) -> Result<StreamTarget, RedisError> {
        Ok(StreamTarget {
            addr: self.settings.connection.addr().clone(),
            redis: self.settings.connection.redis_settings().clone(),
            tls_root_cert: self.settings.tls_root_cert.clone(),
            connect_timeout: self.settings.connect_timeout,
        })
    }
}

/// Why a command-line tool could not open its connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The Redis client could not be configured from the settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis refused the configured credentials.
    #[error("Redis at {} refused the credentials: {}", .0.addr, .0.source)]
    Auth(#[source] RedisFailure),
    /// No connection could be made (refused, timed out, TLS failure...).
    #[error("cannot connect to Redis at {} ({}): {}", .0.addr, .0.kind(), .0.source)]
    Unreachable(#[source] RedisFailure),
}

/// One connection for a command-line tool, with the bounded timeouts of [`Connector`] and
/// the failure classified for a one-line message.
pub async fn connect_once(
    settings: &RedisSettings,
) -> Result<(MultiplexedConnection, Connector), ConnectError> {
    let connector = Connector::new(settings)?;
    match connector.command_connection().await {
        Ok(conn) => Ok((conn, connector)),
        Err(source) => {
            let failure = connector.failure(CONNECT, source);
            Err(match failure.kind() {
                ErrorKind::Auth => ConnectError::Auth(failure),
                _ => ConnectError::Unreachable(failure),
            })
        }
    }
}
