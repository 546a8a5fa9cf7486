//! The checks of both implementations, and the scan against the reference.

use super::*;

const PROFILE: Profile = Profile {
    max_bytes: 1 << 20,
    max_depth: 64,
};

/// `check_message`, after making sure the reference says the same.
fn check(m: &[u8]) -> Result<&[u8], Rejection> {
    let fast = check_message(m, PROFILE);
    assert_eq!(fast, check_message_reference(m, PROFILE), "{m:?}");
    fast
}

#[test]
fn valid_messages_pass_unchanged() {
    for m in [
        &br#"{"b":1,"a":2}"#[..],
        br#"{"x":1.50e3,"u":"\u00e9\ud83d\ude00","s":"caf\u00e9 \"q\""}"#,
        "{\"raw\":\"é😀\"}".as_bytes(),
        b"[1,2,3]",
        b"42",
        b"-0.0",
        b"1e308",
        b"1e-400",
        b"123456789012345678901234567890",
        b"\"str\"",
        b"null",
        br#"{"a":1,"a":2}"#,
    ] {
        assert_eq!(check(m).unwrap(), m);
    }
    assert_eq!(check(b"  {\"a\":1}\n").unwrap(), b"{\"a\":1}");
    assert_eq!(check(b"\t\r\n 7 \n").unwrap(), b"7");
}

#[test]
fn bad_messages_are_rejected_with_a_reason() {
    for m in [
        &b"{\"a\":"[..],
        b"hello world",
        b"{\"a\":1} x",
        b"",
        b"  ",
        b"[1,]",
    ] {
        assert!(matches!(check(m), Err(Rejection::NotJson(_))), "{m:?}");
    }
    assert_eq!(check(b"\xff\xfe{}"), Err(Rejection::NotUtf8));
    assert_eq!(check(b"\"\xc3\""), Err(Rejection::NotUtf8));
    let small = Profile {
        max_bytes: 3,
        ..PROFILE
    };
    assert_eq!(
        check_message(b"[1,2,3]", small),
        Err(Rejection::TooLarge { size: 7, limit: 3 })
    );
}

#[test]
fn unpaired_surrogates_are_refused() {
    for m in [
        &br#""\ud83d""#[..],
        br#""\ude00""#,
        br#"{"k":"abc\ud83dxyz"}"#,
        br#"{"\ud83d":1}"#,
        br#"["\ud83d\u0041"]"#,
        br#""\udc00\ud800""#,
    ] {
        let r = check(m);
        assert!(
            matches!(r, Err(Rejection::UnpairedSurrogate(_))),
            "{m:?}: {r:?}"
        );
    }
}

#[test]
fn numbers_beyond_a_double_are_refused() {
    for m in [
        &b"1e999999999"[..],
        b"-1e309",
        b"[1,2e400]",
        br#"{"n":1e309}"#,
    ] {
        let r = check(m);
        assert!(
            matches!(r, Err(Rejection::NumberOutOfRange(_))),
            "{m:?}: {r:?}"
        );
    }
}

#[test]
fn depth_is_limited_and_deep_input_cannot_overflow_the_stack() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(check(nested(64).as_bytes()).is_ok());
    assert_eq!(
        check(nested(65).as_bytes()),
        Err(Rejection::TooDeep { limit: 64 })
    );
    let objects = format!("{}1{}", "{\"a\":".repeat(65), "}".repeat(65));
    assert_eq!(
        check(objects.as_bytes()),
        Err(Rejection::TooDeep { limit: 64 })
    );
    // Far past any limit: refused, not a stack overflow.
    let deep = nested(100_000);
    assert!(check_message(
        deep.as_bytes(),
        Profile {
            max_bytes: 1 << 20,
            max_depth: MAX_DEPTH_LIMIT
        }
    )
    .is_err());
    assert!(check(b"0").is_ok());
    let flat = Profile {
        max_depth: 0,
        ..PROFILE
    };
    assert!(check_message(b"[]", flat).is_err());
    assert!(check_message(b"\"s\"", flat).is_ok());
}

#[test]
fn the_deepest_message_still_makes_an_envelope_serde_json_accepts() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let max = Profile {
        max_bytes: 1 << 20,
        max_depth: MAX_DEPTH_LIMIT,
    };
    let m = nested(MAX_DEPTH_LIMIT);
    let value = check_message(m.as_bytes(), max).unwrap();
    let mut envelope = Vec::new();
    crate::envelope::write_envelope(&mut envelope, uuid::Uuid::nil(), "ts", [value]).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&envelope).is_ok());
    // One level more and serde_json would refuse the envelope: the limit is tight.
    let m = nested(MAX_DEPTH_LIMIT + 1);
    let mut envelope = Vec::new();
    crate::envelope::write_envelope(&mut envelope, uuid::Uuid::nil(), "ts", [m.as_bytes()])
        .unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&envelope).is_err());
}

