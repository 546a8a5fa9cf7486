//! Ages on the command line: `30s`, `15m`, `2h`, `1d` (`dlq replay --older-than 2h`).
//!
//! The settings take plain seconds (`REDIS_PROCESSING_TIMEOUT=0.2`), which suits machines;
//! an operator filtering dead letters thinks in minutes, hours and days, so the CLI takes a
//! whole number with one unit. Anything else is refused rather than guessed at.

use std::time::Duration;

use super::DlqError;

/// Parse `<whole number><unit>`, unit one of `s`, `m`, `h`, `d`.
pub fn parse_age(text: &str) -> Result<Duration, DlqError> {
    let bad = |why: &'static str| DlqError::Age {
        input: text.to_string(),
        why,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("a unit is needed: s, m, h or d"))?;
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(bad("it must start with a whole number"));
    }
    let n: u64 = number.parse().map_err(|_| bad("the number is too large"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad("the unit must be one of s, m, h, d")),
    };
    // Ten thousand years is already more than any failed_at can be old.
    const MAX_SECS: u64 = 10_000 * 365 * 86_400;
    match n.checked_mul(unit_secs) {
        Some(secs) if secs <= MAX_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(bad("the age is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_one_unit() {
        for (text, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("2h", 7200),
            ("1d", 86_400),
            ("0s", 0),
            (" 5m ", 300),
        ] {
            assert_eq!(
                parse_age(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_ages_say_why() {
        for (text, why) in [
            ("30", "a unit is needed"),
            ("", "a unit is needed"),
            ("h", "whole number"),
            ("1.5h", "unit must be"),
            ("2w", "unit must be"),
            ("2hours", "unit must be"),
            ("-1s", "whole number"),
            ("99999999999999999999s", "too large"),
            ("9999999999999d", "too large"),
        ] {
            let e = parse_age(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
        }
    }
}
