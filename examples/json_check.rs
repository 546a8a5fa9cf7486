//! Micro-benchmark of the message check: ns per message for serde_json's plain syntax check
//! (`from_slice::<&RawValue>`, the old non-strict check), the strict reference (serde_json
//! with a visitor) and the strict fast scan (`check_message`), on a typical scraper event
//! and on a message nested 64 levels deep.
//!
//! `cargo run --release --example json_check [iterations] [raw|reference|fast|all]
//! [event|nested]`: with a check or a message named, only that one runs (for instruction
//! counts under callgrind).

// The sample messages are valid by construction: a failed check is a bug to stop on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use batch_processor::message::{check_message, check_message_reference, Profile};
use serde_json::value::RawValue;

const EVENT: &str = r#"{"ts_ns":1732960000000000000,"seq":12345,"event":"product_scraped","url":"https://www.example-shop.de/p/kaffeevollautomat-creme-123456","title":"Kaffeevollautomat Crème 3000 – Edelstahl","price":{"amount":499.99,"currency":"EUR"},"in_stock":true,"scraped_at":"2025-03-14T09:26:53.123456+00:00","scraper":{"name":"shop-spider","version":"2.3.1"},"description":"Caf\u00e9-Qualit\u00e4t f\u00fcr zu Hause, Lieferung in 2\u20133 Werktagen. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud"}"#;

/// A check that returns the length of the bytes it passes.
type Check = fn(&[u8]) -> usize;

const PROFILE: Profile = Profile {
    max_bytes: 1 << 20,
    max_depth: 64,
};

/// 64 levels: objects and arrays in turn, a few members on each level.
fn nested() -> String {
    let mut m = String::from(r#"{"leaf":true,"n":-1.25e-3}"#);
    for level in 1..64 {
        m = if level % 2 == 1 {
            format!(r#"[{level},"x",{m}]"#)
        } else {
            format!(r#"{{"level":{level},"child":{m}}}"#)
        };
    }
    m
}

fn raw(m: &[u8]) -> usize {
    serde_json::from_slice::<&RawValue>(black_box(m))
        .unwrap()
        .get()
        .len()
}

fn reference(m: &[u8]) -> usize {
    check_message_reference(black_box(m), PROFILE)
        .unwrap()
        .len()
}

fn fast(m: &[u8]) -> usize {
    check_message(black_box(m), PROFILE).unwrap().len()
}

fn time(check: Check, m: &[u8], iterations: u32) -> f64 {
    let started = Instant::now();
    let mut total = 0;
    for _ in 0..iterations {
        total += check(m);
    }
    black_box(total);
    started.elapsed().as_nanos() as f64 / f64::from(iterations.max(1))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: u32 = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("iterations"));
    let only = args.next().filter(|c| c != "all");
    let only_message = args.next();
    let nested = nested();
    let messages = [("event", EVENT.as_bytes()), ("nested", nested.as_bytes())];
    let checks: [(&str, Check); 3] = [("raw", raw), ("reference", reference), ("fast", fast)];
    for (name, m) in messages {
        for (_, check) in checks {
            assert_eq!(check(m), m.len());
        }
        println!("{name}: {} bytes", m.len());
    }
    for round in 1..=3 {
        for (name, m) in messages {
            if only_message.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let line: Vec<String> = checks
                .iter()
                .filter(|(check, _)| only.as_deref().is_none_or(|o| o == *check))
                .map(|(check, f)| format!("{check} {:6.1}", time(*f, m, iterations)))
                .collect();
            println!("round {round} {name:6} ns/msg: {}", line.join("  "));
        }
    }
}