/// Whether the scan and the reference agree on `m`: the same verdict, the same bytes.
fn scan_agrees(m: &[u8], profile: Profile) -> Result<(), String> {
    let fast = scan::scan(m, profile.max_depth).map(|(start, end)| &m[start..end]);
    let slow = reference::check(m, profile);
    if fast == slow.as_ref().ok().copied() {
        Ok(())
    } else {
        Err(format!(
            "scan {fast:?}, reference {slow:?} for {:?} (max_depth {})",
            String::from_utf8_lossy(m),
            profile.max_depth
        ))
    }
}

/// Asserts that both implementations give `expected` for `m` under `PROFILE`.
fn expect(m: &[u8], expected: bool) {
    scan_agrees(m, PROFILE).unwrap();
    let verdict = check(m);
    assert_eq!(verdict.is_ok(), expected, "{m:?}: {verdict:?}");
}

const ACCEPTED: &[&[u8]] = &[
    // Every escape, and the extremes of \u.
    br#""\"\\\/\b\f\n\r\t""#,
    br#""\u0000""#,
    br#""\u0041\u00e9\u00E9\uFFFF\uffff\ud7ff\ue000""#,
    br#""\uD83D\uDE00""#,
    br#""\udbff\udfff\ud800\udc00""#,
    br#"{"\ud83d\ude00":"\ud83d\ude00x"}"#,
    // Raw characters: DEL, two, three and four bytes, the largest code points.
    b"\"\x7f\"",
    "\"é–😀\"".as_bytes(),
    b"\"\xef\xbf\xbf\"",
    b"\"\xf4\x8f\xbf\xbf\"",
    b"\"\xed\x9f\xbf\xee\x80\x80\"",
    // Every number form.
    b"0",
    b"-0",
    b"-0.0",
    b"7",
    b"-7",
    b"1E+2",
    b"1e+2",
    b"1E2",
    b"1e-2",
    b"1.5E-2",
    b"0e0",
    b"0.0E+0",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"1234567890123456789012345678901234567890",
    b"123456789012345678901234567890.123456789e-10",
    b"1e308",
    b"1.7976931348623157e308",
    b"-1.7976931348623157e308",
    b"0.000123e310",
    b"0.0000001e315",
    b"1e-400",
    b"1e-99999999999999999999999",
    b"-1e-400",
    b"0e99999999999999999999999",
    b"0.000e400",
    b"-0e400",
    b"0.0e309",
    // Structure and whitespace.
    b"[]",
    b"{}",
    b"[[]]",
    b"[{}]",
    b" \t\n\r[ 1 , 2 ] \t\n\r",
    b"{ \"a\" : [ 1 , { \"b\" : null } ] , \"c\" : true , \"d\" : false }",
    br#"{"a":1,"a":2}"#,
    br#"["",true,false,null,0,{"":""}]"#,
];

const REFUSED: &[&[u8]] = &[
    // Not JSON at all, or not one value.
    b"",
    b" ",
    b" \t\n\r",
    b"{} x",
    b"{}{}",
    b"1 2",
    b"[1]]",
    b"[[1]",
    b"]",
    b"}",
    b"[1,]",
    b"[,1]",
    b"[1 2]",
    br#"{"a":1,}"#,
    br#"{"a"}"#,
    br#"{"a":}"#,
    br#"{"a" 1}"#,
    br#"{"a":1 "b":2}"#,
    b"{a:1}",
    b"{1:1}",
    b"['a']",
    b"tru",
    b"truex",
    b"nul",
    b"True",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"/* */ 1",
    b"\x0c1",
    b"\x0b1",
    b"\xc2\xa01",
    b"[1]\x00",
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{}",
    "é".as_bytes(),
    // Numbers outside the grammar.
    b"01",
    b"-01",
    b"00",
    b"1.",
    b".5",
    b"-.5",
    b"1.e3",
    b"-",
    b"+1",
    b"1e",
    b"1e+",
    b"1E-",
    b"0x10",
    b"1_000",
    b"--1",
    // Numbers beyond a double.
    b"1e309",
    b"-1e309",
    b"2e308",
    b"1.7976931348623159e308",
    b"1e999999999",
    b"1e99999999999999999999999",
    b"0.000123e313",
    b"[1,2e400]",
    // Strings: escapes.
    br#""\ud83d""#,
    br#""\ude00""#,
    br#""\udc00""#,
    br#""\udfff""#,
    br#""\ud800""#,
    br#""\udbff""#,
    br#""\ud83d\u0041""#,
    br#""\ud83d\ue000""#,
    br#""\ud83d\udbff""#,
    br#""\ud83d\ud83d\ude00""#,
    br#""\ud83dx""#,
    br#""\ud83d\n""#,
    br#""\ud83d\""#,
    br#""\ud83d\u""#,
    br#""\u12""#,
    br#""\u12g4""#,
    br#""\u00G0""#,
    br#""\u00:0""#,
    br#""\u00@0""#,
    br#""\u00`0""#,
    br#""\u00/0""#,
    br#""\ud83d\udG00""#,
    br#""\x""#,
    br#""\'""#,
    br#""\a""#,
    br#""\U0041""#,
    // Strings: control characters, unterminated.
    b"\"\x00\"",
    b"\"\x1f\"",
    b"\"\t\"",
    b"\"\n\"",
    b"\"abc",
    b"\"abc\\",
    b"\"abcdefghijklmnopqrstuvwxyz",
    // Strings: not UTF-8 (overlong, surrogates, too large, truncated, stray).
    b"\"\xc0\x80\"",
    b"\"\xc1\xbf\"",
    b"\"\xe0\x80\x80\"",
    b"\"\xe0\x9f\xbf\"",
    b"\"\xf0\x80\x80\x80\"",
    b"\"\xf0\x8f\xbf\xbf\"",
    b"\"\xed\xa0\x80\"",
    b"\"\xed\xbf\xbf\"",
    b"\"\xed\xa0\xbd\xed\xb8\x80\"",
    b"\"\xf4\x90\x80\x80\"",
    b"\"\xf5\x80\x80\x80\"",
    b"\"\xff\"",
    b"\"\xc3\"",
    b"\"\xe2\x80\"",
    b"\"\xf0\x9f\x98\"",
    b"\"\x80\"",
    b"\"\xc3\x28\"",
];

