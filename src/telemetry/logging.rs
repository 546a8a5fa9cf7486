//! The tracing subscriber. Only the binary calls [`init`]; the library just emits events.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The daemon logs to stdout.
    Stdout,
    /// CLI commands log to stderr so stdout holds only their output.
    Stderr,
}

/// Install the global subscriber. `filter` is a `RUST_LOG` expression, already validated.
pub fn init(format: LogFormat, filter: &str, target: Target) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` fails only when a subscriber is already set (tests); that one is kept.
    let _ = match (format, target) {
        (LogFormat::Json, Target::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        (LogFormat::Json, Target::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Pretty, Target::Stdout) => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        (LogFormat::Pretty, Target::Stderr) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
}
