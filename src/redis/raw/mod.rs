//! The mover's request connection: packed commands written straight to the stream, and the
//! RESP replies parsed here rather than by redis-rs.
//!
//! redis-rs copies every element of a reply into a `Vec<u8>` of its own and holds a whole reply
//! in memory, twice for a large element (its read buffer and the value). Here an `LRANGE`
//! reply streams into [`Item`]s sliced out of one read buffer ([`ItemsReply`]): no copy
//! per element, and an element over the size limit never held at all. Commands are still
//! packed by redis-rs, and small replies are still [`redis::Value`]s, so the mover checks them
//! as before. Errors convert into [`redis::RedisError`], so they classify (io, timeout, server
//! codes) exactly as the other connections' errors do.
//!
//! One connection serves one owner at a time (`&mut self`), which writes requests in the
//! order it makes them and reads their replies in the same order. Every wait is bounded by
//! the connection's timeout; the parse state lives in the caller's [`ItemsReply`] and
//! in this read buffer, so a read dropped while it waits (shutdown) loses nothing.

mod item;
mod lrange;
mod resp;
mod stream;

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use redis::{RedisError, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use item::{Item, Skipped, SKIPPED_COST};
pub use lrange::{Items, ItemsReply, Keep};
pub use resp::Malformed;
use stream::Io;

use crate::redis::connection::StreamTarget;

/// Bytes asked of the socket at a time (fewer, larger reads: fewer syscalls).
const READ_CHUNK: usize = 256 * 1024;

/// A new buffer is taken when less room than this is left in the current one.
const MIN_SPARE: usize = 16 * 1024;

/// Why the raw connection failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The stream failed (refused, reset, closed, TLS...).
    #[error("{what}: {source}")]
    Io {
        /// What the connection was doing.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No reply, or no progress writing, within the timeout.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What the connection was waiting for.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The server's reply did not follow the protocol.
    #[error(transparent)]
    Protocol(#[from] Malformed),
    /// The server refused a command of the connection's set-up (`AUTH`, `SELECT`).
    #[error("{command} refused: {error}")]
    Refused {
        /// The command.
        command: &'static str,
        /// What the server said.
        error: redis::ServerError,
    },
    /// The settings cannot make a connection (a bad CA certificate, an unsupported address).
    #[error("cannot configure the connection: {0}")]
    Config(String),
}

impl From<RawError> for RedisError {
    fn from(e: RawError) -> Self {
        match e {
            RawError::Io { source, .. } => RedisError::from(source),
            RawError::Timeout { what, after } => RedisError::from(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} timed out after {after:?}"),
            )),
            RawError::Protocol(m) => {
                RedisError::from((redis::ErrorKind::Parse, "malformed reply", m.0))
            }
            RawError::Refused { error, .. } => RedisError::from(error),
            RawError::Config(detail) => RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot configure the connection",
                detail,
            )),
        }
    }
}

/// A connection that writes packed requests and parses their replies itself.
pub struct RawConnection {
    io: Box<dyn Io>,
    buf: BytesMut,
    timeout: Duration,
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("buffered", &self.buf.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RawConnection {
    /// Connect to `target` (TCP or TLS as it says, then `AUTH` and `SELECT`), with `timeout`
    /// for every later wait.
    pub async fn connect(target: &StreamTarget, timeout: Duration) -> Result<Self, RawError> {
        let io = stream::open(target).await?;
        let mut conn = RawConnection {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            timeout,
        };
        stream::hello(&mut conn, target).await?;
        Ok(conn)
    }

    /// The timeout every wait is bounded by.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Write a packed request (commands packed by redis-rs), whole.
    pub async fn send(&mut self, packed: &[u8]) -> Result<(), RawError> {
        let write = async {
            self.io.write_all(packed).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(RawError::Io {
                what: "write",
                source,
            }),
            Err(_) => Err(RawError::Timeout {
                what: "write",
                after: self.timeout,
            }),
        }
    }

    /// The next small reply (not bounded by the timeout: the caller bounds the whole request).
    pub async fn value(&mut self) -> Result<Value, RawError> {
        loop {
            if let Some((value, used)) = resp::parse_value(&self.buf)? {
                let _ = self.buf.split_to(used);
                return Ok(value);
            }
            self.fill(1).await?;
        }
    }

    /// The rest of the `LRANGE` reply `reply`, keeping elements while `budget` lasts.
    pub async fn items(
        &mut self,
        reply: &mut ItemsReply,
        budget: &mut usize,
    ) -> Result<Items, RawError> {
        loop {
            if let Some(items) = reply.advance(&mut self.buf, budget)? {
                return Ok(items);
            }
            self.fill(reply.wants()).await?;
        }
    }

    /// Read at least one more byte, with room for `wants` bytes (an element kept whole
    /// arrives in one buffer, so it is sliced out, not copied).
    async fn fill(&mut self, wants: usize) -> Result<(), RawError> {
        let spare = self.buf.capacity() - self.buf.len();
        let needed = wants.saturating_sub(self.buf.len());
        if spare < MIN_SPARE || spare < needed {
            self.buf.reserve(needed.max(READ_CHUNK));
        }
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) => Err(RawError::Io {
                what: "read",
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "Redis closed the connection"),
            }),
            Ok(_) => Ok(()),
            Err(source) => Err(RawError::Io {
                what: "read",
                source,
            }),
        }
    }
}
