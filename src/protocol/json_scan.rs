//! A validating JSON scanner that finds an object's top-level fields without building anything.
//!
//! Routing a JSON-RPC message needs its `jsonrpc`, `id` and `method` and the extent of `params`,
//! `result` and `error`, and forwarding it needs to know the whole line is valid JSON. serde_json
//! can do both (borrowed `RawValue` fields), but through its generic visitor machinery that costs
//! thousands of instructions for a 100-byte message, which made envelope parsing most of the relay's
//! CPU time. This scanner does the same work in one tight pass over the bytes.
//!
//! It accepts exactly RFC 8259 JSON, as serde_json does: the same number grammar, string escapes,
//! no control characters in strings, nothing but whitespace after the value. Nesting is limited to
//! [`MAX_DEPTH`] levels (an iterative scan with a bit stack: no recursion, no allocation). The input
//! is `&str`, so UTF-8 has already been checked. Property tests compare it with serde_json.

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 1024;

/// Strings are scanned word by word up to this many bytes; the rest of a longer one with memchr.
const SHORT: usize = 32;

/// Where and why a text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at column {}", .at + 1)]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
}

/// Word-at-a-time (SWAR) masks: `x - ONES*n & !x & HIGH` is non-zero iff some byte of `x` is below
/// `n` (for `n` up to 0x80), and the lowest flagged byte is exact.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// How many of the first [`SHORT`] bytes of `bytes` are plain string content: no quote, backslash
/// or control character. Eight bytes at a time (SWAR), which beats both a byte loop and a memchr
/// call on the short strings that make up most of a message.
fn plain_prefix(bytes: &[u8]) -> usize {
    // Non-zero iff some byte of `x` is zero; the lowest flagged byte is exact.
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8).filter(|_| i < SHORT) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let special = has_zero(v ^ (ONES * u64::from(b'"')))
            | has_zero(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
        if special != 0 {
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    if i >= SHORT {
        return i;
    }
    i + bytes[i..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(bytes.len() - i)
}

/// The raw text of the top-level fields routing cares about (each a complete JSON value).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    pub jsonrpc: Option<&'a str>,
    pub id: Option<&'a str>,
    pub method: Option<&'a str>,
    pub params: Option<&'a str>,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// Where the value of the key `name` goes, if it is one of the fields.
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'a str>> {
        match name {
            "jsonrpc" => Some(&mut self.jsonrpc),
            "id" => Some(&mut self.id),
            "method" => Some(&mut self.method),
            "params" => Some(&mut self.params),
            "result" => Some(&mut self.result),
            "error" => Some(&mut self.error),
            _ => None,
        }
    }
}

/// What a valid JSON text is at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Top<'a> {
    Object(Fields<'a>),
    /// The raw text of each element.
    Array(Vec<&'a str>),
    /// A string, number or literal.
    Scalar,
}

/// Validates `text` as one JSON value and reports what it is.
pub fn scan(text: &str) -> Result<Top<'_>, ScanError> {
    let mut s = Scanner::new(text);
    s.top().map_err(|Failed| s.error.unwrap_or(ScanError { what: "invalid JSON", at: s.pos }))
}

/// The fields of `text` if it is an object (`text` must already be known to be valid JSON, as an
/// element of a scanned array is).
pub fn object_fields(text: &str) -> Option<Fields<'_>> {
    let mut s = Scanner::new(text);
    s.ws();
    if s.peek() != Some(b'{') {
        return None;
    }
    s.object_fields().ok()
}

/// Internal steps fail with this marker (one bit in a register, unlike a full error); the details
/// are kept in [`Scanner::error`].
struct Failed;

type Step = Result<(), Failed>;

