//! The `batch` subcommand's arguments and dispatch (the views live in
//! [`crate::tools::batch`], across pipelines in [`crate::tools::across`]).

use std::process::ExitCode;

use clap::Subcommand;

use super::report;
use crate::settings::Settings;

/// Batch-ledger views and the ack.
#[derive(Debug, Subcommand)]
pub enum BatchAction {
    /// Show one batch's ledger entry.
    Show {
        /// The batch's event_id.
        id: String,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List batches: in flight per worker, the next queued, and recently finished.
    List {
        /// Only batches in this state: queued, processing, completed,
        /// completed_with_failures or dead.
        #[arg(long, value_name = "S", value_parser = parse_status)]
        status: Option<crate::ledger::Status>,
        /// At most this many per section.
        #[arg(long, default_value_t = crate::tools::batch::DEFAULT_LIMIT)]
        limit: usize,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Report items of a claimed batch done, as a transformer does (fenced by --delivery).
    /// The counts are added to the batch's; to retry an ack whose outcome is unknown, run it
    /// again with the ack id it printed (--ack-id), which counts once.
    Ack {
        /// The batch's event_id.
        id: String,
        /// The delivery number the claim returned.
        #[arg(long)]
        delivery: u64,
        /// Items newly completed (added to the batch's count).
        #[arg(long, default_value_t = 0)]
        completed: u64,
        /// Items newly failed (added to the batch's count).
        #[arg(long, default_value_t = 0)]
        failed: u64,
        /// The ack's id; a new UUID when not given. Pass the id of an earlier run to retry
        /// it: an id is applied once per batch.
        #[arg(long, value_name = "ID")]
        ack_id: Option<String>,
    },
}

/// A batch state on the command line.
fn parse_status(text: &str) -> Result<crate::ledger::Status, String> {
    match crate::ledger::Status::parse(text) {
        crate::ledger::Status::Other(s) => Err(format!(
            "unknown status {s:?}: expected queued, processing, completed, completed_with_failures or dead"
        )),
        status => Ok(status),
    }
}

/// The `batch` actions.
pub(super) async fn run(action: BatchAction, settings: &Settings) -> ExitCode {
    use crate::ledger::AckReport;
    use crate::tools::across;
    use crate::tools::batch::ListOptions;
    match action {
        BatchAction::Show { id, json } => report(across::batch_show(settings, &id, json).await),
        BatchAction::List {
            status,
            limit,
            json,
        } => {
            let opts = ListOptions {
                status,
                limit,
                json,
            };
            report(across::batch_list(settings, &opts).await)
        }
        BatchAction::Ack {
            id,
            delivery,
            completed,
            failed,
            ack_id,
        } => {
            let ack_id = ack_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let ack = AckReport {
                event_id: &id,
                delivery,
                completed,
                failed,
                ack_id: &ack_id,
            };
            report(across::batch_ack(settings, ack).await)
        }
    }
}
