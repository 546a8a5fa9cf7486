//! Unit tests of the plan: batches, deadlines, byte caps, dead letters and by-reference records.

use super::*;

/// The lists the plan tests (and the tail window's) use.
pub(crate) fn queues() -> crate::settings::Queues {
    crate::settings::Queues {
        sources: vec!["src".into()],
        processing: "processing".into(),
        dead_letter: "dead".into(),
    }
}

/// A profile for short test messages.
pub(crate) const PROFILE: crate::message::Profile = crate::message::Profile {
    max_bytes: 1024,
    max_depth: 64,
};

/// Plan over `items`, all seen at one instant; a `flush_seen_by` in `limits` means "their
/// deadline has passed".
fn run(items: &[&str], limits: Limits) -> (Plan, Vec<Peeked>) {
    let now = Instant::now();
    let limits = Limits {
        flush_seen_by: limits.flush_seen_by.map(|_| now),
        ..limits
    };
    let pending: Vec<Peeked> = items
        .iter()
        .map(|s| Peeked::new(s.as_bytes().to_vec(), PROFILE, now))
        .collect();
    (plan(&Runs::one(&pending), limits, &queues(), "ts"), pending)
}

fn sizes(p: &Plan) -> Vec<usize> {
    p.envelopes.iter().map(|e| e.size).collect()
}

const FULL_ONLY: Limits = Limits {
    batch_size: 2,
    max_envelopes: 10,
    max_lower_envelopes: usize::MAX,
    flush_seen_by: None,
    max_envelope_bytes: MAX_ENVELOPE_BYTES,
    max_commit_bytes: MAX_COMMIT_BYTES,
    max_value_bytes: 512 << 20,
};

#[test]
fn whole_batches_only_until_the_deadline() {
    let (p, _) = run(&["1", "2", "3", "4", "5"], FULL_ONLY);
    assert_eq!(sizes(&p), vec![2, 2]);
    assert_eq!(p.trim, 4);
    assert_eq!(p.messages, 4);
    let (p, _) = run(
        &["1", "2", "3"],
        Limits {
            flush_seen_by: Some(Instant::now()),
            ..FULL_ONLY
        },
    );
    assert_eq!(sizes(&p), vec![2, 1]);
    assert_eq!(p.trim, 3);
}

#[test]
fn only_the_trailing_batch_s_own_age_decides_its_flush() {
    let old = Instant::now();
    let young = old + std::time::Duration::from_secs(10);
    // Three old messages, then three young ones; batches of 4.
    let pending: Vec<Peeked> = (0..6)
        .map(|i| {
            let seen = if i < 3 { old } else { young };
            Peeked::new(format!("{i}").into_bytes(), PROFILE, seen)
        })
        .collect();
    let limits = |by| Limits {
        batch_size: 4,
        flush_seen_by: Some(by),
        ..FULL_ONLY
    };
    // The old messages' deadline has passed: they fill one batch with a young one, and
    // the trailing two young messages wait for their own deadline.
    let p = plan(&Runs::one(&pending), limits(old), &queues(), "ts");
    assert_eq!(sizes(&p), vec![4]);
    assert_eq!(p.trim, 4);
    // Once the young ones' deadline has passed too, they go.
    let p = plan(&Runs::one(&pending), limits(young), &queues(), "ts");
    assert_eq!(sizes(&p), vec![4, 2]);
}

#[test]
fn byte_caps_split_envelopes_and_commits() {
    let items = ["\"aaaa\"", "\"bbbb\"", "\"cccc\"", "\"dddd\"", "\"eeee\""];
    // Each message counts 7 bytes: two fit under 15, a third would not.
    let caps = |commit| Limits {
        batch_size: 10,
        max_envelopes: 10,
        max_lower_envelopes: usize::MAX,
        flush_seen_by: Some(Instant::now()),
        max_envelope_bytes: 15,
        max_commit_bytes: commit,
        max_value_bytes: 512 << 20,
    };
    let (p, _) = run(&items, caps(1000));
    assert_eq!(sizes(&p), vec![2, 2, 1]);
    assert_eq!(p.trim, 5);
    // Once a commit carries 14 bytes it takes no further envelope.
    let (p, _) = run(&items, caps(14));
    assert_eq!(sizes(&p), vec![2]);
    assert_eq!(p.trim, 2);
}

