//! Settings: read once from the compiled-in `config/default.toml`, an optional operator file
//! and the environment, then validated into typed values.
//!
//! The work is split the way the data flows, so each step can be read and tested alone:
//!
//! - `env`: where environment variables come from ([`Env`]). Tests hand over a map and never touch
//!   the process environment.
//! - `load`: layering (defaults, then the file, then the environment) and every read from
//!   disk, producing raw strings and file contents.
//! - `validate`: pure; turns the raw values into the typed [`Settings`] below. A bad value
//!   becomes a [`SettingsError`] naming the variable, the value it got (never a secret) and
//!   what is allowed.
//! - `redact`: the one place that decides how a secret is hidden.
//! - `report`: what loading tells the operator besides the settings: typo warnings and the
//!   effective listing of `check-config`. It lives outside [`Settings`] so the daemon's
//!   settings hold only what the daemon uses.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

pub use crate::message::Profile;

use redis::{ConnectionAddr, ConnectionInfo};

mod connection;
mod env;
mod error;
mod flow;
mod keys;
mod ledger;
mod load;
mod raw;
mod redact;
mod report;
mod scale;
mod tls;
mod validate;

pub use connection::{address, ReplicaAck, SentinelSettings};
pub use env::{Env, ProcessEnv};
pub use error::SettingsError;
pub use flow::{FlowSettings, RateLimit};
pub use keys::{env_name, ENV_PREFIX, KNOWN_KEYS};
pub use ledger::LedgerSettings;
pub use load::{load, load_with_report};
pub use redact::{redact, redact_url};
pub use report::Effective;
pub use scale::{check_slots, ClusterMode, ScaleSettings};
pub use tls::ClientCert;

/// The defaults, with their documentation. Compiled in so the binary needs no files.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Everything loading produced: the settings and what to tell the operator about them.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated settings.
    pub settings: Settings,
    /// Problems that did not stop loading (likely typos), to log once logging is up.
    pub warnings: Vec<String>,
    /// The effective values for `check-config`, secrets already redacted.
    pub effective: Effective,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line on stdout.
    Json,
    /// Human-readable, coloured when stdout is a terminal.
    Pretty,
}

/// When the mover takes batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Take batches as soon as they fill or time out.
    Continuous,
    /// Scheduled mode: at most `max_batches` batches once every `every`.
    Every {
        /// Period of the schedule.
        every: Duration,
        /// Most batches taken per period.
        max_batches: NonZeroUsize,
    },
}

/// Names of the lists the daemon works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    /// Producers LPUSH here; the daemon takes from the tails. Highest priority first, never
    /// empty, no name twice (`REDIS_RAW_DATA_QUEUE`, comma-separated).
    pub sources: Vec<String>,
    /// Envelopes are LPUSHed here.
    pub processing: String,
    /// Dead-letter records are LPUSHed here.
    pub dead_letter: String,
}

impl Queues {
    /// The source lists as configured: their names joined with `,`. Names the deployment in
    /// logs and in its own keys (a single source is just its name).
    pub fn sources_label(&self) -> String {
        self.sources.join(",")
    }

    /// The highest-priority source list: where the demo producer pushes.
    pub fn first_source(&self) -> &str {
        // Invariant: validation refuses an empty list of sources.
        self.sources.first().map_or("", String::as_str)
    }
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Address, database and credentials.
    pub connection: ConnectionInfo,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for the reply to one non-blocking command or pipeline.
    pub command_timeout: Duration,
    /// How long one blocking wait on an empty source lasts on the server.
    pub block_timeout: Duration,
    /// The largest value the server accepts, when `CONFIG GET proto-max-bulk-len` is not
    /// allowed.
    pub proto_max_bulk_len: usize,
    /// PEM certificates to trust for `rediss://` instead of the public roots.
    pub tls_root_cert: Option<Vec<u8>>,
    /// The client certificate to present (mTLS).
    pub tls_client_cert: Option<ClientCert>,
    /// The sentinels that name the primary; then `connection`'s address is a placeholder
    /// and only its credentials, database and TLS choice are used.
    pub sentinel: Option<SentinelSettings>,
    /// `WAIT` for replicas after each commit.
    pub replica_ack: Option<ReplicaAck>,
}

impl RedisSettings {
    /// `host:port` (or the socket path) for log lines; never contains credentials.
    pub fn display_addr(&self) -> String {
        if let Some(sentinel) = &self.sentinel {
            return format!("sentinel:{}", sentinel.master);
        }
        match self.connection.addr() {
            ConnectionAddr::Tcp(h, p) => format!("{h}:{p}"),
            ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}"),
            ConnectionAddr::Unix(path) => path.display().to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// Batch shape and timing.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Most messages in one envelope.
    pub size: NonZeroUsize,
    /// A partial batch is sent this long after its first message was seen.
    pub timeout: Duration,
    /// What a good message is: at most this many bytes, JSON nested at most this deep
    /// (`REDIS_MAX_MESSAGE_BYTES`, `REDIS_MAX_JSON_DEPTH`); anything else is dead-lettered.
    pub message: Profile,
    /// Most messages read per round trip; a whole number of batches.
    pub prefetch: usize,
    /// Interval between length checks while a partial batch waits.
    pub poll_interval: Duration,
    /// Most message bytes held at once: the copies of the sources' tails plus what the reads
    /// in flight may bring (`REDIS_MAX_INFLIGHT_BYTES`).
    pub max_inflight_bytes: usize,
}

/// Identity and lease of this replica.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// Prefix of the daemon's own keys.
    pub key_prefix: String,
    /// This replica's identity.
    pub consumer_name: String,
    /// Lease time to live; bounds takeover after a crash.
    pub lease_ttl: Duration,
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// How long commits may keep failing, with a backlog waiting, before the mover is called
    /// stuck (`/readyz` 503, `mover stuck` logged, `mover_stuck` metric).
    pub stuck_after: Duration,
}

/// Validated settings: every value checked and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connection.
    pub redis: RedisSettings,
    /// The three lists.
    pub queues: Queues,
    /// Batching.
    pub batch: BatchSettings,
    /// Replica identity and lease.
    pub replica: ReplicaSettings,
    /// Reconnect backoff.
    pub retry: RetrySettings,
    /// Graceful shutdown budget.
    pub shutdown_grace: Duration,
    /// Batch byte cap and output rate limit.
    pub flow: FlowSettings,
    /// Pipelines (`REDIS_SHARDS`) and cluster mode.
    pub scale: ScaleSettings,
    /// The batch ledger and the transformer's claim/ack protocol.
    pub ledger: LedgerSettings,
    /// Continuous or scheduled mode.
    pub schedule: Schedule,
    /// Period of the stats line.
    pub stats_interval: Duration,
    /// HTTP listen address, `None` when disabled.
    pub http_addr: Option<SocketAddr>,
    /// Per-envelope info lines allowed per second.
    pub log_envelopes_per_second: u32,
    /// Log line format.
    pub log_format: LogFormat,
    /// `RUST_LOG` filter.
    pub log_filter: String,
}
