//! Property tests for the pure parts every message goes through: the newline splitter and the
//! JSON scanner behind the envelope parser. serde_json is the oracle for what is valid JSON.

use bytes::Bytes;
use mcpvisor::protocol::framing::{Frame, Lent, LineSplitter};
use mcpvisor::protocol::json_scan::{self, Field, Fields, Top};
use mcpvisor::protocol::jsonrpc;
use proptest::prelude::*;
use serde_json::value::RawValue;

/// Pieces that make up JSON (valid and not): structure, keys the scanner looks for, strings with
/// escapes, numbers good and bad, literals, whitespace, and bytes that break things.
fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\t",
        "\r",
        "\"id\"",
        "\"method\"",
        "\"jsonrpc\"",
        "\"params\"",
        "\"result\"",
        "\"error\"",
        "\"2.0\"",
        "\"x\"",
        "\"a\\\"b\"",
        "\"\\u0069d\"",
        "\"\\n\\/\"",
        "\"é😀\"",
        "1",
        "-0",
        "12.5e-3",
        "01",
        "1.",
        "-",
        "true",
        "false",
        "null",
        "nul",
        "\"",
        "\\",
        "\u{1}",
        "\"\\x\"",
        "\"\\u12\"",
    ])
}

/// Strings of valid and broken UTF-8 (truncated, overlong, surrogates, stray continuation bytes),
/// short and past the scanner's 16-, 64-byte and long-string paths, and non-ASCII outside strings.
fn utf8_piece() -> impl Strategy<Value = Vec<u8>> {
    let content = prop::sample::select(vec![
        &b"a"[..],
        "é".as_bytes(),
        "😀".as_bytes(),
        "€".as_bytes(),
        b"\\n",
        b"\\\"",
        b"\xff",
        b"\xc3",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\x80",
        b"\xf4\x90\x80\x80",
        b"0123456789abcdef0123456789abcdef",
    ]);
    prop_oneof![
        4 => prop::collection::vec(content, 0..8).prop_map(|parts| [&b"\""[..], &parts.concat(), b"\""].concat()),
        1 => prop::sample::select(vec![&b"["[..], b"]", b"{", b"}", b",", b":", b"\"k\":", b"1", b"\xc3\xa9", b"\xff"]).prop_map(<[u8]>::to_vec),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map("(id|method|params|result|[a-z\"\\\\]{0,6})", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// serde_json's verdict. It does not check escapes in keys it ignores, nor duplicate keys; the
/// scanner refuses both at the top level (as serde does for the envelope struct), so those texts
/// are compared only where the verdicts can be the same.
fn serde_accepts(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Feeds `input` cut at `cuts`; also returns the most the splitter held beyond the chunk just fed.
fn frames(input: &[u8], cuts: &[usize], max: usize) -> (Vec<Frame>, usize) {
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    let mut peak = 0;
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for p in points {
        s.push(&input[at..p]);
        peak = peak.max(s.buffered() - (p - at));
        at = p;
        while let Some(f) = s.next_frame() {
            out.push(f);
        }
    }
    out.extend(s.finish());
    (out, peak)
}

proptest! {
    // Failures are reported with their minimal input; they are not written to files in the tree.
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn scanner_agrees_with_serde_on_token_soup(tokens in prop::collection::vec(token(), 0..24)) {
        let text: String = tokens.concat();
        match json_scan::scan(text.as_bytes()) {
            Ok(_) => prop_assert!(serde_accepts(&text), "scanner accepted what serde refuses: {text}"),
            Err(e) if e.what == "duplicate field" || e.what == "invalid escape in key" => {}
            Err(e) => prop_assert!(!serde_accepts(&text), "scanner refused ({e}) what serde accepts: {text}"),
        }
    }

    #[test]
    fn scanner_accepts_any_json_and_finds_the_same_fields(value in json_value(), pretty in any::<bool>()) {
        // Compact (the keys the scanner recognises by their bytes) and pretty-printed (whitespace
        // before every key, the general path).
        let text = if pretty { serde_json::to_string_pretty(&value).unwrap_or_default() } else { value.to_string() };
        let top = json_scan::scan(text.as_bytes());
        prop_assert!(top.is_ok(), "{:?}: {text}", top);
        if let (Ok(Top::Object(fields)), serde_json::Value::Object(map)) = (top, &value) {
            let raw: std::collections::HashMap<String, &RawValue> = serde_json::from_str(&text).unwrap_or_default();
            for (key, got) in [("id", fields.get(Field::Id)), ("method", fields.get(Field::Method)), ("params", fields.get(Field::Params)), ("result", fields.get(Field::Result))] {
                prop_assert_eq!(got, raw.get(key).map(|r| r.get().as_bytes()), "{}", key);
                prop_assert_eq!(got.is_some(), map.contains_key(key));
            }
        }
    }

    /// The scanner checks UTF-8 itself (only where JSON can hold non-ASCII: in strings), so the
    /// oracle is the old way, the whole text checked first.
    #[test]
    fn scanner_checks_utf8_as_a_whole_text_check_would(pieces in prop::collection::vec(utf8_piece(), 0..12)) {
        let text: Vec<u8> = pieces.concat();
        let oracle = std::str::from_utf8(&text).is_ok_and(serde_accepts);
        match json_scan::scan(&text) {
            Ok(_) => prop_assert!(oracle, "scanner accepted {:?}", String::from_utf8_lossy(&text)),
            Err(e) if e.what == "duplicate field" => {}
            Err(e) => prop_assert!(!oracle, "scanner refused ({e}) {:?}", String::from_utf8_lossy(&text)),
        }
        let parsed = jsonrpc::parse(&text);
        prop_assert_eq!(matches!(parsed, Err(jsonrpc::NotJson::Utf8(_))), std::str::from_utf8(&text).is_err() && json_scan::scan(&text).is_err_and(|e| e.what == json_scan::INVALID_UTF8));
    }

    #[test]
    fn envelope_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = jsonrpc::parse(&bytes);
        let _ = jsonrpc::sniff_id(&bytes);
    }

    #[test]
    fn splitting_at_any_read_boundary_gives_the_same_frames(
        lines in prop::collection::vec("[a-z{}\" \r]{0,40}", 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        crlf in any::<bool>(),
        max in 1usize..64,
    ) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let input = lines.join(sep).into_bytes();
        let (whole, _) = frames(&input, &[], max);
        let (split, peak) = frames(&input, &cuts, max);
        prop_assert_eq!(&whole, &split);
        // Besides the bytes just read, never more than the limit (plus a possible `\r`) is held.
        prop_assert!(peak <= max + 1, "held {} beyond the read, limit {}", peak, max);
        for f in &whole {
            match f {
                Frame::Line(l) => prop_assert!(l.len() <= max && !l.contains(&b'\n')),
                Frame::Oversized { len, .. } => prop_assert!(*len > max),
            }
        }
    }

    /// Lent lines that are JSON objects are found by scanning them, their newline not searched
    /// for: they must be the same lines as the splitter's frames (objects valid and not, spaces
    /// or `\r` before the newline, blank lines, lines over the limit), and their fields those a
    /// scan of the line alone finds.
    #[test]
    fn lent_objects_are_the_frames_and_their_fields_a_scan_of_the_line(
        lines in prop::collection::vec(prop_oneof![
            json_value().prop_map(|v| v.to_string()),
            prop::collection::vec(token(), 0..12).prop_map(|t| format!("{{{}", t.concat())),
            "[{} \r]{0,3}",
        ], 0..10),
        max in prop_oneof![1usize..40, Just(1 << 20)],
    ) {
        let input = lines.join("\n").into_bytes();
        let (want, _) = frames(&input, &[], max);
        let mut s = LineSplitter::new(max);
        s.push(&input);
        let mut got = Vec::new();
        // As the relay does: the lines that came with a frame are lent after it.
        while let Some(frame) = s.next_frame() {
            got.push(frame);
            let Some(mut lent) = s.lend_lines() else { continue };
            loop {
                let mut fields = Fields::default();
                match lent.next_line(&mut fields) {
                    Some(Lent::Object(line)) => {
                        let alone = json_scan::scan(&line);
                        prop_assert_eq!(alone, Ok(Top::Object(fields)), "{:?}", String::from_utf8_lossy(&line));
                        got.push(Frame::Line(line.to_bytes()));
                    }
                    Some(Lent::Line(line)) => got.push(Frame::Line(line.to_bytes())),
                    Some(Lent::Oversized(frame)) => got.push(frame),
                    None => break,
                }
            }
        }
        got.extend(s.finish());
        prop_assert_eq!(got, want);
    }

    #[test]
    fn splitter_never_buffers_an_endless_line(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 0..64)) {
        let max = 100;
        let mut s = LineSplitter::new(max);
        for c in &chunks {
            s.push(c);
            while s.next_frame().is_some() {}
            prop_assert!(s.buffered() <= max + 1, "buffered {}", s.buffered());
        }
        let _ = s.finish();
    }
}

#[test]
fn complete_lines_come_out_unchanged() {
    let (frames, _) = frames(b"{\"a\":1}\n\n{\"b\":2}", &[3, 9], 64);
    assert_eq!(
        frames,
        vec![Frame::Line(Bytes::from_static(b"{\"a\":1}")), Frame::Line(Bytes::from_static(b"{\"b\":2}"))]
    );
}
