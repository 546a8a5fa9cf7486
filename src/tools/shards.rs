//! `batch-processor shards`: the names of a deployment's pipelines, for producers and
//! transformers, and which shard a producer's key belongs to.
//!
//! Producers pick a shard with CRC-32 (IEEE, as zlib's `crc32`, Go's `crc32.ChecksumIEEE` or
//! Rust's `crc32fast`) of a key of their choice, modulo the number of shards: every event with
//! one key then lands on one shard and keeps its order. Round robin works too when order
//! across events does not matter.

use std::fmt::Write as _;

use serde::Serialize;

use crate::daemon::pipelines::pipeline_settings;
use crate::settings::Settings;

/// One pipeline's lists.
#[derive(Debug, Serialize)]
struct Row<'a> {
    shard: usize,
    sources: &'a [String],
    processing: &'a str,
    dead_letter: &'a str,
    /// The prefix of the shard's batch ledger keys, for the transformer's `batch_claim`.
    batch_state_prefix: String,
}

/// The pipelines as text (one line each: shard, sources, processing, dead-letter list, and
/// with the ledger on its key prefix) or as a JSON array; with `key`, only the shard that
/// key maps to.
pub fn render(settings: &Settings, key: Option<&str>, json: bool) -> String {
    let pipelines = &settings.scale.pipelines;
    let chosen = key.map(|k| shard_of(k.as_bytes(), pipelines.len()));
    let rows: Vec<Row<'_>> = pipelines
        .iter()
        .enumerate()
        .filter(|(i, _)| chosen.is_none_or(|c| c == *i))
        .map(|(shard, q)| Row {
            shard,
            sources: &q.sources,
            processing: &q.processing,
            dead_letter: &q.dead_letter,
            batch_state_prefix: pipeline_settings(settings, q).ledger.state_prefix,
        })
        .collect();
    if json {
        // Strings and numbers always serialise.
        return serde_json::to_string_pretty(&rows).unwrap_or_default();
    }
    let mut out = String::new();
    for r in &rows {
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "{}\t{}\t{}\t{}",
            r.shard,
            r.sources.join(","),
            r.processing,
            r.dead_letter
        );
        if settings.ledger.enabled {
            let _ = write!(out, "\t{}", r.batch_state_prefix);
        }
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// `batch-processor shards`: [`render`], as a command's outcome (it cannot fail).
pub fn run(
    settings: &Settings,
    key: Option<String>,
    json: bool,
) -> Result<String, std::convert::Infallible> {
    Ok(render(settings, key.as_deref(), json))
}

/// The shard of `key` among `shards`: CRC-32 (IEEE) of the key, modulo the count.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    let n = u32::try_from(shards.max(1)).unwrap_or(u32::MAX);
    usize::try_from(crc32(key) % n).unwrap_or(0)
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        // python3 -c 'import zlib; print(zlib.crc32(b"123456789"), zlib.crc32(b"user-42"))'
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"user-42"), ZLIB_USER_42);
        assert_eq!(
            shard_of(b"user-42", 3),
            usize::try_from(ZLIB_USER_42 % 3).unwrap()
        );
    }

    const ZLIB_USER_42: u32 = 2_097_592_435;
}
