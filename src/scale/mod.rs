//! Scale-out: many pipelines per deployment, divided among replicas, on Redis Cluster.
//!
//! - [`slot`]: Redis Cluster's key slots (CRC16 of the hash tag), computed locally.
//! - [`shards`]: `REDIS_SHARDS=N` names N pipelines whose keys each share one slot.
//! - [`tags`]: the start-up check that a pipeline's keys share a slot, with corrected names.

pub mod shards;
pub mod slot;
pub mod tags;
