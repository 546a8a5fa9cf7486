//! The integration tests, compiled as one test binary: the daemon and its CLI run as the
//! built binary (or in process) against real `redis-server` processes started per test.
//!
//! Every test gets its own key prefix (`Names::new()`), and every test that needs Redis
//! starts its own server, so tests run in parallel without seeing each other's keys.

// A panic is how a test fails: the harness unwraps wherever a failure ends the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Counts and timestamps in tests are small; the cast lints guard the library.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]

mod harness;

mod acl;
mod balancing;
mod bounded_bytes;
mod chaos;
mod cluster;
mod commit_fencing;
mod compose_file;
mod core;
mod demo_cli;
mod dlq_cli;
mod dlq_regressions;
mod flow_control;
mod flow_regressions;
mod health_cli;
mod http_probes;
mod json_profile;
mod ledger;
mod ledger_crash;
mod ledger_fencing;
mod monitoring;
mod netfaults;
mod operations;
mod oversized;
mod ownership;
mod pipelines;
mod priority;
mod regressions;
mod reliability;
mod replica_ack;
mod sentinel;
mod settings_cli;
mod slow_link;
mod smoke;
mod status_cli;
mod stuck;
mod tls;
