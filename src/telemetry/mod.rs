//! What the daemon tells about itself: [`events`] (one log line and its metric together),
//! [`metrics`], [`health`] (readiness flags), the [`http`] probes and [`logging`] set-up.

pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
