//! Strings: where plain content ends, found 16 bytes at a time with SSE2 (part of every x86_64
//! CPU; through `safe_arch`, whose safe wrappers compile to the single instructions), a word at a
//! time elsewhere and in the last bytes of a line.
//!
//! Plain content is ASCII other than a quote, a backslash or a control character. The search
//! stops at a non-ASCII byte too (`STOP_NON_ASCII`), so that only strings that have one are
//! checked as UTF-8, once, by the caller, which then looks for the end without stopping there.

use super::SHORT;

/// Word-at-a-time (SWAR) masks: `x - ONES*n & !x & HIGH` is non-zero iff some byte of `x` is below
/// `n` (for `n` up to 0x80), and the lowest flagged byte is exact (a false flag only ever sits above
/// a true one, whose borrow caused it).
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` that end plain string content, flagged in their high bits.
#[inline(always)]
fn specials<const STOP_NON_ASCII: bool>(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let non_ascii = if STOP_NON_ASCII { word } else { 0 };
    (quote.wrapping_sub(ONES) & !quote
        | backslash.wrapping_sub(ONES) & !backslash
        | word.wrapping_sub(ONES * 0x20) & !word
        | non_ascii)
        & HIGH
}

fn is_special<const STOP_NON_ASCII: bool>(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20 || (STOP_NON_ASCII && b >= 0x80)
}

/// The index of the first byte at or after `i` that ends plain content, and that byte (0 at the
/// end of `bytes`). Most strings (keys, methods, ids) are short: one vector (or a word or two)
/// finds their end; past [`SHORT`] bytes memchr jumps to the next quote or backslash instead.
#[inline(always)]
pub(super) fn next_special<const STOP_NON_ASCII: bool>(bytes: &[u8], mut i: usize) -> (usize, u8) {
    let start = i;
    #[cfg(target_arch = "x86_64")]
    while let Some(block) = block_at::<16>(bytes, i) {
        let found = specials16::<STOP_NON_ASCII>(block);
        if found != 0 {
            let k = found.trailing_zeros() as usize;
            return (i + k, block[k % 16]);
        }
        i += 16;
        if i - start >= SHORT {
            return long_special::<STOP_NON_ASCII>(bytes, i);
        }
    }
    // Under 16 bytes left (the last strings of every line): the line's last 16 bytes, those
    // before `i` shifted out, instead of a word and then byte by byte.
    #[cfg(target_arch = "x86_64")]
    if let Some(block) = bytes.last_chunk::<16>() {
        let from = bytes.len() - 16;
        let found = specials16::<STOP_NON_ASCII>(block).checked_shr((i - from) as u32).unwrap_or(0);
        if found != 0 {
            let k = i - from + found.trailing_zeros() as usize;
            return (from + k, block[k % 16]);
        }
        return (bytes.len(), 0);
    }
    while let Some(&word) = block_at::<8>(bytes, i) {
        let word = u64::from_le_bytes(word);
        let found = specials::<STOP_NON_ASCII>(word);
        if found != 0 {
            let bit = found.trailing_zeros();
            return (i + (bit / 8) as usize, (word >> (bit & !7)) as u8);
        }
        i += 8;
        if i - start >= SHORT {
            return long_special::<STOP_NON_ASCII>(bytes, i);
        }
    }
    let tail = bytes.get(i..).unwrap_or_default();
    match tail.iter().position(|&b| is_special::<STOP_NON_ASCII>(b)) {
        Some(k) => (i + k, tail[k]),
        None => (bytes.len(), 0),
    }
}

/// The `N` bytes from `i`, if there are as many. Written so, the bounds check is two comparisons
/// of which the compiler merges the second into the slicing: `get(i..)?.first_chunk()` computed
/// `len - i` with its borrow, and `get(i..i + N)` alone also checks `i + N` for overflow, on every
/// string. (`checked_sub` in a `match`, the same test, compiled to 39 more instructions a message.)
#[inline(always)]
pub(super) fn block_at<const N: usize>(bytes: &[u8], i: usize) -> Option<&[u8; N]> {
    // With `len >= N`, `i <= len - N` means `i + N <= len`: no overflow.
    if i <= bytes.len().wrapping_sub(N) && bytes.len() >= N {
        bytes.get(i..i + N)?.first_chunk::<N>()
    } else {
        None
    }
}

/// [`next_special`] in a long string: memchr to the next quote, backslash or newline, then the
/// bytes jumped over checked for the other stops in blocks. (A newline is a control character,
/// so stopping there changes nothing found; but a line scanned in its read buffer
/// (`scan_line_into`) with a string left open must not make memchr run through all the lines
/// after it, for each such line.)
#[inline(never)]
fn long_special<const STOP_NON_ASCII: bool>(bytes: &[u8], i: usize) -> (usize, u8) {
    let rest = bytes.get(i..).unwrap_or_default();
    let end = memchr::memchr3(b'"', b'\\', b'\n', rest).unwrap_or(rest.len());
    let end = first_special::<STOP_NON_ASCII>(&rest[..end]).unwrap_or(end);
    (i + end, rest.get(end).copied().unwrap_or(0))
}

/// The index of the first control character (or non-ASCII byte), 64 bytes per step (32 without
/// SSE2) tested together, so the long strings of large messages cost well under one instruction
/// per byte.
fn first_special<const STOP_NON_ASCII: bool>(bytes: &[u8]) -> Option<usize> {
    let mut clean = 0;
    for block in bytes.chunks_exact(BLOCK) {
        if has_special::<STOP_NON_ASCII>(block) {
            break;
        }
        clean += BLOCK;
    }
    bytes[clean..].iter().position(|&b| b < 0x20 || (STOP_NON_ASCII && b >= 0x80)).map(|i| clean + i)
}

#[cfg(not(target_arch = "x86_64"))]
const BLOCK: usize = 32;

#[cfg(not(target_arch = "x86_64"))]
fn has_special<const STOP_NON_ASCII: bool>(block: &[u8]) -> bool {
    let mut found = 0;
    for word in block.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let v = u64::from_le_bytes(w);
        found |= v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        if STOP_NON_ASCII {
            found |= v & HIGH;
        }
    }
    found != 0
}

#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 64;

#[cfg(target_arch = "x86_64")]
fn has_special<const STOP_NON_ASCII: bool>(block: &[u8]) -> bool {
    use safe_arch::*;
    let mut found = zeroed_m128i();
    for chunk in block.chunks_exact(16) {
        if let Ok(chunk) = <&[u8; 16]>::try_from(chunk) {
            let v = load_unaligned_m128i(chunk);
            found = bitor_m128i(found, controls(v));
            if STOP_NON_ASCII {
                // The high bit is all `movemask` reads: a non-ASCII byte flags itself.
                found = bitor_m128i(found, v);
            }
        }
    }
    move_mask_i8_m128i(found) != 0
}

/// Bytes below 0x20 as 0xff: exactly those whose unsigned maximum with 0x1f is 0x1f.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn controls(v: safe_arch::m128i) -> safe_arch::m128i {
    use safe_arch::*;
    cmp_eq_mask_i8_m128i(max_u8_m128i(v, set_splat_i8_m128i(0x1f)), set_splat_i8_m128i(0x1f))
}

/// [`specials`] for 16 bytes, one bit per byte.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn specials16<const STOP_NON_ASCII: bool>(block: &[u8; 16]) -> u32 {
    use safe_arch::*;
    let v = load_unaligned_m128i(block);
    let quote = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'"' as i8));
    let backslash = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'\\' as i8));
    let mut found = bitor_m128i(bitor_m128i(quote, backslash), controls(v));
    if STOP_NON_ASCII {
        found = bitor_m128i(found, v);
    }
    move_mask_i8_m128i(found) as u32
}
