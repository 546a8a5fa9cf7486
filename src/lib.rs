//! `batch-processor` moves JSON events from a Redis list into `batch_processing` envelopes on
//! another list, crash-safely: no message is lost or duplicated, whatever happens to the
//! process or to Redis.
//!
//! A tour of the modules, in the order a message meets them:
//!
//! - [`settings`]: defaults, environment and validation into typed [`settings::Settings`].
//! - [`connection`]: Redis connections with explicit timeouts, and error classes.
//! - [`lease`]: the fenced lease that makes one replica at a time the owner of a source.
//! - [`mover`]: the loop that peeks the source's tail, builds envelopes and commits them.
//! - [`batch`]: turning a run of peeked messages into envelopes and dead letters.
//! - [`commit`]: the one atomic transaction that pushes envelopes and trims the source.
//! - [`envelope`]: message checking, the envelope and dead-letter formats.
//! - [`daemon`]: wires the mover, the scheduler and the HTTP server under one shutdown;
//!   [`context`]: the handles they share.
//! - [`scheduler`]: the tick that drives periodic jobs; [`jobs`]: the jobs themselves
//!   (heartbeats, stats, probes, beat).
//! - [`http`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`metrics`], [`health`], [`events`]: what the daemon reports about itself.
//! - [`status`], [`dlq`]: the operator commands.
//! - [`cli`]: command-line parsing and exit codes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod batch;
pub mod beat;
pub mod cli;
pub mod commit;
pub mod connection;
pub mod context;
pub mod daemon;
pub mod dlq;
pub mod envelope;
pub mod events;
pub mod health;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod mover;
pub mod scheduler;
pub mod settings;
pub mod signal;
pub mod status;
