//! Workloads of good and bad messages, and the exactly-once audit of what the daemon made
//! of them: envelopes in the documented format, dead letters in the documented format,
//! nothing lost, duplicated or reordered.

use super::{batch_raw, event, read_all, seq_of, Names};

/// Size limit the [`workload`] assumes (set `REDIS_MAX_MESSAGE_BYTES` to this): its
/// too-large messages are 5,000 bytes, its good ones much smaller.
pub(crate) const WORKLOAD_MAX_BYTES: &str = "4096";

/// A bad message of one of five kinds, unique by `seq`: truncated JSON, binary (not
/// UTF-8), plain text, valid JSON followed by garbage, too large (needs
/// [`WORKLOAD_MAX_BYTES`]).
pub(crate) fn bad_message(seq: u64, kind: u64) -> Vec<u8> {
    match kind % 5 {
        0 => format!(r#"{{"seq":{seq},"source":"scraper","title":"trunc"#).into_bytes(),
        1 => {
            let mut b = vec![0xff, 0xfe, 0x00];
            b.extend_from_slice(format!("bin{seq}").as_bytes());
            b.extend_from_slice(&[0x80, 0xc3]);
            b
        }
        2 => format!("plain text message number {seq}").into_bytes(),
        3 => format!(r#"{{"seq":{seq}}} x"#).into_bytes(),
        _ => event(seq, 5000),
    }
}

/// Invalid JSON (400,000 raw control bytes in a string) whose dead-letter record, escaping
/// each control byte to six bytes, is 2.4 MB: over a 1 MB `proto-max-bulk-len`, so it goes
/// by reference. `tag` makes each one distinct.
pub(crate) fn control_bytes_message(tag: u64) -> Vec<u8> {
    let mut m = format!("{{\"tag\":{tag},\"blob\":\"").into_bytes();
    m.extend(std::iter::repeat_n(1u8, 400_000));
    m.extend_from_slice(b"\"}");
    m
}

/// Messages in push order, with what each should become.
pub(crate) struct Workload {
    /// Every message, oldest first.
    pub messages: Vec<Vec<u8>>,
    /// Seqs of the good messages, in push order.
    pub good: Vec<u64>,
    /// The exact bytes of every good message by seq.
    pub good_bytes: std::collections::HashMap<u64, Vec<u8>>,
    /// The bad messages, in push order.
    pub bad: Vec<Vec<u8>>,
}

/// `n` messages of about `size` bytes; every `bad_every`-th (0: none) is bad, cycling
/// through the kinds of [`bad_message`].
pub(crate) fn workload(n: u64, bad_every: u64, size: usize) -> Workload {
    let mut w = Workload {
        messages: Vec::with_capacity(n as usize),
        good: Vec::new(),
        good_bytes: Default::default(),
        bad: Vec::new(),
    };
    for seq in 0..n {
        if bad_every > 0 && seq % bad_every == bad_every - 1 {
            let m = bad_message(seq, seq / bad_every);
            w.bad.push(m.clone());
            w.messages.push(m);
        } else {
            let m = event(seq, size);
            w.good.push(seq);
            w.good_bytes.insert(seq, m.clone());
            w.messages.push(m);
        }
    }
    w
}

/// One dead-letter record, checked for format and decoded.
#[derive(Debug, Clone)]
pub(crate) struct DeadRecord {
    /// The original bytes (from `raw` or `raw_b64`).
    pub original: Vec<u8>,
    /// Whether it was stored as `raw_b64`.
    pub base64: bool,
    /// `reason`.
    pub reason: String,
    /// `source_queue`.
    pub source_queue: String,
}

/// Parse and check one stored dead-letter record: a JSON object with `reason`,
/// `source_queue`, `failed_at` (RFC 3339) and exactly one of `raw` / `raw_b64`.
pub(crate) fn parse_dead_letter(bytes: &[u8]) -> DeadRecord {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "dead letter is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    let obj = v.as_object().expect("dead letter is an object");
    let s = |k: &str| -> String {
        obj.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| panic!("dead letter lacks string {k}: {v}"))
            .to_string()
    };
    let (original, base64) = match (obj.get("raw"), obj.get("raw_b64")) {
        (Some(raw), None) => (
            raw.as_str().expect("raw is a string").as_bytes().to_vec(),
            false,
        ),
        (None, Some(b)) => (
            base64::engine::general_purpose::STANDARD
                .decode(b.as_str().expect("raw_b64 is a string"))
                .expect("raw_b64 is base64"),
            true,
        ),
        _ => panic!("dead letter must have exactly one of raw / raw_b64: {v}"),
    };
    let failed_at = s("failed_at");
    chrono::DateTime::parse_from_rfc3339(&failed_at)
        .unwrap_or_else(|e| panic!("failed_at {failed_at:?} is not RFC 3339: {e}"));
    DeadRecord {
        original,
        base64,
        reason: s("reason"),
        source_queue: s("source_queue"),
    }
}

/// Check every rule of the envelope format on one parsed envelope: exactly the keys
/// `event_id` (a v4 UUID), `event_type` (`batch_processing`), `payload` (`batch`, a
/// non-empty array, and `size`, its length), `service` (`batch_processor`) and `timestamp`
/// (the current UTC time as `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`).
pub(crate) fn assert_envelope_format(v: &serde_json::Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("envelope is not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["event_id", "event_type", "payload", "service", "timestamp"],
        "{v}"
    );
    assert_eq!(v["event_type"], "batch_processing");
    assert_eq!(v["service"], "batch_processor");
    let id = v["event_id"].as_str().expect("event_id string");
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("event_id {id:?}: {e}"));
    assert_eq!(uuid.get_version_num(), 4, "event_id {id} is not a v4 uuid");
    let payload = v["payload"].as_object().expect("payload object");
    let mut pkeys: Vec<&str> = payload.keys().map(|k| k.as_str()).collect();
    pkeys.sort();
    assert_eq!(pkeys, ["batch", "size"], "{v}");
    let batch = payload["batch"].as_array().expect("batch array");
    assert!(!batch.is_empty(), "an empty batch was sent");
    assert_eq!(
        payload["size"].as_u64(),
        Some(batch.len() as u64),
        "size != batch length"
    );
    let ts = v["timestamp"].as_str().expect("timestamp string");
    // 2026-11-23T10:00:00.123456+00:00
    let b = ts.as_bytes();
    assert_eq!(
        b.len(),
        32,
        "timestamp {ts:?} is not YYYY-MM-DDTHH:MM:SS.ffffff+00:00"
    );
    assert!(
        ts.ends_with("+00:00"),
        "timestamp {ts:?} must end with +00:00"
    );
    assert_eq!(b[10], b'T', "{ts}");
    assert_eq!(b[19], b'.', "{ts}");
    assert!(
        b[20..26].iter().all(u8::is_ascii_digit),
        "timestamp {ts:?} needs 6 fraction digits"
    );
    let t = chrono::DateTime::parse_from_rfc3339(ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
    let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs();
    assert!(skew < 600, "timestamp {ts} is not the current UTC time");
}

/// Everything the daemon produced for one test, oldest first.
pub(crate) struct Outcome {
    /// Raw envelopes, oldest first.
    pub envelopes: Vec<Vec<u8>>,
    /// The messages of each envelope, as spliced, oldest envelope first.
    pub batches: Vec<Vec<Vec<u8>>>,
    /// Dead letters, oldest first.
    pub dead: Vec<DeadRecord>,
    /// What is still in the source, oldest first.
    pub source: Vec<Vec<u8>>,
}

/// Read the processing, dead-letter and source lists.
pub(crate) fn outcome(conn: &mut redis::Connection, names: &Names) -> Outcome {
    let envelopes = read_all(conn, &names.processing);
    let batches = envelopes.iter().map(|e| batch_raw(e)).collect();
    let dead = read_all(conn, &names.dead_letter)
        .iter()
        .map(|d| parse_dead_letter(d))
        .collect();
    let source = read_all(conn, &names.source);
    Outcome {
        envelopes,
        batches,
        dead,
        source,
    }
}

/// Check that every message of `w` is accounted for exactly once: each good one in exactly
/// one envelope (byte for byte) or still in the source, each bad one exactly once in the
/// dead-letter list (exact bytes, this source) or still in the source; nothing else
/// anywhere. With `ordered` (one daemon), the envelopes hold a prefix of the good messages
/// in push order and the source holds exactly the untouched suffix of the workload.
/// With `complete`, the source must be empty.
pub(crate) fn assert_accounted(
    out: &Outcome,
    w: &Workload,
    names: &Names,
    ordered: bool,
    complete: bool,
) {
    use std::collections::HashMap;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut in_envelopes = Vec::new();
    for (i, batch) in out.batches.iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_slice(&out.envelopes[i]).expect("envelope JSON");
        assert_envelope_format(&v);
        for m in batch {
            let seq = seq_of(m);
            let expected = w.good_bytes.get(&seq).unwrap_or_else(|| {
                panic!("envelope {i} holds a message that is not good: seq {seq}")
            });
            assert_eq!(m, expected, "message seq {seq} changed inside envelope {i}");
            *seen.entry(seq).or_default() += 1;
            in_envelopes.push(seq);
        }
    }
    let dups: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    assert!(
        dups.is_empty(),
        "messages in more than one envelope (seq, times): {:?}",
        &dups[..dups.len().min(20)]
    );

    let mut expected_bad: HashMap<&[u8], i64> = HashMap::new();
    for b in &w.bad {
        *expected_bad.entry(&b[..]).or_default() += 1;
    }
    for d in &out.dead {
        assert_eq!(d.source_queue, names.source, "dead letter source_queue");
        assert!(
            !d.reason.trim().is_empty(),
            "dead letter has an empty reason"
        );
        assert_eq!(
            d.base64,
            std::str::from_utf8(&d.original).is_err(),
            "raw_b64 must be used exactly when the bytes are not UTF-8: {d:?}"
        );
        let n = expected_bad.entry(&d.original[..]).or_default();
        *n -= 1;
    }
    // Whatever is left in the source counts as not yet processed.
    for m in &out.source {
        let good_seq = serde_json::from_slice::<serde_json::Value>(m)
            .ok()
            .and_then(|v| v["seq"].as_u64())
            .filter(|seq| w.good_bytes.get(seq) == Some(m));
        match good_seq {
            Some(seq) => *seen.entry(seq).or_default() += 1,
            None => match expected_bad.get_mut(&m[..]) {
                Some(n) if *n > 0 => *n -= 1,
                _ => panic!(
                    "the source holds a message that is unknown or already dead-lettered: {:?}",
                    String::from_utf8_lossy(m)
                        .chars()
                        .take(80)
                        .collect::<String>()
                ),
            },
        }
    }
    let wrong_bad: Vec<_> = expected_bad
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(b, n)| {
            (
                String::from_utf8_lossy(b)
                    .chars()
                    .take(60)
                    .collect::<String>(),
                *n,
            )
        })
        .collect();
    assert!(
        wrong_bad.is_empty(),
        "bad messages not exactly once in the dead-letter list (message, missing(+)/extra(-)): {:?}",
        &wrong_bad[..wrong_bad.len().min(20)]
    );
    let missing: Vec<u64> = w
        .good
        .iter()
        .filter(|s| seen.get(s).copied().unwrap_or(0) != 1)
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} good messages not in exactly one envelope or the source (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    if complete {
        assert!(
            out.source.is_empty(),
            "{} messages still in the source",
            out.source.len()
        );
    }
    if ordered {
        assert_eq!(
            in_envelopes,
            w.good[..in_envelopes.len()].to_vec(),
            "good messages left out of push order across envelopes"
        );
        let k = w.messages.len() - out.source.len();
        assert_eq!(
            out.source,
            w.messages[k..].to_vec(),
            "the source must hold the untouched tail of the workload, in order"
        );
    }
}

