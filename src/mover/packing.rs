//! The envelopes' `LPUSH`, packed by hand straight into the request's bytes.
//!
//! redis-rs would copy each envelope twice: into its command's buffer, then into the packed
//! pipeline. Here each envelope's exact length is counted first (a pass that copies nothing),
//! so its RESP header can be written before it, and the envelope is written once, in place.

use std::io::Write;

use super::plan::{Envelope, Runs};

/// Counts the bytes written to it, and keeps none.
#[derive(Default)]
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The exact length of `envelope` as written.
fn envelope_len(envelope: &Envelope, pending: &Runs<'_>, timestamp: &str) -> usize {
    let mut counter = Counter::default();
    // Writing to a counter cannot fail.
    let _ = envelope.write(pending, timestamp, &mut counter);
    counter.0
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    bulk_header(out, bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A commit's envelopes, measured for packing.
pub(super) struct Envelopes<'a> {
    envelopes: &'a [Envelope],
    pending: &'a Runs<'a>,
    timestamp: &'a str,
    /// The exact length of each, as written.
    lens: Vec<usize>,
}

impl<'a> Envelopes<'a> {
    /// Measure `envelopes`, planned over `pending`.
    pub(super) fn new(
        envelopes: &'a [Envelope],
        pending: &'a Runs<'a>,
        timestamp: &'a str,
    ) -> Self {
        let lens = envelopes
            .iter()
            .map(|e| envelope_len(e, pending, timestamp))
            .collect();
        Envelopes {
            envelopes,
            pending,
            timestamp,
            lens,
        }
    }

    /// Bytes [`Envelopes::lpush`] appends, at most.
    pub(super) fn lpush_len(&self, key: &str) -> usize {
        64 + key.len() + self.lens.iter().map(|l| l + 24).sum::<usize>()
    }

    /// Append `LPUSH key envelope...` to `out`, each envelope written once.
    pub(super) fn lpush(&self, out: &mut Vec<u8>, key: &str) {
        out.push(b'*');
        out.extend_from_slice((2 + self.envelopes.len()).to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        bulk(out, b"LPUSH");
        bulk(out, key.as_bytes());
        for (envelope, &len) in self.envelopes.iter().zip(&self.lens) {
            bulk_header(out, len);
            let start = out.len();
            // Writing to a Vec cannot fail.
            let _ = envelope.write(self.pending, self.timestamp, out);
            // The same writer over the same inputs: the count is exact, or the RESP would be
            // corrupt (a test checks the packing against redis-rs's).
            debug_assert_eq!(out.len() - start, len);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::mover::plan::tests::{queues, PROFILE};
    use crate::mover::plan::{self, Limits, Peeked};

    #[test]
    fn envelopes_pack_as_redis_rs_packs_them() {
        let now = Instant::now();
        let pending: Vec<Peeked> = ["{\"a\":1}", "[\"é\",2]", "3", "\"x\"", "{}"]
            .iter()
            .map(|s| Peeked::new(s.as_bytes().to_vec(), PROFILE, now))
            .collect();
        let runs = Runs::one(&pending);
        let limits = Limits {
            batch_size: 2,
            max_envelopes: 10,
            max_lower_envelopes: 10,
            flush_seen_by: Some(now),
            max_envelope_bytes: plan::MAX_ENVELOPE_BYTES,
            max_commit_bytes: plan::MAX_COMMIT_BYTES,
            max_value_bytes: 512 << 20,
        };
        let ts = "2026-01-01T00:00:00.000000+00:00";
        let p = plan::plan(&runs, limits, &queues(), ts);
        assert_eq!(p.envelopes.len(), 3);
        let mut ours = Vec::new();
        let envelopes = Envelopes::new(&p.envelopes, &runs, ts);
        envelopes.lpush(&mut ours, "processing");
        assert!(ours.len() <= envelopes.lpush_len("processing"));
        let mut theirs = redis::cmd("LPUSH");
        theirs.arg("processing");
        for e in &p.envelopes {
            let mut bytes = Vec::new();
            e.write(&runs, ts, &mut bytes).unwrap();
            theirs.arg(bytes);
        }
        assert_eq!(ours, theirs.get_packed_command());
    }
}
