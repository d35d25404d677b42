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
//! [`MAX_DEPTH`] levels (an iterative scan with a bit stack: no recursion, no allocation below 64 levels). It also
//! checks UTF-8, where it can occur: outside strings JSON is ASCII, and a string with a non-ASCII
//! byte is checked from there to its end, so a text that scans is valid UTF-8 and most (all-ASCII)
//! messages are not read a second time for it. Property tests compare it with serde_json.
//!
//! This file is the top level (the envelope's fields, a batch's elements); `values.rs` the grammar
//! below it, on plain positions; `strings.rs` finding where a string ends, a word at a time. The
//! grammar has one switch, `LINE`: scanning a line where it starts in a read buffer
//! ([`scan_line_into`]), a newline ends the text rather than being whitespace.

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 1024;

/// The [`ScanError`] of a string that is not valid UTF-8.
pub const INVALID_UTF8: &str = "invalid UTF-8 in string";

/// Strings are scanned 16 bytes (or a word) at a time up to this many bytes, the rest of a longer
/// one with memchr. Stateless-era `_meta` keys are 34 to 42 bytes: past 32, memchr's set-up cost
/// 300 instructions a message.
const SHORT: usize = 64;

mod strings;
mod values;

use values::{Scan, Stack};

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
    /// One per [`Field`], in its order: the scan writes a field's slot at an offset, where named
    /// members needed a match on the field and the address of each kept at hand.
    slots: [Option<&'a [u8]>; 6],
    /// The id's value when it is a positive integer of at most 18 digits (nearly every id), read
    /// as its digits are scanned rather than again afterwards.
    pub id_int: Option<i64>,
}

impl<'a> Fields<'a> {
    /// The raw text of `field`, if the object has it.
    pub fn get(&self, field: Field) -> Option<&'a [u8]> {
        self.slots[field as usize]
    }
}

/// One of the [`Fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
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
        // In the order keys usually come, `jsonrpc` last: it is usually read with the message's
        // first bytes (see `top_object`).
        Some(match head {
            h if h & 0xff_ffff_ffff == ID => (Field::Id, 5),
            h if h == word(b"\"method\"") && colon_at_8 => (Field::Method, 9),
            h if h == word(b"\"params\"") && colon_at_8 => (Field::Params, 9),
            h if h == word(b"\"result\"") && colon_at_8 => (Field::Result, 9),
            h if h == word(b"\"error\":") => (Field::Error, 8),
            h if h == word(b"\"jsonrpc") && text.get(8..10) == Some(b"\":") => (Field::Jsonrpc, 10),
            _ => return None,
        })
    }
}

/// What a valid JSON text is at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Top<'a> {
    Object(Fields<'a>),
    /// The raw text of each element.
    Array(Vec<&'a [u8]>),
    /// A string, number or literal.
    Scalar,
}

/// [`Top`] without the object's fields, which [`scan_into`] writes where the caller keeps them
/// (the fields are most of a message's envelope: returning them would copy them twice more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape<'a> {
    Object,
    Array(Vec<&'a [u8]>),
    Scalar,
}

/// Validates `text` as one JSON value (in UTF-8) and reports what it is.
pub fn scan(text: &[u8]) -> Result<Top<'_>, ScanError> {
    let mut fields = Fields::default();
    Ok(match scan_into(text, &mut fields)? {
        Shape::Object => Top::Object(fields),
        Shape::Array(items) => Top::Array(items),
        Shape::Scalar => Top::Scalar,
    })
}

/// [`scan`], with an object's fields written to `fields` (which must start empty).
pub fn scan_into<'a>(text: &'a [u8], fields: &mut Fields<'a>) -> Result<Shape<'a>, ScanError> {
    top(text, fields).map_err(|(what, at)| ScanError { what, at })
}

/// The length of the first line of `text` (the rest of a read buffer) if that line is exactly a
/// JSON object followed by its newline, with the object's fields written to `fields` (which must
/// start empty); `None` for anything else (an array, a scalar, whitespace or `\r` before the
/// newline, a line that is not valid JSON), when the caller finds the line's end and scans it as
/// usual, so that what is reported about a line never depends on this path. A newline is not
/// whitespace here but the end of the text: a string cannot hold one and the grammar finds it
/// unexpected anywhere else, so the scan never reads more than a block past the line. Finding the
/// line's end this way saves searching for it before scanning it.
#[inline(always)]
pub fn scan_line_into<'a>(text: &'a [u8], fields: &mut Fields<'a>) -> Option<usize> {
    if text.first() != Some(&b'{') {
        return None;
    }
    let mut stack = Stack::default();
    let end = top_object::<true>(text, 0, &mut stack, fields).ok()?;
    (text.get(end) == Some(&b'\n')).then_some(end)
}

/// The fields of `text` if it is an object (`text` must already be known to be valid JSON, as an
/// element of a scanned array is).
pub fn object_fields(text: &[u8]) -> Option<Fields<'_>> {
    let (pos, first) = values::skip_ws::<false>(text, 0);
    if first != b'{' {
        return None;
    }
    let mut stack = Stack::default();
    let mut fields = Fields::default();
    top_object::<false>(text, pos, &mut stack, &mut fields).ok().map(|_| fields)
}

