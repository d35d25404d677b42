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
/// `n` (for `n` up to 0x80), and the lowest flagged byte is exact (a false flag only ever sits above
/// a true one, whose borrow caused it).
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` that end plain string content: a quote, a backslash or a control character,
/// flagged in their high bits.
#[inline(always)]
fn specials(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (quote.wrapping_sub(ONES) & !quote
        | backslash.wrapping_sub(ONES) & !backslash
        | word.wrapping_sub(ONES * 0x20) & !word)
        & HIGH
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

/// One of the [`Fields`].
#[derive(Clone, Copy)]
enum Field {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
}

impl Field {
    fn named(name: &[u8]) -> Option<Field> {
        Some(match name {
            b"jsonrpc" => Field::Jsonrpc,
            b"id" => Field::Id,
            b"method" => Field::Method,
            b"params" => Field::Params,
            b"result" => Field::Result,
            b"error" => Field::Error,
            _ => return None,
        })
    }

    /// The field whose key, written compactly with its colon (`"id":`), starts `text`, and the
    /// length of that: recognised by comparing a word or two, where scanning the key as a string
    /// and looking its name up costs ten times as much. Senders almost always write them so.
    #[inline(always)]
    fn compact_key(text: &[u8]) -> Option<(Field, usize)> {
        const fn word(bytes: &[u8; 8]) -> u64 {
            u64::from_le_bytes(*bytes)
        }
        const ID: u64 = word(b"\"id\":\0\0\0");
        let head = u64::from_le_bytes(*text.first_chunk::<8>()?);
        let colon_at_8 = text.get(8) == Some(&b':');
        Some(match head {
            h if h == word(b"\"jsonrpc") && text.get(8..10) == Some(b"\":") => (Field::Jsonrpc, 10),
            h if h & 0xff_ffff_ffff == ID => (Field::Id, 5),
            h if h == word(b"\"method\"") && colon_at_8 => (Field::Method, 9),
            h if h == word(b"\"params\"") && colon_at_8 => (Field::Params, 9),
            h if h == word(b"\"result\"") && colon_at_8 => (Field::Result, 9),
            h if h == word(b"\"error\":") => (Field::Error, 8),
            _ => return None,
        })
    }
}

impl<'a> Fields<'a> {
    fn get_mut(&mut self, field: Field) -> &mut Option<&'a str> {
        match field {
            Field::Jsonrpc => &mut self.jsonrpc,
            Field::Id => &mut self.id,
            Field::Method => &mut self.method,
            Field::Params => &mut self.params,
            Field::Result => &mut self.result,
            Field::Error => &mut self.error,
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
    if s.token() != b'{' {
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
        let top = match self.token() {
            b'{' => Top::Object(self.object_fields()?),
            b'[' => Top::Array(self.array_elements()?),
            _ => {
                self.value()?;
                Top::Scalar
            }
        };
        self.token();
        if self.pos < self.bytes.len() {
            return Err(self.fail("trailing characters"));
        }
        Ok(top)
    }

    /// The next byte that is not whitespace, without consuming it; 0 at the end of the text (a
    /// NUL byte is never valid there either). Compact JSON has no whitespace, so that is one test.
    #[inline(always)]
    fn token(&mut self) -> u8 {
        match self.bytes.get(self.pos) {
            Some(&b) if b > b' ' => b,
            _ => self.skip_ws(),
        }
    }

    #[inline(never)]
    fn skip_ws(&mut self) -> u8 {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return b;
            }
            self.pos += 1;
        }
        0
    }

    #[inline(always)]
    fn colon(&mut self) -> Step {
        if self.token() != b':' {
            return Err(self.fail("expected `:`"));
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
        if self.token() == b'}' {
            self.pos += 1;
            return Ok(fields);
        }
        loop {
            self.token();
            let key_start = self.pos;
            let field = match Field::compact_key(self.bytes.get(key_start..).unwrap_or_default()) {
                Some((field, len)) => {
                    self.pos += len;
                    Some(field)
                }
                None => self.key_field()?,
            };
            // Most members are a string or a number: those skip the container machinery.
            let first = self.token();
            let start = self.pos;
            match first {
                b'"' => self.string()?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => self.value()?,
            }
            if let Some(field) = field {
                let slot = fields.get_mut(field);
                if slot.is_some() {
                    return Err(self.fail_at("duplicate field", key_start));
                }
                *slot = self.text.get(start..self.pos);
            }
            match self.token() {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Ok(fields);
                }
                _ => return Err(self.fail("expected `,` or `}`")),
            }
        }
    }

    /// A top-level key and its colon, in general: which field it names, if any.
    fn key_field(&mut self) -> Result<Option<Field>, Failed> {
        let key_start = self.pos;
        self.key()?;
        let key = &self.bytes[key_start..self.pos];
        self.colon()?;
        if !self.escaped {
            return Ok(Field::named(&key[1..key.len() - 1]));
        }
        match serde_json::from_slice::<String>(key) {
            Ok(name) => Ok(Field::named(name.as_bytes())),
            Err(_) => Err(self.fail_at("invalid escape in key", key_start)),
        }
    }

    fn array_elements(&mut self) -> Result<Vec<&'a str>, Failed> {
        let mut items = Vec::new();
        self.pos += 1; // '['
        self.push(false)?;
        if self.token() == b']' {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.token();
            let start = self.pos;
            self.value()?;
            items.push(&self.text[start..self.pos]);
            match self.token() {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.fail("expected `,` or `]`")),
            }
        }
    }

    /// A key; afterwards `escaped` says whether it had escapes (and so needs decoding).
    #[inline(always)]
    fn key(&mut self) -> Step {
        if self.token() != b'"' {
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
            match self.token() {
                b'"' => self.string()?,
                b'{' => {
                    self.pos += 1;
                    self.push(true)?;
                    if self.token() != b'}' {
                        self.key()?;
                        self.colon()?;
                        continue;
                    }
                    self.pos += 1;
                    self.depth -= 1;
                }
                b'[' => {
                    self.pos += 1;
                    self.push(false)?;
                    if self.token() != b']' {
                        continue;
                    }
                    self.pos += 1;
                    self.depth -= 1;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(self.fail("expected a value")),
            }
            // Here a value ended: close containers until one continues with another member.
            loop {
                if self.depth == base {
                    return Ok(());
                }
                let in_object = self.top_is_object();
                match self.token() {
                    b',' => {
                        self.pos += 1;
                        if in_object {
                            self.key()?;
                            self.colon()?;
                        }
                        break;
                    }
                    b'}' if in_object => {
                        self.pos += 1;
                        self.depth -= 1;
                    }
                    b']' if !in_object => {
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

    /// A string, from its opening quote.
    #[inline(always)]
    fn string(&mut self) -> Step {
        let mut i = self.pos + 1;
        loop {
            let (at, byte) = next_special(self.bytes, i);
            match byte {
                b'"' => {
                    self.pos = at + 1;
                    return Ok(());
                }
                b'\\' => i = self.escape(at)?,
                _ if at < self.bytes.len() => return Err(self.fail_at("control character in string", at)),
                _ => return Err(self.fail_at("unterminated string", at)),
            }
        }
    }

    /// The escape at `i` (a backslash); where the string goes on after it.
    #[inline(never)]
    fn escape(&mut self, i: usize) -> Result<usize, Failed> {
        self.escaped = true;
        match self.bytes.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
            Some(b'u') => match self.bytes.get(i + 2..i + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(i + 6),
                _ => Err(self.fail_at("invalid \\u escape", i + 2)),
            },
            _ => Err(self.fail_at("invalid escape", i + 1)),
        }
    }

    fn number(&mut self) -> Step {
        let bytes = self.bytes;
        let mut i = self.pos + usize::from(bytes.get(self.pos) == Some(&b'-'));
        match bytes.get(i) {
            Some(b'0') => {
                i += 1;
                if bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    return Err(self.fail_at("invalid number", i));
                }
            }
            Some(b'1'..=b'9') => i = digits_end(bytes, i + 1),
            _ => return Err(self.fail_at("invalid number", i)),
        }
        if let Some(b'.') = bytes.get(i) {
            i = self.digits(i + 1)?;
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            i = self.digits(i)?;
        }
        self.pos = i;
        Ok(())
    }

    /// One or more digits from `i`; where they end.
    fn digits(&mut self, i: usize) -> Result<usize, Failed> {
        match digits_end(self.bytes, i) {
            end if end > i => Ok(end),
            _ => Err(self.fail_at("invalid number", i)),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Step {
        if self.bytes.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(self.fail("expected a value"));
        }
        self.pos += word.len();
        Ok(())
    }
}

#[inline(always)]
fn digits_end(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The index of the first quote, backslash or control character at or after `i`, and that byte
/// (0 at the end of `bytes`). Most strings (keys, methods, ids) are short: a word at a time finds
/// their end; past [`SHORT`] bytes memchr jumps to the next quote or backslash instead.
#[inline(always)]
fn next_special(bytes: &[u8], mut i: usize) -> (usize, u8) {
    let start = i;
    while let Some(&word) = bytes.get(i..i + 8).and_then(|w| <&[u8; 8]>::try_from(w).ok()) {
        let word = u64::from_le_bytes(word);
        let found = specials(word);
        if found != 0 {
            let bit = found.trailing_zeros();
            return (i + (bit / 8) as usize, (word >> (bit & !7)) as u8);
        }
        i += 8;
        if i - start >= SHORT {
            return long_special(bytes, i);
        }
    }
    let tail = bytes.get(i..).unwrap_or_default();
    match tail.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        Some(k) => (i + k, tail[k]),
        None => (bytes.len(), 0),
    }
}

/// [`next_special`] in a long string: memchr to the next quote or backslash, then the bytes jumped
/// over checked for control characters in blocks.
#[inline(never)]
fn long_special(bytes: &[u8], i: usize) -> (usize, u8) {
    let rest = bytes.get(i..).unwrap_or_default();
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let end = first_control(&rest[..end]).unwrap_or(end);
    (i + end, rest.get(end).copied().unwrap_or(0))
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
mod tests;
