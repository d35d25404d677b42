//! The JSON grammar below the top level, on positions: each step takes where it starts and
//! returns where it ends, or why and where the text is not JSON. Positions live in locals rather
//! than in a scanner struct, so the hot loop keeps them in registers.

use super::strings::{block_at, next_special};
use super::{INVALID_UTF8, MAX_DEPTH};

/// Why and where a text is not JSON.
pub(super) type Fail = (&'static str, usize);

/// The outcome of a step: by default, the position after what it read.
pub(super) type Scan<T = usize> = Result<T, Fail>;

/// The kinds of the containers open deeper than the 64 a scan keeps in a register (see
/// [`value_end`]): one bit each, 1 for an object. Allocated on the first such level, so that
/// ordinary messages neither allocate nor clear it.
#[derive(Default)]
pub(super) struct Stack(Vec<u64>);

impl Stack {
    /// Keeps the kind of the container `level` levels below the register's deepest.
    #[cold]
    fn save(&mut self, level: usize, object: bool) {
        let (word, bit) = (level / 64, level % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        if let Some(w) = self.0.get_mut(word) {
            *w = *w & !(1 << bit) | (u64::from(object) << bit);
        }
    }

    #[cold]
    fn restore(&self, level: usize) -> u64 {
        self.0.get(level / 64).map_or(0, |w| w >> (level % 64) & 1)
    }
}

/// The byte at `pos` (0 at the end of the text: a NUL byte is never valid there either).
///
/// The grammar reads the byte where the next token should be and matches it at once; only where
/// none of the tokens it expects is found does it test for whitespace, skip it and look again.
/// Compact JSON, which nearly every sender writes, so has no whitespace test at all.
#[inline(always)]
pub(super) fn byte_at(bytes: &[u8], pos: usize) -> u8 {
    bytes.get(pos).copied().unwrap_or(0)
}

/// Whether `b` is JSON whitespace. With `LINE` a newline is not whitespace but where the text
/// ends (see [`super::scan_line_into`]): whatever reads it as the next byte finds it unexpected.
#[inline(always)]
pub(super) fn is_ws<const LINE: bool>(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r') || (!LINE && b == b'\n')
}

/// The first byte at or after `pos` that is not whitespace, and where it is (0 at the end of the
/// text). Compact JSON has none, so that is one test.
#[inline(always)]
pub(super) fn skip_ws<const LINE: bool>(bytes: &[u8], pos: usize) -> (usize, u8) {
    match bytes.get(pos) {
        Some(&b) if b > b' ' => (pos, b),
        _ => skip_ws_slow::<LINE>(bytes, pos),
    }
}

/// [`skip_ws`] where the byte at `pos` is already known to be whitespace or the end.
#[inline(never)]
pub(super) fn skip_ws_slow<const LINE: bool>(bytes: &[u8], mut pos: usize) -> (usize, u8) {
    while let Some(&b) = bytes.get(pos) {
        if !is_ws::<LINE>(b) {
            return (pos, b);
        }
        pos += 1;
    }
    (pos, 0)
}

/// One complete value, from `pos` (whitespace first is allowed), with `base` containers already
/// open around it. Containers nest iteratively: the kinds of those open inside the value are bits
/// of a register, innermost lowest (1 for an object), the ones past 64 levels kept in `stack`.
pub(super) fn value_end<const LINE: bool>(bytes: &[u8], mut pos: usize, stack: &mut Stack, base: usize) -> Scan {
    let mut depth = base;
    let mut open: u64 = 0;
    loop {
        // Here a value starts.
        let first = byte_at(bytes, pos);
        match first {
            b'"' => pos = string_end(bytes, pos)?,
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return Err(("nesting too deep", pos));
                }
                let (at, next) = skip_ws::<LINE>(bytes, pos + 1);
                // `}` and `]` come two after `{` and `[`: anything else starts the first member.
                if next == first + 2 {
                    pos = at + 1;
                } else {
                    let object = first == b'{';
                    if depth - base >= 64 {
                        stack.save(depth - base - 64, open >> 63 == 1);
                    }
                    open = open << 1 | u64::from(object);
                    depth += 1;
                    pos = if object { key_colon::<LINE>(bytes, at)? } else { at };
                    continue;
                }
            }
            b'-' | b'0'..=b'9' => pos = number_end(bytes, pos)?,
            b't' => pos = literal_end(bytes, pos, b"true")?,
            b'f' => pos = literal_end(bytes, pos, b"false")?,
            b'n' => pos = literal_end(bytes, pos, b"null")?,
            b if is_ws::<LINE>(b) => {
                pos = skip_ws_slow::<LINE>(bytes, pos).0;
                continue;
            }
            _ => return Err(("expected a value", pos)),
        }
        // Here a value ended: close containers until one continues with another member.
        loop {
            if depth == base {
                return Ok(pos);
            }
            let in_object = open & 1 == 1;
            match byte_at(bytes, pos) {
                b',' => {
                    pos = if in_object { key_colon::<LINE>(bytes, pos + 1)? } else { pos + 1 };
                    break;
                }
                b'}' if in_object => {}
                b']' if !in_object => {}
                b if is_ws::<LINE>(b) => {
                    pos = skip_ws_slow::<LINE>(bytes, pos).0;
                    continue;
                }
                _ if in_object => return Err(("expected `,` or `}`", pos)),
                _ => return Err(("expected `,` or `]`", pos)),
            }
            pos += 1;
            depth -= 1;
            open >>= 1;
            if depth - base >= 64 {
                open |= stack.restore(depth - base - 64) << 63;
            }
        }
    }
}

