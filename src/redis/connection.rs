//! Connections to Redis, each with timeouts that fit its use, and error classification.
//!
//! redis-rs gives every async connection a 500 ms response timeout by default, which also
//! cuts blocking commands. Here every connection gets an explicit timeout: the command
//! timeout for ordinary work, and the command timeout plus the server-side block time for
//! the connection that waits on an empty source. Blocking waits get a connection of their
//! own because a blocked multiplexed connection stalls every clone of it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, ServerErrorKind};

use crate::settings::RedisSettings;

/// Opens connections to the configured Redis.
#[derive(Debug, Clone)]
pub struct Connector {
    client: redis::Client,
    settings: RedisSettings,
}

/// The connection could not be set up (before any network I/O).
#[derive(Debug, thiserror::Error)]
#[error("cannot configure the Redis client for {addr}: {source}")]
pub struct ConfigError {
    addr: String,
    #[source]
    source: RedisError,
}

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
        .map_err(|source| ConfigError {
            addr: settings.display_addr(),
            source,
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

/// Why a command-line tool could not open its connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The Redis client could not be configured from the settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis refused the configured credentials.
    #[error("Redis at {addr} refused the credentials: {source}")]
    Auth {
        /// Address of the server.
        addr: String,
        /// What the client said.
        #[source]
        source: RedisError,
    },
    /// No connection could be made (refused, timed out, TLS failure...).
    #[error("cannot connect to Redis at {addr} ({kind}): {source}")]
    Unreachable {
        /// Address of the server.
        addr: String,
        /// Short error class, as in the daemon's logs.
        kind: &'static str,
        /// What the client said.
        #[source]
        source: RedisError,
    },
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
            let addr = connector.addr();
            Err(match error_kind(&source) {
                "auth" => ConnectError::Auth { addr, source },
                kind => ConnectError::Unreachable { addr, kind, source },
            })
        }
    }
}

/// A short, stable class for an error: the metrics label and the `error_kind` log field.
pub fn error_kind(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    // A pipeline or transaction reports the errors of its commands; the first one says why.
    if let Some(errors) = e.clone().into_server_errors() {
        if let Some((_, first)) = errors.iter().find(|(_, e)| e.code() != "EXECABORT") {
            return code_kind(first.code()).unwrap_or("server");
        }
    }
    match e.kind() {
        ErrorKind::Io => "io",
        ErrorKind::AuthenticationFailed => "auth",
        ErrorKind::Server(ServerErrorKind::NoPerm) => "no_perm",
        ErrorKind::Server(ServerErrorKind::BusyLoading) => "loading",
        ErrorKind::Server(ServerErrorKind::ReadOnly) => "read_only",
        ErrorKind::Server(ServerErrorKind::ExecAbort) => "exec_abort",
        ErrorKind::Server(ServerErrorKind::NoScript) => "no_script",
        ErrorKind::Server(_) => "server",
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => "protocol",
        _ => e.code().and_then(code_kind).unwrap_or("other"),
    }
}

/// The class of a Redis error code (the first word of its reply).
fn code_kind(code: &str) -> Option<&'static str> {
    Some(match code {
        "WRONGTYPE" => "wrong_type",
        "NOAUTH" | "WRONGPASS" => "auth",
        "NOPERM" => "no_perm",
        "OOM" => "oom",
        "MISCONF" => "misconf",
        "LOADING" => "loading",
        "READONLY" => "read_only",
        "EXECABORT" => "exec_abort",
        "NOSCRIPT" => "no_script",
        _ => return None,
    })
}