/// [`assert_accounted`] over several source lists. `pushed[k]` holds the messages pushed onto
/// `sources[k]`, oldest first, every one distinct. Checks, for each source: its good messages
/// sit in the envelopes as a prefix of its own push order (FIFO within one list) and the list
/// holds exactly the untouched rest; each of its bad messages is dead-lettered exactly once,
/// naming this source, or still in the list; nothing else is anywhere. With `complete`, every
/// source must be empty. Returns the source index of each enveloped message, in envelope
/// order.
pub(crate) fn assert_accounted_sources(
    conn: &mut redis::Connection,
    processing: &str,
    dead_letter: &str,
    sources: &[String],
    pushed: &[Vec<Vec<u8>>],
    complete: bool,
) -> Vec<usize> {
    use std::collections::HashMap;
    // Which source and which position each message was pushed at.
    let mut origin: HashMap<&[u8], (usize, usize)> = HashMap::new();
    for (k, messages) in pushed.iter().enumerate() {
        for (i, m) in messages.iter().enumerate() {
            assert!(
                origin.insert(m, (k, i)).is_none(),
                "test messages must be distinct"
            );
        }
    }
    let is_good = |m: &[u8]| serde_json::from_slice::<serde_json::Value>(m).is_ok();
    // Per source, the good messages in envelope order.
    let mut enveloped: Vec<Vec<&[u8]>> = vec![Vec::new(); sources.len()];
    let mut order = Vec::new();
    let envelopes = read_all(conn, processing);
    let batches: Vec<Vec<Vec<u8>>> = envelopes.iter().map(|e| batch_raw(e)).collect();
    for (e, batch) in envelopes.iter().zip(&batches) {
        assert_envelope_format(&serde_json::from_slice(e).expect("envelope JSON"));
        for m in batch {
            let (k, _) = origin
                .get(&m[..])
                .copied()
                .unwrap_or_else(|| panic!("unknown message in an envelope: {m:?}"));
            enveloped[k].push(m);
            order.push(k);
        }
    }
    let mut dead: Vec<Vec<&[u8]>> = vec![Vec::new(); sources.len()];
    let records: Vec<DeadRecord> = read_all(conn, dead_letter)
        .iter()
        .map(|d| parse_dead_letter(d))
        .collect();
    for d in &records {
        let (k, _) = origin
            .get(&d.original[..])
            .copied()
            .unwrap_or_else(|| panic!("unknown dead letter: {d:?}"));
        assert_eq!(
            d.source_queue, sources[k],
            "dead letter names another source"
        );
        dead[k].push(&d.original);
    }
    for (k, source) in sources.iter().enumerate() {
        let left = read_all(conn, source);
        let taken = pushed[k].len() - left.len();
        assert_eq!(
            left,
            pushed[k][taken..].to_vec(),
            "{source} must hold the untouched rest of what was pushed on it, in order"
        );
        let good: Vec<&[u8]> = pushed[k][..taken]
            .iter()
            .filter(|m| is_good(m))
            .map(Vec::as_slice)
            .collect();
        let bad: Vec<&[u8]> = pushed[k][..taken]
            .iter()
            .filter(|m| !is_good(m))
            .map(Vec::as_slice)
            .collect();
        assert_eq!(
            enveloped[k], good,
            "{source}: the enveloped messages must be exactly its taken good ones, in order"
        );
        assert_eq!(
            dead[k], bad,
            "{source}: the dead letters must be exactly its taken bad ones, in order"
        );
        if complete {
            assert!(left.is_empty(), "{} messages still in {source}", left.len());
        }
    }
    order
}