#[test]
fn nothing_to_do_for_a_young_partial_batch() {
    let (p, _) = run(&["1"], FULL_ONLY);
    assert!(p.is_empty());
    assert!(p.envelopes.is_empty());
}

#[test]
fn bad_messages_never_wait_for_good_ones() {
    let (p, _) = run(&["x", "{", "1"], FULL_ONLY);
    assert_eq!(p.trim, 2);
    assert_eq!(p.dead_letters.len(), 2);
    assert!(p.envelopes.is_empty());
    // A bad message after a waiting good one waits with it, then leaves with it.
    let (p, _) = run(&["1", "bad", "2", "3", "oops"], FULL_ONLY);
    assert_eq!(sizes(&p), vec![2]);
    assert_eq!(p.trim, 3);
    assert_eq!(p.dead_letters.len(), 1);
    let (p, _) = run(&["1", "2", "bad", "oops"], FULL_ONLY);
    assert_eq!(p.trim, 4);
    assert_eq!(p.dead_letters.len(), 2);
    let (p, _) = run(
        &["1", "bad"],
        Limits {
            flush_seen_by: Some(Instant::now()),
            ..FULL_ONLY
        },
    );
    assert_eq!(p.trim, 2);
}

#[test]
fn envelope_count_is_capped() {
    let (p, _) = run(
        &["1", "2", "3", "4", "5", "6"],
        Limits {
            max_envelopes: 2,
            ..FULL_ONLY
        },
    );
    assert_eq!(sizes(&p), vec![2, 2]);
    assert_eq!(p.trim, 4);
    let (p, _) = run(
        &["1", "2", "3"],
        Limits {
            max_envelopes: 1,
            flush_seen_by: Some(Instant::now()),
            ..FULL_ONLY
        },
    );
    assert_eq!(sizes(&p), vec![2]);
    assert_eq!(p.trim, 2);
}

/// Dead-letter records count against `max_commit_bytes` like envelopes: sixteen 1 MiB
/// messages of control bytes (records of about 6 MiB each) do not all go into one commit.
#[test]
fn dead_letter_bytes_count_against_the_commit_cap() {
    let profile = crate::message::Profile {
        max_bytes: 1 << 20,
        max_depth: 64,
    };
    let now = Instant::now();
    let message = vec![1u8; 1 << 20];
    let pending: Vec<Peeked> = (0..16)
        .map(|_| Peeked::new(message.clone(), profile, now))
        .collect();
    let p = plan(&Runs::one(&pending), FULL_ONLY, &queues(), "ts");
    let carried: usize = p.dead_letters.iter().map(Vec::len).sum();
    assert!(
        carried <= MAX_COMMIT_BYTES,
        "one commit carries {carried} bytes of dead letters ({} records), over \
         MAX_COMMIT_BYTES = {MAX_COMMIT_BYTES}",
        p.dead_letters.len()
    );
}

#[test]
fn trailing_dead_letters_after_an_expired_partial_batch_count_against_the_cap() {
    let profile = crate::message::Profile {
        max_bytes: 1 << 20,
        max_depth: 64,
    };
    let now = Instant::now();
    let mut pending = vec![Peeked::new(b"{\"good\":1}".to_vec(), profile, now)];
    let message = vec![1u8; 1 << 20];
    pending.extend((0..16).map(|_| Peeked::new(message.clone(), profile, now)));
    let limits = Limits {
        flush_seen_by: Some(now),
        ..FULL_ONLY
    };
    let p = plan(&Runs::one(&pending), limits, &queues(), "ts");
    assert_eq!(p.envelopes.len(), 1, "the expired partial batch goes");
    let carried: usize = p.dead_letters.iter().map(Vec::len).sum();
    assert!(
        carried <= MAX_COMMIT_BYTES,
        "one commit carries {carried} bytes of dead letters ({} records, trim {}), over \
         MAX_COMMIT_BYTES = {MAX_COMMIT_BYTES}",
        p.dead_letters.len(),
        p.trim
    );
}

