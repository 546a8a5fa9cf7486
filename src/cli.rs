//! Command-line parsing, mode dispatch and exit codes.
//!
//! Exit codes: 0 success, 1 a runtime failure (Redis refused, bad records), 2 bad settings or
//! usage. Settings problems are reported as one line on stderr before anything touches Redis.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::settings::{self, Effective, Loaded, ProcessEnv, Settings};
use crate::telemetry::logging::{self, Target};

mod batch;
mod demo;
mod health;

pub use batch::BatchAction;

/// Exit code for bad settings or usage.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// Moves JSON events from a Redis list into batch_processing envelopes, crash-safely.
///
/// Settings come from REDIS_* environment variables (see `check-config` and the README).
#[derive(Debug, Parser)]
#[command(name = "batch-processor", version, about)]
pub struct Cli {
    /// A TOML file layered over the built-in defaults and under the environment.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT (the default).
    Run,
    /// Validate the settings and print the effective values, secrets redacted.
    CheckConfig,
    /// Show list lengths, replicas, totals and rates, read from Redis.
    Status {
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print each pipeline's lists (shard, sources, processing, dead letters; REDIS_SHARDS).
    Shards {
        /// Only the shard of a producer's KEY (CRC-32 of KEY modulo the shards).
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and repair the dead-letter list.
    Dlq {
        /// The dead-letter action.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Ask this daemon's own probe (on REDIS_HTTP_ADDR) whether it is healthy: exit 0 when it
    /// answers 200, 1 otherwise. For a container's HEALTHCHECK.
    Health {
        /// Ask /readyz (Redis answers, the mover runs) instead of /healthz (the process
        /// answers).
        #[arg(long)]
        ready: bool,
        /// Seconds the whole check may take.
        #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = health::parse_seconds)]
        timeout: std::time::Duration,
    },
    /// A demo scraper and transformer, to see the whole flow (compose, local quick start).
    Demo {
        /// The demo's role.
        #[command(subcommand)]
        role: demo::DemoRole,
    },
    /// Inspect the batch ledger, or ack a batch by hand.
    Batch {
        /// The batch action.
        #[command(subcommand)]
        action: BatchAction,
    },
    /// Manage the batch ledger's function library.
    Ledger {
        /// The ledger action.
        #[command(subcommand)]
        action: LedgerAction,
    },
}

/// Function-library actions.
#[derive(Debug, Subcommand)]
pub enum LedgerAction {
    /// Load (or replace) the batch_ledger function library with FUNCTION LOAD REPLACE.
    Install,
}

/// Dead-letter actions.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Show dead letters, oldest first, with counts per reason and per source queue.
    List {
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Read and count at most this many records, oldest first (more if --limit asks).
        #[arg(long, value_name = "N", default_value_t = crate::tools::dlq::DEFAULT_SCAN_LIMIT)]
        scan_limit: usize,
    },
    /// Put dead letters back on the queue they came from, byte for byte, oldest first; only
    /// records already dead-lettered when the replay starts.
    Replay {
        /// Replay at most this many (all when omitted).
        #[arg(long)]
        limit: Option<usize>,
        /// Only records whose source_queue is NAME.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Only records whose reason contains TEXT.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Only records dead-lettered at least this long ago (30s, 15m, 2h, 1d).
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
        /// Only records dead-lettered less than this long ago (30s, 15m, 2h, 1d).
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        newer_than: Option<std::time::Duration>,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// Parse arguments, load settings, run the mode and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    // The daemon and the demos catch SIGTERM from their first moments; the tools keep the
    // default (die).
    let early = matches!(command, Command::Run | Command::Demo { .. })
        .then(crate::daemon::signal::EarlySignals::catch);
    let Loaded {
        settings,
        warnings,
        effective,
    } = match settings::load_with_report(&ProcessEnv, cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("batch-processor: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let target = match command {
        Command::Run | Command::Demo { .. } => Target::Stdout,
        _ => Target::Stderr,
    };
    logging::init(settings.log_format, &settings.log_filter, target);
    for warning in &warnings {
        tracing::warn!(message = %warning);
    }
    // One worker: the daemon's work is one mover loop plus light periodic jobs, and a single
    // worker spares the wake-ups and cache traffic between threads (about a tenth of the
    // daemon's CPU per message; docs/benchmark.md). Blocking calls still get their own pool.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("batch-processor: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(dispatch(
        command,
        settings,
        &effective,
        early.unwrap_or_default(),
    ));
    // Tasks still stuck on Redis after the grace period must not hold the process.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

async fn dispatch(
    command: Command,
    settings: Settings,
    effective: &Effective,
    early: crate::daemon::signal::EarlySignals,
) -> ExitCode {
    match command {
        Command::Run => run_daemon(settings, early).await,
        Command::CheckConfig => {
            print_stdout(&effective.render());
            ExitCode::SUCCESS
        }
        Command::Status { json } => report(crate::tools::status::run(&settings, json).await),
        Command::Shards { key, json } => report(crate::tools::shards::run(&settings, key, json)),
        Command::Dlq { action } => dlq(action, &settings).await,
        Command::Health { ready, timeout } => report(health::run(&settings, ready, timeout).await),
        Command::Demo { role } => demo::run(role, &settings, shutdown_on_signal(&early)).await,
        Command::Batch { action } => batch::run(action, &settings).await,
        Command::Ledger {
            action: LedgerAction::Install,
        } => report(crate::tools::across::ledger_install(&settings).await),
    }
}

/// A token cancelled by SIGTERM or SIGINT, including one that arrived before the runtime.
fn shutdown_on_signal(early: &crate::daemon::signal::EarlySignals) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    // Listening starts here, before the task is spawned: an early SIGTERM is still graceful.
    let signal = crate::daemon::signal::shutdown();
    if early.received() {
        shutdown.cancel();
    }
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    shutdown
}

/// An age option, as clap wants its parsers (the error as text).
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    crate::tools::dlq::parse_age(text).map_err(|e| e.to_string())
}

/// The `dlq` actions. Option combinations that can match nothing exit 2 before Redis is
/// touched, like any usage error.
async fn dlq(action: DlqAction, settings: &Settings) -> ExitCode {
    use crate::tools::across;
    use crate::tools::dlq::{ListOptions, ReplayFilter};
    match action {
        DlqAction::List {
            limit,
            json,
            scan_limit,
        } => {
            let opts = ListOptions {
                limit,
                json,
                scan_limit,
            };
            report(across::dlq_list(settings, opts).await)
        }
        DlqAction::Replay {
            limit,
            source,
            reason,
            older_than,
            newer_than,
        } => {
            let filter = ReplayFilter {
                source,
                reason,
                older_than,
                newer_than,
            };
            if let Err(e) = filter.validate() {
                eprintln!("batch-processor: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            report(across::dlq_replay(settings, limit, &filter).await)
        }
        DlqAction::Purge { yes } => {
            if !yes {
                eprintln!(
                    "batch-processor: dlq purge deletes every dead letter; add --yes to confirm"
                );
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            report(across::dlq_purge(settings).await)
        }
    }
}

fn report<E: std::fmt::Display>(outcome: Result<String, E>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print_stdout(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "command failed");
            eprintln!("batch-processor: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Print a command's output. A closed pipe (`status | head`) is not an error worth a panic.
fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

async fn run_daemon(settings: Settings, early: crate::daemon::signal::EarlySignals) -> ExitCode {
    let shutdown = shutdown_on_signal(&early);
    match crate::daemon::run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(crate::daemon::DaemonError::Settings(e)) => {
            eprintln!("batch-processor: {e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(e) => {
            tracing::error!(message = "daemon stopped", error = %e);
            eprintln!("batch-processor: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
