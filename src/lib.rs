//! `batch-processor` moves JSON events from Redis lists into `batch_processing` envelopes on
//! another list, crash-safely: no message is lost or duplicated, whatever happens to the
//! process or to Redis.
//!
//! The folders follow the parts of the program, in the order a message meets them:
//!
//! - [`settings`]: the environment, an optional file and the defaults, validated once into
//!   typed [`settings::Settings`].
//! - [`redis`]: connections with explicit timeouts, the daemon's key names, error kinds and
//!   the Lua scripts.
//! - [`mover`]: the loop that holds a source's lease, peeks its tail, plans envelopes and
//!   commits them in one atomic step each.
//! - [`message`]: what makes a message good (the strict JSON profile); [`envelope`] and
//!   [`dead_letter`]: the two record formats other services depend on.
//! - [`ledger`]: the batch ledger (an entry per envelope, written in its commit) and the
//!   transformer's claim/heartbeat/ack protocol, a Redis function library.
//! - [`daemon`]: wires the mover, the scheduler and its jobs, and the HTTP server under one
//!   shutdown; catches signals.
//! - [`telemetry`]: events (a log line and its metric together), metrics, readiness, the HTTP
//!   probes and logging.
//! - [`tools`]: the operator commands (`status`, `dlq`, `batch`, `ledger install`, `health`)
//!   and the `demo` scraper and transformer.
//! - [`cli`]: command-line parsing, mode dispatch and exit codes; `main.rs` only calls it.
//!
//! Crate-wide lints (no `unsafe`, documented public items, no unreachable `pub`, no silent
//! numeric casts, no `unwrap` outside tests) live in `Cargo.toml`'s `[lints]` table.

pub mod cli;
pub mod daemon;
pub mod dead_letter;
pub mod envelope;
pub mod ledger;
pub mod message;
pub mod mover;
pub mod redis;
pub mod settings;
pub mod telemetry;
pub mod tools;
