//! Property tests: the fast scan against the serde_json reference on generated, mutated and
//! arbitrary inputs (the arbitrary-bytes test is the fuzz target run in CI).

//! The scan against the reference on generated messages: JSON values built from
//! pieces chosen to hit every rule, then perhaps mutated, and arbitrary bytes.

use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::Config;

use super::{scan_agrees, Profile};

/// Pieces of string content: plain runs, every escape, paired surrogates and raw
/// characters of every length ...
const GOOD_PIECES: &[&[u8]] = &[
    b"a",
    b"Z9 ",
    b"plain text, longer than a word",
    b"\\n",
    b"\\\"",
    b"\\\\",
    b"\\/",
    b"\\b\\f\\r\\t",
    b"\\u0041",
    b"\\u00e9",
    b"\\u0000",
    b"\\uFFFF",
    b"\\ud83d\\ude00",
    b"\\uDBFF\\uDFFF",
    b"\x7f",
    "é".as_bytes(),
    "–".as_bytes(),
    "😀".as_bytes(),
    b"\xef\xbf\xbf",
    b"\xf4\x8f\xbf\xbf",
    b"\xed\x9f\xbf",
];

/// ... and bad ones: unpaired surrogates, broken escapes, control characters and
/// broken UTF-8.
const BAD_PIECES: &[&[u8]] = &[
    b"\\ud83d",
    b"\\ude00",
    b"\\ud83d\\u0041",
    b"\\ud800\\udbff",
    b"\\ud83d\\",
    b"\\ud83d\\n",
    b"\\u12",
    b"\\uzzzz",
    b"\\u00G0",
    b"\\u00:0",
    b"\\u00@0",
    b"\\u00`0",
    b"\\u00/0",
    b"\\x",
    b"\\",
    b"'",
    b"\x01",
    b"\x1f",
    b"\t",
    b"\xed\xa0\x80",
    b"\xc0\x80",
    b"\xe0\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xff",
    b"\xc3",
    b"\xe2\x80",
    b"\x80",
];

const LITERALS: &[&[u8]] = &[b"true", b"false", b"null"];

const WHITESPACE: &[&str] = &["", "", "", " ", "\n", "\t\r "];

/// JSON whitespace, and now and then a form feed, which is not.
fn whitespace() -> impl Strategy<Value = &'static str> {
    prop_oneof![40 => select(WHITESPACE), 1 => Just("\x0c")]
}

/// Bytes that matter to JSON, for mutations and for short random inputs.
const JSON_BYTES: &[u8] =
    b"{}[],:\"\\ \t\n0123456789.eE+-tfnulrsa\x00\x1f\x7f\x80\xbf\xc3\xed\xf4\xff";

fn digits(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..10, len)
        .prop_map(|d| d.into_iter().map(|d| char::from(b'0' + d)).collect())
}

fn string() -> impl Strategy<Value = Vec<u8>> {
    // A \u escape of any code unit, most near or among the surrogates, upper or lower
    // case, and pairs of them.
    let unit = || prop_oneof![0xd7f0u32..0xe010, 0u32..0x10000];
    let hex = (unit(), any::<bool>()).prop_map(|(n, upper)| {
        if upper {
            format!("\\u{n:04X}")
        } else {
            format!("\\u{n:04x}")
        }
    });
    let escape = prop_oneof![
        hex.clone(),
        (hex.clone(), hex).prop_map(|(a, b)| format!("{a}{b}")),
        (0xd800u32..0xdc00, 0xdc00u32..0xe000).prop_map(|(a, b)| format!("\\u{a:04x}\\u{b:04x}")),
    ]
    .prop_map(String::into_bytes);
    let piece = prop_oneof![
        12 => select(GOOD_PIECES).prop_map(<[u8]>::to_vec),
        1 => select(BAD_PIECES).prop_map(<[u8]>::to_vec),
        2 => escape,
    ];
    prop::collection::vec(piece, 0..6)
        .prop_map(|pieces| [&b"\""[..], &pieces.concat(), b"\""].concat())
}

