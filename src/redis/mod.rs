//! Everything about talking to Redis that is not the mover's logic: connections with
//! explicit timeouts, the names of the daemon's own keys, error kinds, and the Lua scripts
//! (in `scripts/`, each headed by its KEYS and ARGV).

pub mod connection;
pub mod error;
pub mod keys;
mod sentinel;

pub use error::{ErrorKind, RedisFailure};
