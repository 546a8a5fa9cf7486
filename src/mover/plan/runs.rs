//! The messages a plan may take, seen as one sequence: the unplanned run of each source list,
//! highest priority first. Strict priority is then just order: a batch fills from the front.

use super::Peeked;

/// The unplanned runs of the source lists a plan may take from, in priority order. Index `i`
/// of the sequence is the `i`-th message counting through the runs one after another.
#[derive(Debug, Clone, Default)]
pub struct Runs<'a> {
    runs: Vec<&'a [Peeked]>,
    len: usize,
}

impl<'a> Runs<'a> {
    /// The runs of sources 0, 1, … (each oldest first).
    pub fn new(runs: Vec<&'a [Peeked]>) -> Self {
        let len = runs.iter().map(|r| r.len()).sum();
        Runs { runs, len }
    }

    /// A single source's run.
    pub fn one(run: &'a [Peeked]) -> Self {
        Runs::new(vec![run])
    }

    /// Messages in all runs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no run holds a message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many runs (sources) there are.
    pub fn sources(&self) -> usize {
        self.runs.len()
    }

    /// The run of source `k` (empty past the last).
    pub fn run(&self, k: usize) -> &'a [Peeked] {
        self.runs.get(k).copied().unwrap_or(&[])
    }

    /// The `i`-th message of the sequence.
    pub fn get(&self, i: usize) -> Option<&'a Peeked> {
        let (k, j) = self.locate(i)?;
        self.runs[k].get(j)
    }

    /// Which source the `i`-th message came from, and its index in that source's run.
    pub fn locate(&self, mut i: usize) -> Option<(usize, usize)> {
        for (k, run) in self.runs.iter().enumerate() {
            if i < run.len() {
                return Some((k, i));
            }
            i -= run.len();
        }
        None
    }

    /// Every message, in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = &'a Peeked> + '_ {
        self.runs.iter().flat_map(|r| r.iter())
    }

    /// How many messages of each run the first `covered` of the sequence take: whole runs,
    /// then a prefix of one.
    pub fn split(&self, mut covered: usize) -> Vec<usize> {
        self.runs
            .iter()
            .map(|run| {
                let taken = covered.min(run.len());
                covered -= taken;
                taken
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::mover::plan::tests::PROFILE;

    fn peeked(items: &[&str]) -> Vec<Peeked> {
        let now = Instant::now();
        items
            .iter()
            .map(|s| Peeked::new(s.as_bytes().to_vec(), PROFILE, now))
            .collect()
    }

    #[test]
    fn one_sequence_over_the_runs_in_priority_order() {
        let (a, b, c) = (peeked(&["1", "2"]), peeked(&[]), peeked(&["3"]));
        let runs = Runs::new(vec![&a, &b, &c]);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs.sources(), 3);
        let order: Vec<&[u8]> = runs.iter().map(Peeked::bytes).collect();
        assert_eq!(order, [&b"1"[..], b"2", b"3"]);
        assert_eq!(runs.locate(1), Some((0, 1)));
        assert_eq!(runs.locate(2), Some((2, 0)));
        assert_eq!(runs.locate(3), None);
        assert_eq!(runs.get(2).map(Peeked::bytes), Some(&b"3"[..]));
        assert_eq!(runs.split(0), [0, 0, 0]);
        assert_eq!(runs.split(1), [1, 0, 0]);
        assert_eq!(runs.split(3), [2, 0, 1]);
        assert!(runs.run(7).is_empty());
    }
}
