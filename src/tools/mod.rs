//! The operator commands. Each reads Redis alone, so it works from any machine that reaches
//! Redis, whether or not a daemon runs.

pub mod batch;
pub mod dlq;
pub mod status;
