//! The `demo` subcommand's arguments and dispatch (the roles live in [`crate::tools::demo`]).

use std::process::ExitCode;

use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use super::EXIT_FAILURE;
use crate::settings::Settings;
use crate::tools::demo::{consume, produce};

/// The demo roles.
#[derive(Debug, Subcommand)]
pub enum DemoRole {
    /// LPUSH scraper events (about 500 bytes of JSON) onto the source list at a steady rate.
    Produce {
        /// Events per second (fractions allowed).
        #[arg(long, default_value = "5", value_parser = parse_rate)]
        rate: f64,
        /// Stop after this many events (default: until SIGTERM or SIGINT).
        #[arg(long)]
        count: Option<u64>,
        /// Every this many events one is malformed, to show dead letters; 0 for never.
        #[arg(long, value_name = "N", default_value_t = 50)]
        bad_every: u64,
    },
    /// Take envelopes off the processing list and log one summary line each: RPOP, or with
    /// REDIS_BATCH_LEDGER=true claim and ack them through the ledger's protocol.
    Consume {
        /// Stop after this many envelopes (default: until SIGTERM or SIGINT).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Run a demo role until it is done or `shutdown` (SIGTERM or SIGINT) fires.
pub(super) async fn run(
    role: DemoRole,
    settings: &Settings,
    shutdown: CancellationToken,
) -> ExitCode {
    let outcome = match role {
        DemoRole::Produce {
            rate,
            count,
            bad_every,
        } => {
            let opts = produce::ProduceOptions {
                rate,
                count,
                bad_every,
            };
            produce::run(settings, opts, shutdown).await.map(|_| ())
        }
        DemoRole::Consume { count } => {
            let opts = consume::ConsumeOptions { count };
            consume::run(settings, opts, shutdown).await.map(|_| ())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batch-processor: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The demo producer's rate, in events per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1_000_000.0)
        .ok_or_else(|| format!("{text:?}: expected events per second above 0 and up to 1000000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_positive_and_bounded() {
        assert_eq!(parse_rate(" 2.5 "), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "2000000", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
