//! Redis Cluster key slots: CRC16 (XMODEM) of a key's hash tag, modulo 16384.
//!
//! Computed locally so the daemon can check at start-up that all of a pipeline's keys share
//! one slot (a transaction or script over keys in different slots fails with `CROSSSLOT`), and
//! find which node owns a pipeline without asking every node.

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum Redis Cluster uses.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that decides its slot: the text between the first `{` and the first `}`
/// after it, when that is not empty; otherwise the whole key (Redis's rule).
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.find('}') {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The cluster slot of `key`.
pub fn key_slot(key: &str) -> u16 {
    crc16(hash_tag(key).as_bytes()) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_reference_check_value() {
        // The XMODEM check value from the Redis Cluster specification's crc16.c.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_cluster_keyslot_on_a_real_server() {
        // Each value is what `CLUSTER KEYSLOT <key>` answered on redis-server 7.0.15 with
        // cluster-enabled yes.
        for (key, slot) in [
            ("foo", 12182),
            ("bar", 5061),
            ("raw_data_queue", 9412),
            ("{user1000}.following", 3443),
            ("{user1000}.followers", 3443),
            ("foo{}{bar}", 8363),
            ("foo{{bar}}zap", 4015),
            ("foo{bar}{zap}", 5061),
        ] {
            assert_eq!(key_slot(key), slot, "{key}");
        }
    }

    #[test]
    fn hash_tags_follow_the_first_braces() {
        assert_eq!(hash_tag("raw_data_queue:{s0}"), "s0");
        assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}");
        assert_eq!(hash_tag("a{b"), "a{b");
        assert_eq!(hash_tag("a{{b}}"), "{b");
    }
}
