//! The commit's share of the batch ledger: with `REDIS_BATCH_LEDGER` on, one more command in
//! the commit's MULTI/EXEC writes a ledger hash per envelope (see `ledger_entries.lua`).
//!
//! The entries are written after the commit script and only if it let the commit through,
//! which it signals by moving the lease to the value this commit leaves; a refused commit
//! (stale lease, changed tail, back-pressure) therefore leaves no entry, just as it leaves no
//! envelope. The script sees only ids and counts, never an envelope.

use crate::ledger::LedgerKeys;
use crate::mover::commit::Commit;
use crate::settings::{LedgerSettings, Queues};

const LEDGER_ENTRIES: &str = include_str!("../redis/scripts/ledger_entries.lua");

/// Append the ledger write for `commit`'s envelopes to `pipe` (inside MULTI, after the
/// commit script). Each entry's `source` names the source lists its envelope's messages came
/// from, joined with `,` in priority order (one name when there is one source).
pub(super) fn append(
    pipe: &mut redis::Pipeline,
    settings: &LedgerSettings,
    lease_key: &str,
    queues: &Queues,
    commit: &Commit<'_>,
) {
    let keys = LedgerKeys::new(&settings.state_prefix);
    let envelopes = &commit.plan.envelopes;
    let eval = pipe.cmd("EVAL");
    eval.arg(LEDGER_ENTRIES)
        .arg(1 + envelopes.len())
        .arg(lease_key);
    for e in envelopes {
        eval.arg(keys.batch(&e.event_id.hyphenated().to_string()));
    }
    eval.arg(commit.lease_after)
        .arg(settings.state_ttl)
        .arg(commit.now_ms);
    for e in envelopes {
        let sources: Vec<&str> = e
            .sources(commit.pending)
            .into_iter()
            .filter_map(|k| queues.sources.get(k).map(String::as_str))
            .collect();
        eval.arg(e.size).arg(sources.join(","));
    }
}
