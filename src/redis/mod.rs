//! Everything about talking to Redis that is not the mover's logic: connections with
//! explicit timeouts, the mover's own request connection (`raw`), the names of the daemon's
//! own keys, error kinds, and the Lua scripts (in `scripts/`, each headed by its KEYS and
//! ARGV).

pub mod connection;
pub mod error;
pub mod keys;
pub mod raw;
mod sentinel;

pub use error::{ErrorKind, RedisFailure};
