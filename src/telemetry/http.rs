//! The HTTP server for probes and metrics:
//!
//! - `GET /healthz`: `200 ok` while the process runs (liveness).
//! - `GET /readyz`: `200 ready` while Redis answers the probe and the mover loop runs and is
//!   not stuck, else `503` with a body naming what is missing (readiness).
//! - `GET /metrics`: the Prometheus text exposition.
//!
//! Handlers only read shared state ([`Health`] flags, [`Metrics`] series); none of them
//! touches Redis, so a request never waits on it. Readiness follows Redis within the probe
//! job's period (see [`crate::daemon::jobs`]).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// After shutdown is requested, requests in flight get this long to finish.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Why the HTTP server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// The address from `REDIS_HTTP_ADDR`.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// The bound address.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Bind the listener. Separate from [`serve`] so the daemon fails early on a taken port, and
/// tests can bind port 0 and read the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

#[derive(Debug, Clone)]
struct AppState {
    health: Health,
    metrics: Metrics,
}

/// The routes, without a listener.
fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

/// Serve the endpoints on `listener` until `shutdown` is cancelled, then give requests in
/// flight up to [`DRAIN_LIMIT`] to finish.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(addr = %addr, "http listening");
    let server = axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown.cancelled() => {
            match tokio::time::timeout(DRAIN_LIMIT, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(addr = %addr, limit_ms = crate::telemetry::millis(DRAIN_LIMIT), "http drain ran out; closing open connections");
                    Ok(())
                }
            }
        }
    };
    result.map_err(|source| HttpError::Serve {
        addr: addr.clone(),
        source,
    })?;
    tracing::debug!(addr = %addr, "http stopped");
    Ok(())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let mut missing = Vec::new();
    if !state.health.redis_reachable() {
        missing.push("redis unreachable".to_string());
    }
    if !state.health.mover_running() {
        missing.push("mover not running".to_string());
    }
    if let Some(cause) = state.health.mover_stuck() {
        missing.push(format!("mover stuck: {cause}"));
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", missing.join(", ")),
        )
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    // Readiness as a series, so an alert can fire on it; read at the scrape, like /readyz.
    state.metrics.ready.set(i64::from(state.health.ready()));
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}
