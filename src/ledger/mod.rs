//! The batch ledger and the transformer's claim/ack protocol.
//!
//! With `REDIS_BATCH_LEDGER` on, every envelope gets a hash `<prefix><event_id>`, written in
//! the commit that pushes it ([`crate::mover`]'s `ledger` step). Transformers then take
//! envelopes through a Redis function library (`src/redis/functions/ledger.lua`, library
//! `batch_ledger`), each step one atomic call any language can make:
//!
//! - [`keys`]: the key names, derived from the prefix exactly as the library derives them.
//! - [`library`]: loading the library (`FUNCTION LOAD REPLACE`), and calling its functions
//!   with a reload when Redis lost it (a restart without persistence, `FUNCTION FLUSH`).
//! - [`entry`]: one batch's hash, parsed for the operator views.
//!
//! The recovery of dead workers' batches runs as a scheduler job
//! ([`crate::daemon::jobs`]); the operator views live in [`crate::tools::batch`].

pub mod entry;
pub mod keys;
pub mod library;

pub use entry::{Entry, Status};
pub use keys::LedgerKeys;
pub use library::{
    Ack, AckReport, Claim, LedgerError, RecoverArgs, Recovered, LIBRARY, LIBRARY_NAME,
};
