//! Every envelope parses everywhere: messages that valid-JSON checks pass but strict parsers
//! refuse (unpaired surrogate escapes, numbers beyond a double, deep nesting) go to the
//! dead-letter list with their exact bytes and a reason naming the rule, and every envelope
//! made from a hostile corpus parses with serde_json, Python's `json` and orjson.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use batch_processor::message::{check_message, Profile};

use crate::harness::*;

/// A message and whether the JSON profile accepts it; refused ones carry a word their
/// dead-letter reason must contain.
struct Case {
    bytes: Vec<u8>,
    refused_for: Option<&'static str>,
}

fn good(text: &str) -> Case {
    Case {
        bytes: text.as_bytes().to_vec(),
        refused_for: None,
    }
}

fn bad(bytes: impl Into<Vec<u8>>, reason: &'static str) -> Case {
    Case {
        bytes: bytes.into(),
        refused_for: Some(reason),
    }
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn corpus() -> Vec<Case> {
    vec![
        good(r#"{"title":"caf\u00e9 \ud83d\ude00","n":1}"#),
        bad(&br#"{"title":"cut emoji \ud83d"}"#[..], "surrogate"),
        bad(&br#"{"title":"\ude00 trailing first"}"#[..], "surrogate"),
        bad(&br#"{"\ud800":"lone surrogate in a key"}"#[..], "surrogate"),
        bad(&br#"["\ud83d\u0041"]"#[..], "surrogate"),
        good(
            r#"{"price":1.7976931348623157e308,"tiny":1e-400,"big":123456789012345678901234567890}"#,
        ),
        bad(&b"{\"price\":1e999999999}"[..], "double range"),
        bad(&b"[-1e309]"[..], "double range"),
        bad(format!("[{}]", "9".repeat(400)), "double range"),
        good(&nested(64)),
        bad(nested(65), "nested deeper"),
        bad(nested(1000), "nested deeper"),
        bad(nested(100_000), "nested deeper"),
        good(r#"{"a":1,"a":2}"#),
        good(r#"{"nul":"\u0000","nonchar":"￿","ctl":"\u001f"}"#),
        good(" \n\t{\"padded\":true}\r\n "),
        bad(&b"\xef\xbb\xbf{\"bom\":1}"[..], "JSON"),
        bad(&b"{\"raw_surrogate\":\"\xed\xa0\x80\"}"[..], "UTF-8"),
        bad(&b"{\"overlong\":\"\xc0\xaf\"}"[..], "UTF-8"),
        bad(&b"[NaN]"[..], "JSON"),
        bad(&b"[Infinity]"[..], "JSON"),
        bad(&b"{\"ctl\":\"a\x01b\"}"[..], "JSON"),
        bad(&b"[01]"[..], "JSON"),
    ]
}

/// Python with orjson, as `scripts/test` installs it (`BP_PYTHON`); plain `python3` when the
/// tests run without the script, in which case orjson may be missing.
fn python() -> (PathBuf, bool) {
    match std::env::var_os("BP_PYTHON") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from("python3"), false),
    }
}

const PARSE_ALL: &str = r#"
import json, os, sys
try:
    import orjson
except ImportError:
    orjson = None
    if sys.argv[2] == "required":
        sys.exit("orjson is not installed (run scripts/test, which installs it)")
names = sorted(os.listdir(sys.argv[1]))
for name in names:
    data = open(os.path.join(sys.argv[1], name), "rb").read()
    try:
        json.loads(data)
    except Exception as e:
        sys.exit(f"json refused {name}: {e}")
    if orjson is not None:
        try:
            orjson.loads(data)
        except Exception as e:
            sys.exit(f"orjson refused {name}: {e}")
print(f"parsed {len(names)} envelopes" + ("" if orjson else " (without orjson)"))
"#;

#[test]
fn envelopes_from_a_hostile_corpus_parse_in_every_mainstream_parser() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    // Each hostile message sits between good ones, so a poisoned envelope would show.
    let cases = corpus();
    let mut messages = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        messages.push(event(i as u64 * 2, 150));
        messages.push(case.bytes.clone());
    }
    push_all(&mut c, &names.source, &messages);
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_BATCH_SIZE", "5"),
            ("REDIS_PROCESSING_TIMEOUT", "0.1"),
        ],
    );
    assert!(wait_drained(&mut c, &names, Duration::from_secs(20)));
    d.terminate_ok();

    let envelopes = read_all(&mut c, &names.processing);
    let spliced: Vec<Vec<u8>> = envelopes.iter().flat_map(|e| batch_raw(e)).collect();
    let dead: Vec<DeadRecord> = read_all(&mut c, &names.dead_letter)
        .iter()
        .map(|d| parse_dead_letter(d))
        .collect();
    for case in &cases {
        // A good message is spliced as the check returns it (whitespace around it dropped).
        let as_spliced = check_message(&case.bytes, Profile::default()).unwrap_or(&case.bytes);
        let in_envelopes = spliced.iter().filter(|m| as_spliced == &m[..]).count();
        let dead_for: Vec<&DeadRecord> = dead.iter().filter(|d| d.original == case.bytes).collect();
        let shown = String::from_utf8_lossy(&case.bytes[..case.bytes.len().min(60)]).into_owned();
        match case.refused_for {
            None => {
                assert_eq!(in_envelopes, 1, "good message not enveloped once: {shown}");
                assert!(dead_for.is_empty(), "good message dead-lettered: {shown}");
            }
            Some(word) => {
                assert_eq!(in_envelopes, 0, "refused message enveloped: {shown}");
                assert_eq!(
                    dead_for.len(),
                    1,
                    "refused message not dead-lettered once: {shown}"
                );
                assert!(
                    dead_for[0].reason.contains(word),
                    "reason {:?} does not name {word:?} for {shown}",
                    dead_for[0].reason
                );
            }
        }
    }
    // Every good filler event is there too.
    for i in 0..cases.len() {
        let seq = i as u64 * 2;
        assert_eq!(
            spliced
                .iter()
                .filter(|m| m.starts_with(b"{\"seq\"") && seq_of(m) == seq)
                .count(),
            1,
            "filler {seq}"
        );
    }

    // serde_json (with its default nesting limit) parses every envelope ...
    let dir = tempfile::tempdir().unwrap();
    for (i, e) in envelopes.iter().enumerate() {
        serde_json::from_slice::<serde_json::Value>(e)
            .unwrap_or_else(|err| panic!("serde_json refused envelope {i}: {err}"));
        std::fs::write(dir.path().join(format!("{i:05}.json")), e).unwrap();
    }
    // ... and so do Python's json and orjson.
    let (python, required) = python();
    let out = Command::new(&python)
        .arg("-c")
        .arg(PARSE_ALL)
        .arg(dir.path())
        .arg(if required { "required" } else { "optional" })
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("parsed {} envelopes", envelopes.len())),
        "{stdout}"
    );
    if !required {
        eprintln!("json_profile: {stdout}");
    }
}
