//! Connections to Redis, each with timeouts that fit its use.
//!
//! redis-rs gives every async connection a 500 ms response timeout by default, which also
//! cuts blocking commands. Here every connection gets an explicit timeout: the command
//! timeout for ordinary work, and the command timeout plus the server-side block time for
//! the connection that waits on an empty source. Blocking waits get a connection of their
//! own because a blocked multiplexed connection stalls every clone of it.
//!
//! With Sentinel, every new connection asks the sentinels for the primary again: the mover,
//! the lease keeper, the jobs and the operator commands all reconnect after an error, so a
//! failover (the old primary answering `READONLY`, or its connections dropped) is followed
//! without any other part knowing about Sentinel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError};

use crate::redis::error::{ErrorKind, RedisFailure};
use crate::redis::sentinel;
use crate::scale::cluster::Router;
use crate::settings::{address, RedisSettings, SentinelSettings};

/// The `command` of a [`RedisFailure`] when no connection could be made.
pub const CONNECT: &str = "connect";

/// Opens connections to the configured Redis: the one address, or the primary the sentinels
/// name at the moment of connecting.
#[derive(Debug, Clone)]
pub struct Connector {
    target: Target,
    settings: RedisSettings,
    /// The primary the sentinels named last, for log lines.
    primary: Arc<Mutex<Option<String>>>,
    /// Bumped whenever the sentinels name a different primary than before: a connection made
    /// under an older generation goes to a node that is no longer the primary.
    generation: Arc<AtomicU64>,
    /// On a cluster: the slot whose primary every connection goes to, found afresh for each
    /// connection (see [`crate::scale::cluster`]).
    route: Option<(Router, u16)>,
}

#[derive(Debug, Clone)]
enum Target {
    /// A fixed address.
    Direct(redis::Client),
    /// Whatever primary the sentinels name, asked again for every connection.
    Sentinel {
        sentinel: SentinelSettings,
        certs: Option<redis::TlsCertificates>,
    },
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
        let certs = tls_certificates(settings);
        let target = match &settings.sentinel {
            Some(sentinel) => Ok(Target::Sentinel {
                sentinel: sentinel.clone(),
                certs,
            }),
            None => {
                let tls = matches!(settings.connection.addr(), ConnectionAddr::TcpTls { .. });
                sentinel::client(settings.connection.clone(), &certs, tls).map(Target::Direct)
            }
        }
        .map_err(|source| {
            ConfigError(RedisFailure::new(
                settings.display_addr(),
                "configure",
                source,
            ))
        })?;
        Ok(Connector {
            target,
            settings: settings.clone(),
            primary: Arc::default(),
            generation: Arc::default(),
            route: None,
        })
    }

    /// This connector, but every connection goes to the primary that owns `slot`, as `router`
    /// finds it when the connection opens.
    pub fn for_slot(&self, router: &Router, slot: u16) -> Self {
        Connector {
            route: Some((router.clone(), slot)),
            ..self.clone()
        }
    }

    /// Which primary connections now go to; it changes only with Sentinel, when the
    /// sentinels name another node. Holders of long-lived connections compare it with the
    /// value read when they connected, and reconnect when it moved on: a demoted primary may
    /// keep answering as one for seconds before the sentinels reconfigure it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// With Sentinel, ask the sentinels for the primary now and record it (bumping the
    /// generation when it changed). Does nothing without Sentinel.
    pub async fn refresh_primary(&self) -> Result<(), RedisError> {
        let Target::Sentinel { sentinel, certs } = &self.target else {
            return Ok(());
        };
        let settings = &self.settings;
        let ask = sentinel::sentinel_config(settings.connect_timeout, settings.command_timeout);
        let (host, port) = sentinel::primary_addr(sentinel, certs, &ask).await?;
        self.record_primary(&sentinel.master, format!("{host}:{port}"));
        Ok(())
    }

    /// Note `shown` as the primary; log and bump the generation when it is a change.
    fn record_primary(&self, master: &str, shown: String) {
        let Ok(mut primary) = self.primary.lock() else {
            return;
        };
        if primary.as_deref() == Some(shown.as_str()) {
            return;
        }
        tracing::info!(message = "primary found", master, primary = %shown, previous = ?*primary);
        if primary.is_some() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        *primary = Some(shown);
    }

    /// The address, for log lines (with Sentinel, the master's name and the primary last
    /// found).
    pub fn addr(&self) -> String {
        let primary = self.primary.lock().map(|p| p.clone()).unwrap_or_default();
        match primary {
            Some(primary) => format!("{} (primary {primary})", self.settings.display_addr()),
            None => self.settings.display_addr(),
        }
    }

    /// `command` failed on this connector's server.
    pub fn failure(&self, command: &'static str, source: RedisError) -> RedisFailure {
        RedisFailure::new(self.addr(), command, source)
    }

    /// A connection for non-blocking commands.
    pub async fn command_connection(&self) -> Result<MultiplexedConnection, RedisError> {
        self.connect(self.settings.command_timeout).await
    }

    /// A connection for the mover's commits: with `REDIS_MIN_REPLICAS_ACK`, its response
    /// timeout leaves room for the `WAIT` after each commit.
    pub async fn commit_connection(&self) -> Result<MultiplexedConnection, RedisError> {
        self.connect(self.commit_timeout()).await
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
        if let Some((router, slot)) = &self.route {
            let owner = router.owner(*slot).await.map_err(|e| e.into_redis())?;
            let node = Connector::new(&owner).map_err(|e| e.0.source)?;
            return node.connect_here(response_timeout).await;
        }
        self.connect_here(response_timeout).await
    }

    /// A connection for non-blocking commands to the configured node itself, whatever the
    /// route (for asking a cluster node who owns a slot).
    pub async fn node_connection(&self) -> Result<MultiplexedConnection, RedisError> {
        self.connect_here(self.settings.command_timeout).await
    }

    /// A connection to the configured address (or the sentinels' primary), never routed.
    async fn connect_here(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        match &self.target {
            Target::Direct(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
            Target::Sentinel { sentinel, certs } => {
                self.connect_primary(sentinel, certs, &config).await
            }
        }
    }

    /// Ask the sentinels for the primary, connect to it and check that it is one.
    async fn connect_primary(
        &self,
        sentinel: &SentinelSettings,
        certs: &Option<redis::TlsCertificates>,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, RedisError> {
        let settings = &self.settings;
        let ask = sentinel::sentinel_config(settings.connect_timeout, settings.command_timeout);
        let (host, port) = sentinel::primary_addr(sentinel, certs, &ask).await?;
        let shown = format!("{host}:{port}");
        let tls = matches!(settings.connection.addr(), ConnectionAddr::TcpTls { .. });
        let info = settings
            .connection
            .clone()
            .set_addr(address(host, port, tls));
        let client = sentinel::client(info, certs, tls)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        sentinel::check_primary(&mut conn, &shown).await?;
        self.record_primary(&sentinel.master, shown);
        Ok(conn)
    }
}

/// The private CA and client certificate, if either is configured.
fn tls_certificates(settings: &RedisSettings) -> Option<redis::TlsCertificates> {
    if settings.tls_root_cert.is_none() && settings.tls_client_cert.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: settings
            .tls_client_cert
            .as_ref()
            .map(|c| redis::ClientTlsConfig {
                client_cert: c.cert.clone(),
                client_key: c.key.clone(),
            }),
        root_cert: settings.tls_root_cert.clone(),
    })
}