struct Scanner<'a> {
    error: Option<ScanError>,
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// One bit per open container below the current value: 1 for an object, 0 for an array.
    stack: [u64; MAX_DEPTH / 64],
    depth: usize,
    /// Set when a string has an escape; reset before each key.
    escaped: bool,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            error: None,
            text,
            bytes: text.as_bytes(),
            pos: 0,
            stack: [0; MAX_DEPTH / 64],
            depth: 0,
            escaped: false,
        }
    }

    #[cold]
    fn fail(&mut self, what: &'static str) -> Failed {
        self.fail_at(what, self.pos)
    }

    #[cold]
    fn fail_at(&mut self, what: &'static str, at: usize) -> Failed {
        self.error = Some(ScanError { what, at });
        Failed
    }

    fn top(&mut self) -> Result<Top<'a>, Failed> {
        self.ws();
        let top = match self.peek() {
            Some(b'{') => Top::Object(self.object_fields()?),
            Some(b'[') => Top::Array(self.array_elements()?),
            _ => {
                self.value()?;
                Top::Scalar
            }
        };
        self.ws();
        if self.pos < self.bytes.len() {
            return Err(self.fail("trailing characters"));
        }
        Ok(top)
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline]
    fn expect(&mut self, byte: u8, what: &'static str) -> Step {
        self.ws();
        if self.peek() != Some(byte) {
            return Err(self.fail(what));
        }
        self.pos += 1;
        Ok(())
    }

    /// The top-level object, recording the interesting fields. Duplicates of those are refused, as
    /// serde_json refuses them for a struct.
    fn object_fields(&mut self) -> Result<Fields<'a>, Failed> {
        let mut fields = Fields::default();
        self.pos += 1; // '{'
        self.push(true)?; // counts towards the depth limit; values below start from here
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(fields);
        }
        loop {
            self.ws();
            let key_start = self.pos;
            self.key()?;
            let key = &self.text[key_start..self.pos];
            self.expect(b':', "expected `:`")?;
            self.ws();
            let start = self.pos;
            self.value()?;
            let value = &self.text[start..self.pos];
            let name = &key[1..key.len() - 1];
            let slot = if self.escaped {
                match serde_json::from_str::<String>(key) {
                    Ok(name) => fields.slot(&name),
                    Err(_) => return Err(self.fail_at("invalid escape in key", key_start)),
                }
            } else {
                fields.slot(name)
            };
            if slot.is_some_and(|slot| slot.replace(value).is_some()) {
                return Err(self.fail_at("duplicate field", key_start));
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(fields);
                }
                _ => return Err(self.fail("expected `,` or `}`")),
            }
        }
    }

    fn array_elements(&mut self) -> Result<Vec<&'a str>, Failed> {
        let mut items = Vec::new();
        self.pos += 1; // '['
        self.push(false)?;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.ws();
            let start = self.pos;
            self.value()?;
            items.push(&self.text[start..self.pos]);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.fail("expected `,` or `]`")),
            }
        }
    }

    #[inline]
    /// A key; afterwards `escaped` says whether it had escapes (and so needs decoding).
    fn key(&mut self) -> Step {
        if self.peek() != Some(b'"') {
            return Err(self.fail("expected a string key"));
        }
        self.escaped = false;
        self.string()
    }

    /// Skips one complete value, validating it.
    fn value(&mut self) -> Step {
        let base = self.depth;
        loop {
            // Here a value starts.
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.push(true)?;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        self.depth -= 1;
                    } else {
                        self.key()?;
                        self.expect(b':', "expected `:`")?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.push(false)?;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        self.depth -= 1;
                    } else {
                        continue;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.fail("expected a value")),
            }
            // Here a value ended: close containers until one continues with another member.
            loop {
                if self.depth == base {
                    return Ok(());
                }
                self.ws();
                let in_object = self.top_is_object();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.ws();
                            self.key()?;
                            self.expect(b':', "expected `:`")?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        self.depth -= 1;
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        self.depth -= 1;
                    }
                    _ if in_object => return Err(self.fail("expected `,` or `}`")),
                    _ => return Err(self.fail("expected `,` or `]`")),
                }
            }
        }
    }

    #[inline]
    fn push(&mut self, object: bool) -> Step {
        if self.depth == MAX_DEPTH {
            return Err(self.fail("nesting too deep"));
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if object {
            self.stack[word] |= 1 << bit;
        } else {
            self.stack[word] &= !(1 << bit);
        }
        self.depth += 1;
        Ok(())
    }

    #[inline]
    fn top_is_object(&self) -> bool {
        let d = self.depth - 1;
        self.stack[d / 64] & (1 << (d % 64)) != 0
    }

    /// A string, from its opening quote. Most strings (keys, methods, ids) are short and a byte
    /// loop finds their end fastest; past [`SHORT`] bytes memchr jumps to the next quote or
    /// backslash, and the bytes jumped over are checked for control characters in vector blocks.
    #[inline]
    fn string(&mut self) -> Step {
        self.pos += 1;
        loop {
            let rest = &self.bytes[self.pos..];
            let end = match plain_prefix(rest) {
                i if i < SHORT || i == rest.len() => i,
                _ => {
                    let long = SHORT + memchr::memchr2(b'"', b'\\', &rest[SHORT..]).unwrap_or(rest.len() - SHORT);
                    if let Some(i) = first_control(&rest[SHORT..long]) {
                        self.pos += SHORT + i;
                        return Err(self.fail("control character in string"));
                    }
                    long
                }
            };
            self.pos += end;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.fail("control character in string")),
                None => return Err(self.fail("unterminated string")),
            }
        }
    }

    #[inline]
    fn escape(&mut self) -> Step {
        self.escaped = true;
        self.pos += 1; // '\'
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
            Some(b'u') => {
                self.pos += 1;
                for _ in 0..4 {
                    if !self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                        return Err(self.fail("invalid \\u escape"));
                    }
                    self.pos += 1;
                }
            }
            _ => return Err(self.fail("invalid escape")),
        }
        Ok(())
    }

    fn digits(&mut self) -> Step {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.fail("invalid number"));
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Step {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(self.fail("invalid number"));
                }
            }
            _ => self.digits()?,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Step {
        if self.bytes.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(self.fail("expected a value"));
        }
        self.pos += word.len();
        Ok(())
    }
}

