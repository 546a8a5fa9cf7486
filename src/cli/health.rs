//! The `health` subcommand's argument parsing and dispatch (the check lives in
//! [`crate::tools::health`]).

use std::time::Duration;

use crate::settings::Settings;
use crate::tools::health::{self, HealthError, Probe};

/// Ask the daemon's `/readyz` (`ready`) or `/healthz` on the settings' `REDIS_HTTP_ADDR`.
pub(super) async fn run(
    settings: &Settings,
    ready: bool,
    timeout: Duration,
) -> Result<String, HealthError> {
    let probe = if ready { Probe::Ready } else { Probe::Live };
    health::check(settings.http_addr, probe, timeout).await
}

/// A duration option in seconds (fractions allowed), as clap wants its parsers.
pub(super) fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?}: expected seconds above 0 and up to 3600"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_seconds_up_to_an_hour() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-2", "3601", "NaN", "soon"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
