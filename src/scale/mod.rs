//! Scale-out: many pipelines per deployment, divided among replicas, on Redis Cluster.
//!
//! - [`slot`]: Redis Cluster's key slots (CRC16 of the hash tag), computed locally.
//! - [`shards`]: `REDIS_SHARDS=N` names N pipelines whose keys each share one slot.
//! - [`balance`]: each replica's fair share of the pipelines, `ceil(pipelines / replicas)`.
//! - [`cluster`]: which primary owns a slot, found with `CLUSTER SLOTS`, so each pipeline
//!   talks to its own node over plain connections.
//! - [`tags`]: the start-up check that a pipeline's keys share a slot, with corrected names.

pub mod balance;
pub mod cluster;
pub mod shards;
pub mod slot;
pub mod tags;
