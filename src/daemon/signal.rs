//! Shutdown signals: SIGTERM (what container runtimes send) as well as SIGINT (Ctrl-C).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// SIGTERM or SIGINT seen before the runtime's listeners were up.
///
/// A container runtime may stop a daemon a few milliseconds after starting it; without a
/// handler that early, the signal would kill the process instead of stopping it cleanly.
#[derive(Debug, Clone, Default)]
pub struct EarlySignals(Arc<AtomicBool>);

impl EarlySignals {
    /// Start catching SIGTERM and SIGINT into a flag. Call it first thing in `run`.
    pub fn catch() -> Self {
        let flag = EarlySignals::default();
        #[cfg(unix)]
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // Fails only for forbidden signals, which these are not.
            let _ = signal_hook::flag::register(signal, Arc::clone(&flag.0));
        }
        flag
    }

    /// Whether a signal has arrived.
    pub fn received(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Start listening for SIGTERM and SIGINT now (a signal that arrives from here on is caught,
/// not fatal) and return a future that resolves when one arrives. Call it inside the runtime.
pub fn shutdown() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (term, int) => {
                    let error = term.err().or(int.err()).map(|e| e.to_string());
                    tracing::warn!(message = "cannot listen for signals", error);
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
