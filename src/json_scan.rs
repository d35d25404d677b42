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

/// Where and why a text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at column {}", .at + 1)]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
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
    s.ws();
    let top = match s.peek() {
        Some(b'{') => Top::Object(s.object_fields()?),
        Some(b'[') => Top::Array(s.array_elements()?),
        _ => {
            s.value()?;
            Top::Scalar
        }
    };
    s.ws();
    if s.pos < s.bytes.len() {
        return Err(s.err("trailing characters"));
    }
    Ok(top)
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

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// One bit per open container below the current value: 1 for an object, 0 for an array.
    stack: [u64; MAX_DEPTH / 64],
    depth: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner { text, bytes: text.as_bytes(), pos: 0, stack: [0; MAX_DEPTH / 64], depth: 0 }
    }

    fn err(&self, what: &'static str) -> ScanError {
        ScanError { what, at: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), ScanError> {
        self.ws();
        if self.peek() != Some(byte) {
            return Err(self.err(what));
        }
        self.pos += 1;
        Ok(())
    }

    /// The top-level object, recording the interesting fields. Duplicates of those are refused, as
    /// serde_json refuses them for a struct.
    fn object_fields(&mut self) -> Result<Fields<'a>, ScanError> {
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
            let slot = match unescape_key(key).as_deref() {
                Some("jsonrpc") => &mut fields.jsonrpc,
                Some("id") => &mut fields.id,
                Some("method") => &mut fields.method,
                Some("params") => &mut fields.params,
                Some("result") => &mut fields.result,
                Some("error") => &mut fields.error,
                Some(_) => &mut None,
                None => return Err(ScanError { what: "invalid escape in key", at: key_start }),
            };
            if slot.replace(value).is_some() {
                return Err(ScanError { what: "duplicate field", at: key_start });
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(fields);
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }

    fn array_elements(&mut self) -> Result<Vec<&'a str>, ScanError> {
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
                _ => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    fn key(&mut self) -> Result<(), ScanError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string key"));
        }
        self.string()
    }

    /// Skips one complete value, validating it.
    fn value(&mut self) -> Result<(), ScanError> {
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
                _ => return Err(self.err("expected a value")),
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
                    _ if in_object => return Err(self.err("expected `,` or `}`")),
                    _ => return Err(self.err("expected `,` or `]`")),
                }
            }
        }
    }

    fn push(&mut self, object: bool) -> Result<(), ScanError> {
        if self.depth == MAX_DEPTH {
            return Err(self.err("nesting too deep"));
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

    fn top_is_object(&self) -> bool {
        let d = self.depth - 1;
        self.stack[d / 64] & (1 << (d % 64)) != 0
    }

    /// A string, from its opening quote. Eight bytes at a time while none of them can end the
    /// string, start an escape or be a (forbidden) control character.
    fn string(&mut self) -> Result<(), ScanError> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // Non-zero iff some byte of `x` is zero (exact for the lowest such byte).
        let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        self.pos += 1;
        loop {
            while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let v = u64::from_le_bytes(word);
                let special = has_zero(v ^ (ONES * u64::from(b'"')))
                    | has_zero(v ^ (ONES * u64::from(b'\\')))
                    | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
                if special != 0 {
                    self.pos += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                self.pos += 8;
            }
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(0..=0x1f) => return Err(self.err("control character in string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    fn escape(&mut self) -> Result<(), ScanError> {
        self.pos += 1; // '\'
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
            Some(b'u') => {
                self.pos += 1;
                for _ in 0..4 {
                    if !self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                        return Err(self.err("invalid \\u escape"));
                    }
                    self.pos += 1;
                }
            }
            _ => return Err(self.err("invalid escape")),
        }
        Ok(())
    }

    fn digits(&mut self) -> Result<(), ScanError> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.err("invalid number"));
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(self.err("invalid number"));
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

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.bytes.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(self.err("expected a value"));
        }
        self.pos += word.len();
        Ok(())
    }
}

/// A key's value without quotes; `None` if an escape in it does not decode (a lone surrogate).
fn unescape_key(key: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = &key[1..key.len() - 1];
    if !inner.contains('\\') {
        return Some(inner.into());
    }
    serde_json::from_str::<String>(key).ok().map(Into::into)
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
