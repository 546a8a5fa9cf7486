//! Shutdown signals: SIGTERM (what container runtimes send) as well as SIGINT (Ctrl-C).

use std::future::Future;

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