/// The index of the first byte below 0x20: 32 bytes per step as four words tested together, so the
/// long strings of large messages cost well under one instruction per byte.
fn first_control(bytes: &[u8]) -> Option<usize> {
    let mut clean = 0;
    for block in bytes.chunks_exact(32) {
        let mut found = 0;
        for word in block.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let v = u64::from_le_bytes(w);
            found |= v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        }
        if found != 0 {
            break;
        }
        clean += 32;
    }
    bytes[clean..].iter().position(|&b| b < 0x20).map(|i| clean + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> bool {
        scan(text).is_ok()
    }

    #[test]
    fn finds_top_level_fields_and_ignores_nested_ones() {
        let text = r#" {"jsonrpc":"2.0","params":{"id":9,"method":"no"},"id":"a\"b","method":"x/y","other":[1,{"result":2}]} "#;
        let Ok(Top::Object(f)) = scan(text) else { panic!("not an object") };
        assert_eq!(f.jsonrpc, Some(r#""2.0""#));
        assert_eq!(f.id, Some(r#""a\"b""#));
        assert_eq!(f.method, Some(r#""x/y""#));
        assert_eq!(f.params, Some(r#"{"id":9,"method":"no"}"#));
        assert_eq!(f.result, None);
    }

    #[test]
    fn escaped_keys_are_decoded_and_duplicates_refused() {
        let Ok(Top::Object(f)) = scan(r#"{"\u0069d":1}"#) else { panic!() };
        assert_eq!(f.id, Some("1"));
        assert!(scan(r#"{"id":1,"id":2}"#).is_err());
        assert!(scan(r#"{"x":1,"x":2}"#).is_ok());
        assert!(scan(r#"{"\ud800":1}"#).is_err());
    }

    #[test]
    fn arrays_list_their_elements() {
        assert_eq!(scan(r#"[1, {"a":[]} ,"x"]"#), Ok(Top::Array(vec!["1", r#"{"a":[]}"#, r#""x""#])));
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

    #[test]
    fn agrees_with_serde_json_on_every_prefix() {
        let text = r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"e\u0301","arguments":{"x":[1.5,-2e3,true,null,"a\"b\\c"]}}}"#;
        for end in 0..=text.len() {
            let Some(prefix) = text.get(..end) else { continue };
            let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(prefix).is_ok();
            assert_eq!(ok(prefix), serde_ok, "{prefix}");
        }
    }
}
