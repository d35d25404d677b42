//! The scanner against hand-picked texts; tests/properties.rs compares it with serde_json.

use super::*;

/// The scanner on a test's `&str`.
fn scan(text: &str) -> Result<Top<'_>, ScanError> {
    super::scan(text.as_bytes())
}

/// A field's expected text.
fn b(text: &str) -> Option<&[u8]> {
    Some(text.as_bytes())
}

fn ok(text: &str) -> bool {
    scan(text).is_ok()
}

#[test]
fn finds_top_level_fields_and_ignores_nested_ones() {
    let text =
        r#" {"jsonrpc":"2.0","params":{"id":9,"method":"no"},"id":"a\"b","method":"x/y","other":[1,{"result":2}]} "#;
    let Ok(Top::Object(f)) = scan(text) else { panic!("not an object") };
    assert_eq!(f.get(Field::Jsonrpc), b(r#""2.0""#));
    assert_eq!(f.get(Field::Id), b(r#""a\"b""#));
    assert_eq!(f.get(Field::Method), b(r#""x/y""#));
    assert_eq!(f.get(Field::Params), b(r#"{"id":9,"method":"no"}"#));
    assert_eq!(f.get(Field::Result), None);
}

#[test]
fn escaped_keys_are_decoded_and_duplicates_refused() {
    let Ok(Top::Object(f)) = scan(r#"{"\u0069d":1}"#) else { panic!() };
    assert_eq!(f.get(Field::Id), b("1"));
    assert!(scan(r#"{"id":1,"id":2}"#).is_err());
    assert!(scan(r#"{"x":1,"x":2}"#).is_ok());
    assert!(scan(r#"{"\ud800":1}"#).is_err());
}

#[test]
fn compact_and_spaced_keys_are_the_same_field() {
    let Ok(Top::Object(f)) = scan(r#"{"jsonrpc":"2.0","id":7,"method":"m","params":{},"error":1}"#) else { panic!() };
    assert_eq!((f.get(Field::Jsonrpc), f.get(Field::Id), f.get(Field::Method)), (b(r#""2.0""#), b("7"), b(r#""m""#)));
    assert_eq!((f.get(Field::Params), f.get(Field::Error)), (b("{}"), b("1")));
    assert!(scan(r#"{"id":1, "id" :2}"#).is_err());
    assert!(scan(r#"{"result" :1,"result":2}"#).is_err());
    assert!(scan(r#"{"idx":1,"id":2}"#).is_ok());
    assert!(scan(r#"{"id":}"#).is_err());
    assert!(scan(r#"{"jsonrpc"}"#).is_err());
}

#[test]
fn the_usual_first_member_is_read_like_any_other() {
    for text in [r#"{"jsonrpc":"2.0","id":1}"#, r#"{"jsonrpc":"2.0", "id" : 1 }"#, r#"{ "jsonrpc" : "2.0" , "id":1}"#] {
        let Ok(Top::Object(f)) = scan(text) else { panic!("{text}") };
        assert_eq!((f.get(Field::Jsonrpc), f.get(Field::Id)), (b(r#""2.0""#), b("1")), "{text}");
    }
    let Ok(Top::Object(f)) = scan(r#"{"jsonrpc":"2.0"}"#) else { panic!() };
    assert_eq!(f.get(Field::Jsonrpc), b(r#""2.0""#));
    assert!(scan(r#"{"jsonrpc":"2.0",}"#).is_err());
    assert!(scan(r#"{"jsonrpc":"2.0","#).is_err());
    assert_eq!(scan(r#"{"jsonrpc":"2.0","jsonrpc":"2.0"}"#).map(|_| ()).map_err(|e| e.what), Err("duplicate field"));
}

#[test]
fn arrays_list_their_elements() {
    let items: Vec<&[u8]> = vec![b"1", br#"{"a":[]}"#, br#""x""#];
    assert_eq!(scan(r#"[1, {"a":[]} ,"x"]"#), Ok(Top::Array(items)));
    assert_eq!(scan("[]"), Ok(Top::Array(vec![])));
    assert_eq!(scan("\"s\""), Ok(Top::Scalar));
}

#[test]
fn accepts_what_json_allows() {
    for text in [
        r#""0123456789abcdefghij0123456789abcdefghij\"0123456789abcdefghij0123456789abcdefghij\u00e9é""#,
        "0",
        "-0",
        "1.5e-3",
        "1E+9",
        "-12.0",
        "true",
        "false",
        "null",
        r#""\u00e9\n\"\\\/""#,
        "\"é😀\"",
        "[[[]]]",
        r#"{"a":{"b":{"c":[1,2,{"d":null}]}}}"#,
        " \t\r\n{} ",
        r#""0123456789abcdefghij""#,
    ] {
        assert!(ok(text), "{text}");
    }
}

#[test]
fn refuses_what_json_does_not() {
    for text in [
        "",
        " ",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "tru",
        "nul",
        "[1,]",
        "{\"a\":1,}",
        "{a:1}",
        "{\"a\" 1}",
        "[1 2]",
        "\"abc",
        "\"\\x\"",
        "\"\\u12g4\"",
        "\"a\u{1}b\"",
        "{} {}",
        "[",
        "{",
        "{\"a\":}",
        "'x'",
        "NaN",
        "\"0123456789\tabcdef\"",
        "\"0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij\u{1f}x\"",
        "\"0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij\\q\"",
        "\"0123456789abcdefghij0123456789abcdefghij",
    ] {
        assert!(!ok(text), "{text:?}");
    }
}

#[test]
fn nesting_is_limited_without_recursion() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(ok(&deep(MAX_DEPTH)));
    assert_eq!(scan(&deep(MAX_DEPTH + 1)).map(|_| ()).unwrap_err().what, "nesting too deep");
    assert!(!ok(&"[".repeat(100_000)));
}

/// The kinds of the innermost 64 open containers live in a register, deeper ones in the stack:
/// every level's kind is still known when the scan comes back to it, across those boundaries.
#[test]
fn deep_containers_close_as_what_they_are() {
    // Level k is an object when k is a multiple of 3, else an array; each level continues with
    // one more member after its inner container closes, written as that level's kind requires.
    let nested = |levels: usize, wrong_at: Option<usize>| {
        let object = |k: usize| k % 3 == 0;
        let mut text = String::new();
        for k in 0..levels {
            text.push_str(if object(k) { r#"{"a":"# } else { "[" });
        }
        text.push('1');
        for k in (0..levels).rev() {
            let as_object = object(k) != (wrong_at == Some(k));
            text.push_str(if as_object { r#","b":2}"# } else { ",2]" });
        }
        text
    };
    for levels in [1, 2, 63, 64, 65, 66, 127, 128, 129, 200, MAX_DEPTH] {
        assert!(ok(&nested(levels, None)), "{levels} levels");
        if levels <= 128 {
            let text = nested(levels, None);
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(), "{levels} levels");
        }
        for wrong in [0, levels / 2, levels.saturating_sub(64), levels.saturating_sub(65), levels - 1] {
            assert!(!ok(&nested(levels, Some(wrong))), "{levels} levels, level {wrong} closed as the other kind");
        }
    }
}

#[test]
fn agrees_with_serde_json_on_every_prefix() {
    let text = r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"e\u0301","arguments":{"x":[1.5,-2e3,true,null,"a\"b\\c"]}}}"#;
    for end in 0..=text.len() {
        let Some(prefix) = text.get(..end) else { continue };
        let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(prefix).is_ok();
        assert_eq!(ok(prefix), serde_ok, "{prefix}");
    }
}

/// Strings are searched in 16- and 64-byte blocks and a word at a time near the end: a quote, an
/// escape or a control character is found at every offset into a block, and after every length.
#[test]
fn string_specials_are_found_at_every_offset() {
    for len in 0..200 {
        for at in 0..len {
            for (special, valid) in [("\\n", true), ("\\q", false), ("\u{1}", false), ("\"", false), ("é", true)] {
                let mut content = "x".repeat(len);
                content.replace_range(at..at + 1, special);
                let text = format!("[\"{content}\",1]");
                assert_eq!(ok(&text), valid, "{text:?}");
            }
        }
    }
}

#[test]
fn numbers_of_every_length_end_where_their_digits_do() {
    for len in 1..40 {
        let digits: String = (0..len).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
        for text in
            [format!("[{digits}]"), format!("[-{digits}.5e{digits}]"), format!("[{digits}x]"), format!("[{digits}.]")]
        {
            let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            assert_eq!(ok(&text), serde_ok, "{text}");
        }
    }
}

#[test]
fn invalid_utf8_is_found_at_every_offset_and_outside_strings() {
    for len in 1..200 {
        for at in 0..len {
            let mut text = b"[\"".to_vec();
            text.resize(2 + len, b'x');
            text.extend_from_slice(b"\"]");
            text[2 + at] = 0xff;
            let e = super::scan(&text).map(|_| ()).unwrap_err();
            assert_eq!((e.what, e.at), (INVALID_UTF8, 2 + at), "len {len} at {at}");
            text[2 + at] = 0xc3;
            text.insert(3 + at, 0xa9);
            assert!(super::scan(&text).is_ok(), "é at {at} of {len}");
        }
    }
    assert!(super::scan("[é]".as_bytes()).is_err());
}

#[test]
fn blocks_are_taken_exactly_where_they_fit() {
    use super::strings::block_at;
    let bytes: Vec<u8> = (0..20).collect();
    for i in 0..=4 {
        assert_eq!(block_at::<16>(&bytes, i).map(|b| b[0]), Some(i as u8));
    }
    for i in [5, 19, 20, 21, usize::MAX - 15, usize::MAX] {
        assert_eq!(block_at::<16>(&bytes, i), None, "at {i}");
    }
    assert_eq!(block_at::<16>(&bytes[..15], 0), None);
    assert_eq!(block_at::<16>(&bytes[..15], usize::MAX), None);
    assert_eq!(block_at::<16>(&bytes[..16], 0).map(|b| b[15]), Some(15));
    assert_eq!(block_at::<8>(&[], 0), None);
}

#[test]
fn a_line_is_scanned_to_its_newline_and_never_past_it() {
    let line = |text: &'static str| {
        let mut fields = Fields::default();
        scan_line_into(text.as_bytes(), &mut fields).map(|len| (len, fields))
    };
    let (len, fields) = line("{\"id\":7,\"method\":\"x\"}\n{\"id\":8}\n").expect("an object line");
    assert_eq!(len, 21);
    assert_eq!(fields.id_int, Some(7));
    assert_eq!(fields.get(Field::Method), b("\"x\""));
    assert_eq!(line("{}\n").map(|(len, _)| len), Some(2));
    for not_so in [
        "{\"id\":7}",     // no newline
        "{\"id\":7}\r\n", // the usual path strips the `\r`
        "{\"id\":7} \n",  // and skips trailing spaces
        "{\"id\":7}{}\n", // and reports what trails
        " {\"id\":7}\n",  // leading space
        "[1]\n",          // not an object
        "{\n\"id\":7}\n", // whitespace there, but it ends the line
        "{\"id\":\n7}\n",
        "{\"a\":\"b\n\"}\n", // a string cannot cross it
        "{\"a\":tru\ne}\n",
        "{\"a\":1\n,\"b\":2}\n",
        "{\"a\":\"\\u12\n34\"}\n",
    ] {
        assert_eq!(line(not_so), None, "{not_so:?}");
    }
}

/// The grammar tests for whitespace only where the token it expects is not found, so whitespace
/// is put at every boundary between tokens of a message (top level and nested, before and after
/// keys, colons, commas, values and closing brackets): the fields are those of the compact text,
/// in a line too, where a newline anywhere among the tokens refuses the line instead.
#[test]
fn whitespace_at_every_token_boundary_reads_as_the_compact_text() {
    let tokens = [
        "{",
        "\"jsonrpc\"",
        ":",
        "\"2.0\"",
        ",",
        "\"id\"",
        ":",
        "12",
        ",",
        "\"method\"",
        ":",
        "\"m\"",
        ",",
        "\"params\"",
        ":",
        "{",
        "\"a\"",
        ":",
        "[",
        "1",
        ",",
        "{",
        "}",
        ",",
        "[",
        "]",
        ",",
        "\"s\"",
        ",",
        "true",
        "]",
        ",",
        "\"b\"",
        ":",
        "{",
        "\"c\"",
        ":",
        "null",
        "}",
        "}",
        "}",
    ];
    let compact = tokens.concat();
    let Ok(Top::Object(want)) = scan(&compact) else { panic!("{compact}") };
    assert_eq!((want.id_int, want.get(Field::Params).map(<[u8]>::len)), (Some(12), Some(39)));
    for at in 1..tokens.len() {
        for ws in [" ", "\t", "\r", "\n", " \t "] {
            let text = format!("{}{ws}{}", tokens[..at].concat(), tokens[at..].concat());
            let Ok(Top::Object(got)) = scan(&text) else { panic!("{text:?}") };
            let nested =
                |f: &Fields<'_>| f.get(Field::Params).map(|p| p.iter().filter(|b| !b.is_ascii_whitespace()).count());
            assert_eq!(
                (got.id_int, got.get(Field::Method), nested(&got)),
                (want.id_int, want.get(Field::Method), nested(&want)),
                "{text:?}"
            );
            let line = format!("{text}\n");
            let mut fields = Fields::default();
            let lent = scan_line_into(line.as_bytes(), &mut fields);
            if ws.contains('\n') {
                assert_eq!(lent, None, "{text:?}");
            } else {
                assert_eq!((lent, fields.id_int), (Some(text.len()), Some(12)), "{text:?}");
            }
        }
    }
}