#[test]
fn envelopes_splice_messages_in_order() {
    let (p, pending) = run(
        &[" {\"a\":1} ", "[2]", "bad"],
        Limits {
            flush_seen_by: Some(Instant::now()),
            ..FULL_ONLY
        },
    );
    let mut bytes = Vec::new();
    p.envelopes[0]
        .write(&Runs::one(&pending), &p.timestamp, &mut bytes)
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r#""batch":[{"a":1},[2]],"size":2"#), "{text}");
    let dl: serde_json::Value = serde_json::from_slice(&p.dead_letters[0]).unwrap();
    assert_eq!(dl["raw"], "bad");
    assert_eq!(dl["source_queue"], "src");
}

/// Messages seen at `now`, as one source's run.
fn peeked_run(items: &[&str], now: Instant) -> Vec<Peeked> {
    items
        .iter()
        .map(|s| Peeked::new(s.as_bytes().to_vec(), PROFILE, now))
        .collect()
}

fn two_sources() -> crate::settings::Queues {
    crate::settings::Queues {
        sources: vec!["urgent".into(), "bulk".into()],
        ..queues()
    }
}

#[test]
fn a_batch_fills_from_the_higher_source_first_and_trims_each_source() {
    let now = Instant::now();
    let urgent = peeked_run(&["1", "2", "3"], now);
    let bulk = peeked_run(&["10", "11", "12", "13"], now);
    let runs = Runs::new(vec![&urgent, &bulk]);
    let p = plan(&runs, FULL_ONLY, &two_sources(), "ts");
    // Batches of two: [1, 2], [3, 10], [11, 12]; 13 waits for its batch to fill.
    assert_eq!(sizes(&p), vec![2, 2, 2]);
    assert_eq!(p.trim, 6);
    assert_eq!(p.trims, vec![3, 3]);
    let mut bytes = Vec::new();
    p.envelopes[1].write(&runs, "ts", &mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r#""batch":[3,10]"#), "{text}");
}

#[test]
fn dead_letters_name_their_own_source_and_by_reference_ones_their_place() {
    let now = Instant::now();
    let urgent = peeked_run(&["bad-u"], now);
    let bulk = peeked_run(&["1", "bad-b", "2"], now);
    let runs = Runs::new(vec![&urgent, &bulk]);
    let p = plan(&runs, FULL_ONLY, &two_sources(), "ts");
    assert_eq!(p.trims, vec![1, 3]);
    let sources: Vec<String> = p
        .dead_letters
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_slice(d).unwrap();
            format!(
                "{}<-{}",
                v["raw"].as_str().unwrap(),
                v["source_queue"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(sources, ["bad-u<-urgent", "bad-b<-bulk"]);
    // A record too large for the server's value limit goes by reference (here both are), and
    // says from which source and which position its message comes.
    let tight = Limits {
        max_value_bytes: 40,
        ..FULL_ONLY
    };
    let bulk = peeked_run(
        &["\"a long enough message that cannot travel inline\""],
        now,
    );
    let runs = Runs::new(vec![&urgent, &bulk]);
    let p = plan(&runs, tight, &two_sources(), "ts");
    assert_eq!(p.trims, vec![1, 1]);
    let moved: Vec<(usize, usize)> = p.by_reference.iter().map(|b| (b.source, b.index)).collect();
    assert_eq!(moved, [(0, 0), (1, 0)]);
}

#[test]
fn commits_that_reach_a_lower_source_carry_few_envelopes() {
    let now = Instant::now();
    let urgent = peeked_run(&["1", "2", "3"], now);
    let bulk: Vec<Peeked> = (10..40)
        .map(|i| Peeked::new(i.to_string().into_bytes(), PROFILE, now))
        .collect();
    let limits = Limits {
        max_lower_envelopes: 2,
        ..FULL_ONLY
    };
    let runs = Runs::new(vec![&urgent, &bulk]);
    let p = plan(&runs, limits, &two_sources(), "ts");
    // [1, 2] holds the first source only; [3, 10] and [11, 12] reach the lower one: cap.
    assert_eq!(sizes(&p), vec![2, 2, 2]);
    assert_eq!(p.trims, vec![3, 3]);
    // A single source is never capped this way.
    let p = plan(&Runs::one(&bulk), limits, &queues(), "ts");
    assert_eq!(p.envelopes.len(), 10);
}
