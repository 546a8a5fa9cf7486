//! The operator commands. Each reads Redis alone, so it works from any machine that reaches
//! Redis, whether or not a daemon runs.

pub mod across;
pub mod batch;
pub mod dlq;
pub mod each_pipeline;
pub mod shards;
pub mod status;
