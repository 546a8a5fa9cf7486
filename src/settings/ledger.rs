//! Batch-ledger settings: whether each envelope gets a ledger hash, where those hashes live,
//! how long they last, and the claim/recovery protocol's timings. Validated here so a bad
//! value exits 2 naming its variable, like every other setting.

use std::num::NonZeroU32;
use std::time::Duration;

use super::raw::RawSettings;
use super::{Queues, SettingsError};

/// The batch ledger and the transformer's claim/ack protocol (see the README's "Delivery to
/// the transformer").
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSettings {
    /// Whether commits write a ledger hash per envelope and the daemon runs recovery.
    pub enabled: bool,
    /// Prefix of every ledger key (`<prefix><event_id>`, `<prefix>workers`, ...).
    pub state_prefix: String,
    /// Seconds a ledger hash lives; every state change re-arms it.
    pub state_ttl: u32,
    /// Deliveries after which a batch whose worker died goes to the dead-letter list.
    pub max_deliveries: NonZeroU32,
    /// A worker whose last claim or heartbeat is older than this is dead: its batches are
    /// requeued (or dead-lettered).
    pub claim_timeout: Duration,
    /// Period of the recovery job.
    pub recovery_interval: Duration,
}

/// The ledger settings; the prefix must be a usable key name even when the ledger is off,
/// since the `batch` commands read it.
pub(super) fn validate(raw: &RawSettings) -> Result<LedgerSettings, SettingsError> {
    let enabled = boolean(raw, "batch_ledger")?;
    let state_prefix = raw.name("batch_state_prefix")?;
    let state_ttl = raw.int("batch_state_ttl", 1, 365 * 86_400)?;
    let max_deliveries: u32 = raw.int("max_deliveries", 1, 1000)?;
    let claim_timeout = raw.seconds("batch_claim_timeout", 0.1, 86_400.0)?;
    let recovery_interval = raw.seconds("batch_recovery_interval", 0.05, 3600.0)?;
    Ok(LedgerSettings {
        enabled,
        state_prefix,
        state_ttl,
        max_deliveries: NonZeroU32::new(max_deliveries).unwrap_or(NonZeroU32::MIN),
        claim_timeout,
        recovery_interval,
    })
}

/// With the ledger on, recovery dead-letters batches onto the dead-letter list and requeues
/// others onto the processing queue: one list for both would put a dead batch back in line.
pub(super) fn check_queues(ledger: &LedgerSettings, queues: &Queues) -> Result<(), SettingsError> {
    if ledger.enabled && queues.processing == queues.dead_letter {
        return Err(SettingsError::invalid(
            "dead_letter_queue",
            &queues.dead_letter,
            "a list other than REDIS_PROCESSING_QUEUE while REDIS_BATCH_LEDGER=true \
             (a dead batch would land back in the processing queue)",
        ));
    }
    Ok(())
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
fn boolean(raw: &RawSettings, key: &str) -> Result<bool, SettingsError> {
    let v = raw.required(key)?;
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(SettingsError::invalid(key, v, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::load;

    fn err(vars: &[(&str, &str)]) -> String {
        load(&vars.to_vec(), None).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_off_with_a_day_of_retention() {
        let s = load(&Vec::<(&str, &str)>::new(), None).unwrap().ledger;
        assert!(!s.enabled);
        assert_eq!(s.state_prefix, "batch:state:");
        assert_eq!(s.state_ttl, 86_400);
        assert_eq!(s.max_deliveries.get(), 5);
        assert_eq!(s.claim_timeout.as_secs(), 60);
        assert_eq!(s.recovery_interval.as_secs(), 5);
        let on = load(&[("REDIS_BATCH_LEDGER", "TRUE")].to_vec(), None).unwrap();
        assert!(on.ledger.enabled);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("REDIS_BATCH_LEDGER", "maybe"),
            ("REDIS_BATCH_STATE_PREFIX", " x"),
            ("REDIS_BATCH_STATE_TTL", "0"),
            ("REDIS_MAX_DELIVERIES", "0"),
            ("REDIS_BATCH_CLAIM_TIMEOUT", "-1"),
            ("REDIS_BATCH_RECOVERY_INTERVAL", "soon"),
        ] {
            let e = err(&[(var, value)]);
            assert!(e.contains(var), "{var}: {e}");
        }
    }

    #[test]
    fn one_list_for_processing_and_dead_letters_is_refused_with_the_ledger_on() {
        let same = [
            ("REDIS_PROCESSING_QUEUE", "q"),
            ("REDIS_DEAD_LETTER_QUEUE", "q"),
        ];
        assert!(
            load(&same.to_vec(), None).is_ok(),
            "allowed without the ledger"
        );
        let mut on = same.to_vec();
        on.push(("REDIS_BATCH_LEDGER", "true"));
        let e = err(&on);
        for var in [
            "REDIS_DEAD_LETTER_QUEUE",
            "REDIS_PROCESSING_QUEUE",
            "REDIS_BATCH_LEDGER",
        ] {
            assert!(e.contains(var), "{var}: {e}");
        }
    }
}
