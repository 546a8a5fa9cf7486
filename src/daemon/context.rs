//! What the daemon's tasks share: settings, the connector, key names, metrics, readiness and
//! the batch allowance of scheduled mode. Built once by [`crate::daemon`]; each task gets a clone (all fields are
//! cheap to clone and share their state).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::mover::allowance::BatchAllowance;
use crate::redis::connection::Connector;
use crate::redis::keys::Keys;
use crate::settings::Settings;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// The daemon's shared handles.
#[derive(Debug, Clone)]
pub struct Context {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Opens Redis connections; each task opens its own.
    pub connector: Connector,
    /// Key names for this source.
    pub keys: Keys,
    /// The process's metrics.
    pub metrics: Metrics,
    /// Readiness flags: the mover sets `mover_running`, the probe `redis_reachable`.
    pub health: Health,
    /// Scheduled mode's permits, refilled by the `allowance` job and spent by the mover; `None` when
    /// running continuously.
    pub allowance: Option<BatchAllowance>,
    /// When this process started, as written in the replica hash.
    pub started_at: DateTime<Utc>,
}