/// Numbers of every shape, many near the edges: leading zeros, huge exponents, long
/// fractions of zeros, and magnitudes around 1e308.
fn number() -> impl Strategy<Value = Vec<u8>> {
    let integer = prop_oneof![
        3 => Just("0".to_string()),
        6 => (1u8..10, digits(0..20)).prop_map(|(d, rest)| format!("{d}{rest}")),
        1 => (1u8..10, digits(300..315)).prop_map(|(d, rest)| format!("{d}{rest}")),
        1 => digits(2..4),
    ];
    let fraction = prop_oneof![
        4 => Just(String::new()),
        4 => digits(1..20).prop_map(|d| format!(".{d}")),
        1 => (0usize..330, digits(1..5)).prop_map(|(z, d)| format!(".{}{d}", "0".repeat(z))),
        1 => Just(".".to_string()),
        1 => Just(String::new()),
    ];
    let exponent = prop_oneof![
        4 => Just(String::new()),
        3 => (select(&["e", "E", "e+", "E-", "e-"][..]), 0u32..400)
            .prop_map(|(e, n)| format!("{e}{n}")),
        2 => (select(&["e", "e+", "E"][..]), 280u32..330).prop_map(|(e, n)| format!("{e}{n}")),
        1 => (select(&["e", "e-"][..]), digits(1..30)).prop_map(|(e, n)| format!("{e}{n}")),
        1 => select(&["e", "e+", "E-"][..]).prop_map(str::to_string),
    ];
    let near_max = (
        select(
            &[
                "1797693134862315",
                "9999999999999999",
                "1000000000000000",
                "17976931348623158079",
            ][..],
        ),
        digits(0..8),
        select(&["e307", "e308", "e309", "e292", "e293"][..]),
    )
        .prop_map(|(prefix, more, e)| format!("{}.{}{more}{e}", &prefix[..1], &prefix[1..]));
    let general = (any::<bool>(), integer, fraction, exponent)
        .prop_map(|(minus, i, f, e)| format!("{}{i}{f}{e}", if minus { "-" } else { "" }));
    prop_oneof![4 => general, 1 => near_max].prop_map(String::into_bytes)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        select(LITERALS).prop_map(<[u8]>::to_vec),
        number(),
        string(),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        let ws = whitespace;
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..5).prop_map(|items| {
                let items: Vec<Vec<u8>> = items
                    .into_iter()
                    .map(|(a, v, b)| [a.as_bytes(), &v, b.as_bytes()].concat())
                    .collect();
                [&b"["[..], &items.join(&b","[..]), b"]"].concat()
            }),
            prop::collection::vec((ws(), string(), ws(), inner, ws()), 0..5).prop_map(|members| {
                let members: Vec<Vec<u8>> = members
                    .into_iter()
                    .map(|(a, k, b, v, c)| {
                        [a.as_bytes(), &k, b.as_bytes(), b":", &v, c.as_bytes()].concat()
                    })
                    .collect();
                [&b"{"[..], &members.join(&b","[..]), b"}"].concat()
            }),
        ]
    })
}

/// A value, perhaps wrapped in many levels of arrays and objects, with whitespace.
fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        whitespace(),
        value(),
        whitespace(),
        prop_oneof![6 => Just(0usize), 1 => 0usize..140],
        any::<bool>(),
    )
        .prop_map(|(before, v, after, levels, objects)| {
            let (open, close): (&[u8], &[u8]) = if objects {
                (b"{\"k\":", b"}")
            } else {
                (b"[", b"]")
            };
            [
                before.as_bytes(),
                &open.repeat(levels),
                &v,
                &close.repeat(levels),
                after.as_bytes(),
            ]
            .concat()
        })
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(Index),
    Insert(Index, u8),
    Replace(Index, u8),
    Truncate(Index),
    Repeat(Index, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = || prop_oneof![select(JSON_BYTES), any::<u8>()];
    prop_oneof![
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), byte()).prop_map(|(i, b)| Edit::Replace(i, b)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Edit::Repeat(i, j)),
    ]
}