fn top<'a>(bytes: &'a [u8], fields: &mut Fields<'a>) -> Scan<Shape<'a>> {
    let mut stack = Stack::default();
    let (pos, first) = values::skip_ws::<false>(bytes, 0);
    let (shape, end) = match first {
        b'{' => (Shape::Object, top_object::<false>(bytes, pos, &mut stack, fields)?),
        b'[' => {
            let (items, end) = top_array(bytes, pos, &mut stack)?;
            (Shape::Array(items), end)
        }
        _ => (Shape::Scalar, values::value_end::<false>(bytes, pos, &mut stack, 0)?),
    };
    // A line usually ends with its value.
    if end == bytes.len() {
        return Ok(shape);
    }
    match values::skip_ws::<false>(bytes, end) {
        (at, _) if at < bytes.len() => Err(("trailing characters", at)),
        _ => Ok(shape),
    }
}

/// The top-level object from its `{` at `pos`, recording the interesting fields, and where it
/// ends. Duplicates of those are refused, as serde_json refuses them for a struct.
fn top_object<'a, const LINE: bool>(bytes: &'a [u8], pos: usize, stack: &mut Stack, fields: &mut Fields<'a>) -> Scan {
    let mut pos = pos + 1;
    // Nearly every message starts so: its first member is read in one comparison.
    const JSONRPC: &[u8; 16] = b"\"jsonrpc\":\"2.0\",";
    if strings::block_at::<16>(bytes, pos) == Some(JSONRPC) {
        fields.slots[Field::Jsonrpc as usize] = bytes.get(pos + 10..pos + 15);
        pos += 16;
    } else {
        match values::skip_ws::<LINE>(bytes, pos) {
            (at, b'}') => return Ok(at + 1),
            (at, _) => pos = at,
        }
    }
    loop {
        let key_start = pos;
        let field = match Field::compact_key(bytes.get(pos..).unwrap_or_default()) {
            Some((field, len)) => {
                pos += len;
                Some(field)
            }
            None => {
                let (after, field) = key_field::<LINE>(bytes, pos)?;
                pos = after;
                field
            }
        };
        // Most members are a string or a number: those skip the container machinery.
        let mut start = pos;
        pos = loop {
            match values::byte_at(bytes, start) {
                b'"' => break values::string_end(bytes, start)?,
                b'1'..=b'9' if matches!(field, Some(Field::Id)) => {
                    let (end, value) = values::integer_end(bytes, start)?;
                    fields.id_int = value;
                    break end;
                }
                b'-' | b'0'..=b'9' => break values::number_end(bytes, start)?,
                b if values::is_ws::<LINE>(b) => start = values::skip_ws_slow::<LINE>(bytes, start).0,
                _ => break values::value_end::<LINE>(bytes, start, stack, 1)?,
            }
        };
        if let Some(field) = field {
            let slot = &mut fields.slots[field as usize];
            if slot.is_some() {
                return Err(("duplicate field", key_start));
            }
            *slot = bytes.get(start..pos);
        }
        loop {
            match values::byte_at(bytes, pos) {
                b',' => break pos += 1,
                b'}' => return Ok(pos + 1),
                b if values::is_ws::<LINE>(b) => pos = values::skip_ws_slow::<LINE>(bytes, pos).0,
                _ => return Err(("expected `,` or `}`", pos)),
            }
        }
    }
}

/// A top-level key at `pos` (whitespace first is allowed) and its colon, in general: where the
/// value starts and which field the key names, if any.
fn key_field<const LINE: bool>(bytes: &[u8], pos: usize) -> Scan<(usize, Option<Field>)> {
    let pos = match values::skip_ws::<LINE>(bytes, pos) {
        (at, b'"') => at,
        (at, _) => return Err(("expected a string key", at)),
    };
    // After whitespace (`{"jsonrpc": "2.0", "id": 1}`), most keys are still the usual ones.
    if let Some((field, len)) = Field::compact_key(bytes.get(pos..).unwrap_or_default()) {
        return Ok((pos + len, Some(field)));
    }
    let key_end = values::string_end(bytes, pos)?;
    let after = values::colon::<LINE>(bytes, key_end)?;
    let key = &bytes[pos..key_end];
    if !key.contains(&b'\\') {
        return Ok((after, Field::named(&key[1..key.len() - 1])));
    }
    match serde_json::from_slice::<String>(key) {
        Ok(name) => Ok((after, Field::named(name.as_bytes()))),
        Err(_) => Err(("invalid escape in key", pos)),
    }
}

/// The top-level array from its `[` at `pos`: the raw text of each element, and where it ends.
fn top_array<'a>(bytes: &'a [u8], pos: usize, stack: &mut Stack) -> Scan<(Vec<&'a [u8]>, usize)> {
    let mut items = Vec::new();
    let (mut pos, next) = values::skip_ws::<false>(bytes, pos + 1);
    if next == b']' {
        return Ok((items, pos + 1));
    }
    loop {
        let start;
        (start, _) = values::skip_ws::<false>(bytes, pos);
        pos = values::value_end::<false>(bytes, start, stack, 1)?;
        items.extend(bytes.get(start..pos));
        let next;
        (pos, next) = values::skip_ws::<false>(bytes, pos);
        match next {
            b',' => pos += 1,
            b']' => return Ok((items, pos + 1)),
            _ => return Err(("expected `,` or `]`", pos)),
        }
    }
}

#[cfg(test)]
mod tests;
