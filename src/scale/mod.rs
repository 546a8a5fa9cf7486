//! Scale-out: many pipelines per deployment, divided among replicas, on Redis Cluster.
//!
//! - [`slot`]: Redis Cluster's key slots (CRC16 of the hash tag), computed locally.
//! - [`shards`]: `REDIS_SHARDS=N` names N pipelines whose keys each share one slot.
//! - [`balance`]: each replica's fair share of the pipelines, `ceil(pipelines / replicas)`.
//! - [`tags`]: the start-up check that a pipeline's keys share a slot, with corrected names.

pub mod balance;
pub mod shards;
pub mod slot;
pub mod tags;