fn apply(mut m: Vec<u8>, edits: Vec<Edit>) -> Vec<u8> {
    for e in edits {
        let len = m.len();
        if len == 0 {
            break;
        }
        match e {
            Edit::Delete(i) => {
                m.remove(i.index(len));
            }
            Edit::Insert(i, b) => m.insert(i.index(len + 1), b),
            Edit::Replace(i, b) => m[i.index(len)] = b,
            Edit::Truncate(i) => m.truncate(i.index(len)),
            Edit::Repeat(i, j) => {
                let (a, b) = (i.index(len), j.index(len));
                let piece = m[a.min(b)..a.max(b)].to_vec();
                m.splice(a.max(b)..a.max(b), piece);
            }
        }
    }
    m
}

/// Runs of backslashes, which escape each other in pairs.
const BACKSLASH_RUNS: &[&[u8]] = &[b"\\\\", b"\\\\\\", b"\\\\\\\\", b"\\\""];

/// Arrays of long strings: runs of plain bytes of any length between the pieces, so that
/// quotes, escapes, UTF-8 sequences and bad bytes fall at every offset of the scan's 64-byte
/// blocks, and across their edges.
fn long_strings() -> impl Strategy<Value = Vec<u8>> {
    let run = (0usize..70).prop_map(|n| b"abcdefghij".repeat(7)[..n].to_vec());
    let piece = prop_oneof![
        8 => run,
        8 => select(GOOD_PIECES).prop_map(<[u8]>::to_vec),
        1 => select(BAD_PIECES).prop_map(<[u8]>::to_vec),
        1 => select(BACKSLASH_RUNS).prop_map(<[u8]>::to_vec),
    ];
    let string = prop::collection::vec(piece, 0..12)
        .prop_map(|pieces| [&b"\""[..], &pieces.concat(), b"\""].concat());
    (
        prop::collection::vec((whitespace(), string), 1..8),
        whitespace(),
    )
        .prop_map(|(items, end)| {
            let items: Vec<Vec<u8>> = items
                .into_iter()
                .map(|(ws, s)| [ws.as_bytes(), &s].concat())
                .collect();
            [&b"["[..], &items.join(&b","[..]), end.as_bytes(), b"]"].concat()
        })
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (message(), prop::collection::vec(edit(), 0..4)).prop_map(|(m, edits)| apply(m, edits))
}

fn max_depth() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(64usize), 4 => 0usize..8, 1 => 120usize..200]
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn agree(m: &[u8], max_depth: usize) -> Result<(), TestCaseError> {
    let profile = Profile {
        max_bytes: usize::MAX,
        max_depth,
    };
    scan_agrees(m, profile).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn on_generated_messages(m in message(), depth in max_depth()) {
        agree(&m, depth)?;
    }

    #[test]
    fn on_mutated_messages(m in mutated(), depth in max_depth()) {
        agree(&m, depth)?;
    }

    #[test]
    fn on_long_strings(
        m in prop_oneof![
            2 => long_strings(),
            1 => (long_strings(), prop::collection::vec(edit(), 1..4))
                .prop_map(|(m, edits)| apply(m, edits)),
        ],
    ) {
        agree(&m, 64)?;
    }

    /// The fuzz target: arbitrary bytes, and random strings of the bytes that matter to
    /// JSON.
    #[test]
    fn on_arbitrary_bytes(
        m in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(select(JSON_BYTES), 0..64),
        ],
        depth in max_depth(),
    ) {
        agree(&m, depth)?;
    }
}

proptest! {
    #![proptest_config(config(2_000_000))]

    /// The long run: `cargo test --release --lib message -- --ignored`.
    #[test]
    #[ignore]
    fn at_length(
        m in prop_oneof![
            3 => mutated(),
            1 => long_strings(),
            1 => prop::collection::vec(any::<u8>(), 0..256),
            1 => prop::collection::vec(select(JSON_BYTES), 0..256),
        ],
        depth in max_depth(),
    ) {
        agree(&m, depth)?;
    }
}