/// A key at `pos` (whitespace first is allowed) and the colon after it: where its value starts.
#[inline(always)]
pub(super) fn key_colon<const LINE: bool>(bytes: &[u8], pos: usize) -> Scan {
    let pos = match byte_at(bytes, pos) {
        b'"' => pos,
        _ => match skip_ws::<LINE>(bytes, pos) {
            (at, b'"') => at,
            (at, _) => return Err(("expected a string key", at)),
        },
    };
    colon::<LINE>(bytes, string_end(bytes, pos)?)
}

/// The colon at `pos` (whitespace first is allowed): where the value after it starts.
#[inline(always)]
pub(super) fn colon<const LINE: bool>(bytes: &[u8], pos: usize) -> Scan {
    if byte_at(bytes, pos) == b':' {
        return Ok(pos + 1);
    }
    match skip_ws::<LINE>(bytes, pos) {
        (at, b':') => Ok(at + 1),
        (at, _) => Err(("expected `:`", at)),
    }
}

/// A string, from its opening quote at `pos`. Most strings are ASCII without escapes, their end
/// the first special byte; any other is read on by [`string_rest`].
#[inline(always)]
pub(super) fn string_end(bytes: &[u8], pos: usize) -> Scan {
    match next_special::<true>(bytes, pos + 1) {
        (at, b'"') => Ok(at + 1),
        (at, _) => string_rest(bytes, at),
    }
}

/// The rest of a string from the special byte at `at` that is not its closing quote: an
/// escape, a non-ASCII byte, a control character or the end of the text. (Out of line, so that
/// the usual string is one vector search and one test.)
#[cold]
#[inline(never)]
fn string_rest(bytes: &[u8], mut at: usize) -> Scan {
    loop {
        match byte_at(bytes, at) {
            b'\\' => at = next_special::<true>(bytes, escape_end(bytes, at)?).0,
            b'"' => return Ok(at + 1),
            0x80.. => return utf8_string_end(bytes, at),
            _ if at < bytes.len() => return Err(("control character in string", at)),
            _ => return Err(("unterminated string", at)),
        }
    }
}

/// The rest of a string from its first non-ASCII byte at `from`: its end found without stopping
/// at non-ASCII bytes, then the bytes from `from` to the closing quote checked as UTF-8 at once
/// (a quote or a backslash is never part of a multi-byte sequence).
#[inline(never)]
fn utf8_string_end(bytes: &[u8], from: usize) -> Scan {
    let mut i = from;
    let close = loop {
        let (at, byte) = next_special::<false>(bytes, i);
        match byte {
            b'"' => break at,
            b'\\' => i = escape_end(bytes, at)?,
            _ if at < bytes.len() => return Err(("control character in string", at)),
            _ => return Err(("unterminated string", at)),
        }
    };
    match std::str::from_utf8(&bytes[from..close]) {
        Ok(_) => Ok(close + 1),
        Err(e) => Err((INVALID_UTF8, from + e.valid_up_to())),
    }
}

/// The escape whose backslash is at `i`.
#[inline(never)]
fn escape_end(bytes: &[u8], i: usize) -> Scan {
    match bytes.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => match bytes.get(i + 2..i + 6) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(i + 6),
            _ => Err(("invalid \\u escape", i + 2)),
        },
        _ => Err(("invalid escape", i + 1)),
    }
}