#[test]
fn a_corpus_of_edge_cases_is_decided_alike() {
    for m in ACCEPTED {
        expect(m, true);
    }
    for m in REFUSED {
        expect(m, false);
    }
    // Every number form, as a member and in an array too.
    for m in ACCEPTED.iter().chain(REFUSED) {
        for wrapped in [
            [&b"["[..], m, b"]"].concat(),
            [&br#"{"k":"#[..], m, b"}"].concat(),
            [&b"[ "[..], m, b" ,1]"].concat(),
        ] {
            scan_agrees(&wrapped, PROFILE).unwrap();
        }
    }
}

#[test]
fn numbers_near_the_largest_double_are_decided_alike() {
    // The halfway point between the largest double and the next power of two, and numbers
    // around it: the narrow band the scan hands to serde_json's own parser.
    let halfway = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";
    let mut numbers = vec![
        halfway.to_string(),
        format!("{}1", &halfway[..halfway.len() - 1]),
        format!("{}0.9999e0", &halfway[..halfway.len() - 1]),
        format!("-{halfway}"),
        format!("0.{halfway}e309"),
        format!("0.0{halfway}e310"),
        format!("{halfway}0e-1"),
        format!("{}e-1", "9".repeat(310)),
        "9".repeat(308),
        "9".repeat(309),
        "9".repeat(310),
        format!("1{}", "0".repeat(308)),
        format!("1{}", "0".repeat(309)),
    ];
    for mantissa in [
        "1.7976931348623157",
        "1.7976931348623158",
        "1.79769313486231580",
        "1.797693134862315807",
        "1.7976931348623158079",
        "1.79769313486231581",
        "1.7976931348623159",
        "17976931348623158",
        "1",
        "9.999999999999999999999",
        "0.17976931348623158",
    ] {
        for exponent in ["e307", "e308", "e309", "e292", "e291", "E+308"] {
            numbers.push(format!("{mantissa}{exponent}"));
        }
    }
    for n in &numbers {
        scan_agrees(n.as_bytes(), PROFILE).unwrap();
    }
    assert!(check(format!("1{}", "0".repeat(308)).as_bytes()).is_ok());
    assert!(check(format!("1{}", "0".repeat(309)).as_bytes()).is_err());
}

#[test]
fn depth_beyond_serde_json_is_refused_whatever_the_profile() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let lax = Profile {
        max_bytes: 1 << 20,
        max_depth: 1000,
    };
    for n in [0, 1, 64, 124, 126, 127, 128, 129, 200] {
        scan_agrees(nested(n).as_bytes(), lax).unwrap();
        for max_depth in [0, 1, 63, 64, 65, 124, 127, 128] {
            let profile = Profile { max_depth, ..lax };
            scan_agrees(nested(n).as_bytes(), profile).unwrap();
        }
    }
    assert!(check_message(nested(127).as_bytes(), lax).is_ok());
    assert!(check_message(nested(128).as_bytes(), lax).is_err());
    let deep = nested(100_000);
    assert!(scan::scan(deep.as_bytes(), lax.max_depth).is_none());
    assert!(check_message(deep.as_bytes(), lax).is_err());
}

