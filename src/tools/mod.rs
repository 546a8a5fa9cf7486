//! The operator commands. `status`, `dlq` and `batch` read Redis alone, so they work from any
//! machine that reaches Redis, whether or not a daemon runs; `health` asks a daemon's own
//! probe; the `demo` roles play the scraper and the transformer around the daemon.

pub mod batch;
pub mod demo;
pub mod dlq;
pub mod health;
pub mod status;