/// Where a connection of the crate's own ([`crate::redis::raw`]) goes and how: the address,
/// the TLS trust and client certificate, the credentials and the database. Resolved here, in
/// one place, so whatever decides the address for redis-rs's connections decides it for these
/// too.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    /// Host and port (TLS or not), or a Unix socket.
    pub addr: redis::ConnectionAddr,
    /// User, password and database.
    pub redis: redis::RedisConnectionInfo,
    /// The CA certificate (PEM) a TLS server must chain to, when configured.
    pub tls_root_cert: Option<Vec<u8>>,
    /// The client certificate chain and key (PEM) a TLS server may ask for.
    pub tls_client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Bound on opening the stream.
    pub connect_timeout: Duration,
}

impl Connector {
    /// Where and how to open a connection of the crate's own, as of now: with Sentinel, the
    /// primary the sentinels name at this moment (recorded like any other connection's).
    /// On a cluster, the primary that owns the route's slot now.
    pub async fn stream_target(&self) -> Result<StreamTarget, RedisError> {
        let settings = &self.settings;
        let addr = match &self.target {
            _ if self.route.is_some() => self.routed_addr().await?,
            Target::Direct(_) => settings.connection.addr().clone(),
            Target::Sentinel { sentinel, certs } => {
                let ask =
                    sentinel::sentinel_config(settings.connect_timeout, settings.command_timeout);
                let (host, port) = sentinel::primary_addr(sentinel, certs, &ask).await?;
                self.record_primary(&sentinel.master, format!("{host}:{port}"));
                let tls = matches!(settings.connection.addr(), ConnectionAddr::TcpTls { .. });
                address(host, port, tls)
            }
        };
        Ok(StreamTarget {
            addr,
            redis: settings.connection.redis_settings().clone(),
            tls_root_cert: settings.tls_root_cert.clone(),
            tls_client_cert: settings
                .tls_client_cert
                .as_ref()
                .map(|c| (c.cert.clone(), c.key.clone())),
            connect_timeout: settings.connect_timeout,
        })
    }

    /// The address of the primary that owns the route's slot (the configured one unrouted).
    async fn routed_addr(&self) -> Result<ConnectionAddr, RedisError> {
        match &self.route {
            Some((router, slot)) => {
                let owner = router.owner(*slot).await.map_err(|e| e.into_redis())?;
                Ok(owner.connection.addr().clone())
            }
            None => Ok(self.settings.connection.addr().clone()),
        }
    }

    /// The response timeout of the mover's commits: the command timeout, plus the `WAIT`'s
    /// with `REDIS_MIN_REPLICAS_ACK`.
    pub fn commit_timeout(&self) -> Duration {
        let wait = self
            .settings
            .replica_ack
            .map_or(Duration::ZERO, |a| a.timeout);
        self.settings.command_timeout + wait
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