/// A number, RFC 8259's grammar exactly (no leading zeros, digits on both sides of the point).
pub(super) fn number_end(bytes: &[u8], pos: usize) -> Scan {
    let mut i = pos + usize::from(bytes.get(pos) == Some(&b'-'));
    match bytes.get(i) {
        Some(b'0') => {
            i += 1;
            if bytes.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(("invalid number", i));
            }
        }
        Some(b'1'..=b'9') => i = digits_end(bytes, i + 1),
        _ => return Err(("invalid number", i)),
    }
    if let Some(b'.') = bytes.get(i) {
        i = digits(bytes, i + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        i = digits(bytes, i)?;
    }
    Ok(i)
}

/// A number whose first digit (1 to 9) is at `pos`, and its value if it is an integer of at most
/// 18 digits, read in the same pass (ids are such numbers: reading their digits again to make
/// the id cost as much as scanning them).
#[inline(always)]
pub(super) fn integer_end(bytes: &[u8], pos: usize) -> Scan<(usize, Option<i64>)> {
    match short_integer(bytes, pos) {
        Some((end, value)) => Ok((end, Some(value))),
        None => long_integer_end(bytes, pos),
    }
}

/// An integer of up to seven digits at `pos` (ids of a long session have four or five), read
/// from one word, which also holds the byte after them: where it ends and its value.
#[inline(always)]
fn short_integer(bytes: &[u8], pos: usize) -> Option<(usize, i64)> {
    let word = u64::from_le_bytes(*bytes.get(pos..)?.first_chunk::<8>()?);
    let others = non_digits(word);
    if others == 0 {
        return None;
    }
    let n = others.trailing_zeros() / 8;
    match (word >> (8 * n)) as u8 {
        b'.' | b'e' | b'E' => None,
        _ => Some((pos + n as usize, digits_value(word, n as usize))),
    }
}

/// [`integer_end`] for any other number: longer, with a fraction or an exponent, or near the
/// end of the text.
#[inline(never)]
fn long_integer_end(bytes: &[u8], pos: usize) -> Scan<(usize, Option<i64>)> {
    let mut value: i64 = 0;
    let mut i = pos;
    while let Some(&d) = bytes.get(i).filter(|d| d.is_ascii_digit()) {
        if i - pos == 18 {
            return number_end(bytes, pos).map(|end| (end, None));
        }
        value = value * 10 + i64::from(d - b'0');
        i += 1;
    }
    match bytes.get(i) {
        Some(b'.' | b'e' | b'E') => number_end(bytes, pos).map(|end| (end, None)),
        _ => Ok((i, Some(value))),
    }
}

/// One or more digits from `i`.
fn digits(bytes: &[u8], i: usize) -> Scan {
    match digits_end(bytes, i) {
        end if end > i => Ok(end),
        _ => Err(("invalid number", i)),
    }
}

/// Where the digits from `i` end: eight at a time (ids are numbers of a few digits; checking them
/// one by one cost most of a message's number parsing).
#[inline(always)]
fn digits_end(bytes: &[u8], mut i: usize) -> usize {
    while let Some(&word) = block_at::<8>(bytes, i) {
        let others = non_digits(u64::from_le_bytes(word));
        if others != 0 {
            return i + (others.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The bytes of `word` that are not ASCII digits, flagged in their high bits. Exact, no borrow
/// between bytes: after `^ '0'` a digit is below 10, and adding 0x76 to the low seven bits of a
/// byte sets its high bit exactly when they are 10 or more.
#[inline(always)]
fn non_digits(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ 0x3030_3030_3030_3030;
    (((x & LOW7) + 0x7676_7676_7676_7676) | x) & 0x8080_8080_8080_8080
}

/// The value of the `n` (1 to 7) ASCII digits at the start of `word` (the first digit in its
/// lowest byte), without a loop: the digits are moved to the top bytes, the bytes below them
/// becoming leading zeros, and then combined in pairs, fours and eights with three multiplications.
#[inline(always)]
fn digits_value(word: u64, n: usize) -> i64 {
    // Bytes past the digits may borrow in the subtraction, but only into bytes further up, which
    // the shift drops.
    let digits = word.wrapping_sub(0x3030_3030_3030_3030) << (8 * (8 - n.clamp(1, 7)));
    let pairs = (digits & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(10 << 8 | 1) >> 8;
    let fours = (pairs & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 << 16 | 1) >> 16;
    let eight = (fours & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 << 32 | 1) >> 32;
    eight as i64
}

fn literal_end(bytes: &[u8], pos: usize, word: &'static [u8]) -> Scan {
    match bytes.get(pos..pos + word.len()) {
        Some(found) if found == word => Ok(pos + word.len()),
        _ => Err(("expected a value", pos)),
    }
}