mod generated;
mod string_stops;

/// More edge cases the scan must decide like serde_json.
#[test]
fn edge_cases_are_decided_alike() {
    let mut cases: Vec<Vec<u8>> = [
        // UTF-8 outside strings, BOM, overlong, surrogates, beyond U+10FFFF, truncated.
        &b"\xef\xbb\xbf{}"[..],
        b"[\xc3\xa9]",
        b"\"\xc0\x80\"",
        b"\"\xc1\xbf\"",
        b"\"\xe0\x9f\xbf\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xf0\x8f\xbf\xbf\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\"\xf5\x80\x80\x80\"",
        b"\"\xe2\x82\"",
        b"\"\xe2\x82",
        b"\"abcdefg\xe2\x82\xac\"",
        b"\"abcdefgh\x80\"",
        b"\"\xe2\x80\xa8\xe2\x80\xa9\x7f\"",
        // Escapes at the end of the input, and surrogate pairs cut or broken.
        b"\"\\",
        b"\"\\u",
        b"\"\\u12",
        b"\"\\ud83d",
        b"\"\\ud83d\\",
        b"\"\\ud83d\\u",
        b"\"\\ud83d\\ude0",
        b"\"\\ud83d\\ude00",
        b"\"\\ud83d\\n\"",
        b"\"\\ud83d\\ud83d\\ude00\"",
        b"\"\\ud83d\\u0041\"",
        b"\"\\uDBFF\\uDFFF\"",
        b"\"\\uDC00\"",
        b"\"\\x41\"",
        b"\"\\U0041\"",
        b"{\"\\ud83d\":1}",
        // Numbers.
        b"-",
        b"-0",
        b"-00",
        b"00",
        b"01.5",
        b"0.",
        b"0.e1",
        b"0e",
        b"0e+",
        b"0e-0",
        b"1e+-1",
        b"-.5",
        b".5",
        b"+1",
        b"1.0e+308",
        b"1.0e309",
        b"10e307",
        b"0.1e310",
        b"0.01e310",
        b"0.00e310",
        b"1e0000000000000000000000000000308",
        b"1e0000000000000000000000000000309",
        b"1e2147483647",
        b"1e2147483648",
        b"0.1e2147483648",
        b"0e2147483648",
        b"1e-2147483648",
        b"-1e-2147483649",
        b"[1e309]",
        b"{\"a\":-1e309}",
        b"Infinity",
        b"NaN",
        b"-Infinity",
        // Whitespace kinds and trailing content.
        b"\x0c1",
        b"1\x0b",
        b"1\x00",
        b"[1\xa0]",
        b"{}\n\n",
        b"\"a\"\"b\"",
        b"[]]",
        b"{\"a\":1}}",
        b"nul",
        b"nulll",
        b"[tru]",
        b"[true false]",
        b"{\"a\" \"b\"}",
        b"{\"a\":}",
        b"{1:2}",
        b"{\"a\":1,\"b\"}",
    ]
    .iter()
    .map(|c| c.to_vec())
    .collect();
    // Huge exponent digit strings and long integers with fractions.
    cases.push(format!("1e{}", "9".repeat(5000)).into_bytes());
    cases.push(format!("1e-{}", "9".repeat(5000)).into_bytes());
    cases.push(format!("0.{}1e{}", "0".repeat(2000), "9".repeat(30)).into_bytes());
    cases.push(format!("0.{}e{}", "0".repeat(2000), "9".repeat(30)).into_bytes());
    cases.push(format!("0.{}1e2309", "0".repeat(2000)).into_bytes());
    cases.push(format!("0.{}1e2310", "0".repeat(2000)).into_bytes());
    cases.push(format!("0.{}1e2311", "0".repeat(2000)).into_bytes());
    cases.push(format!("{}.{}e-100", "9".repeat(400), "9".repeat(400)).into_bytes());
    cases.push(format!("1{}.5", "0".repeat(307)).into_bytes());
    cases.push(format!("1{}.5", "0".repeat(308)).into_bytes());
    cases.push(format!("1{}e-1", "0".repeat(309)).into_bytes());
    cases.push(format!("1{}e-1", "0".repeat(310)).into_bytes());
    // Depth exactly at the limit, objects and arrays mixed.
    for depth in [0usize, 1, 2, 63, 64, 65] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let mixed = format!("{}0{}", "[{\"k\":".repeat(depth), "}]".repeat(depth));
        cases.extend([
            arrays.into_bytes(),
            objects.into_bytes(),
            mixed.into_bytes(),
        ]);
    }
    let mut failures = Vec::new();
    for case in &cases {
        for max_depth in [0, 1, 64, 124, 127, 128] {
            let profile = Profile {
                max_bytes: usize::MAX,
                max_depth,
            };
            if let Err(e) = scan_agrees(case, profile) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
