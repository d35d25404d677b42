//! Splitting a byte stream into newline-delimited messages.
//!
//! MCP over stdio is one JSON-RPC message per line. [`LineSplitter`] is the pure part: it is fed
//! bytes and hands out complete lines without their terminator (`\n` or `\r\n`), skipping blank
//! lines. A line longer than the limit is never buffered whole: once the buffer passes the limit
//! the splitter switches to discarding until the next newline and then reports the line as
//! [`Frame::Oversized`] with its length and first bytes, so the caller can log it and, for client
//! input, answer with an error.
//!
//! [`FramedReader`] drives a splitter from any `AsyncRead`. Its `next()` is cancel-safe (all state
//! lives in the splitter between reads), so it can sit in a `select!` loop.
//!
//! A frame owns its line (a `Bytes` cut from the read buffer: a reference count taken and
//! dropped per line). The relay's hot path instead borrows: [`LineSplitter::lend_lines`] cuts the
//! complete lines of a read off the buffer once, as [`Lines`], whose items are [`LineRef`]s into
//! it; a line that is copied on (most are) never gets a `Bytes` of its own. A lent line that is
//! one JSON object is found by scanning it, which the relay does anyway, rather than by searching
//! for its newline first, and is lent with its fields. What is not handled is given back and
//! comes first after that, as lent lines or as frames.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::json_scan::{self, Fields};

/// How many leading bytes of an oversized line are kept for logging and id recovery.
pub const OVERSIZED_HEAD: usize = 4096;

/// How much buffer space is made available before each read.
const READ_CHUNK: usize = 64 * 1024;

/// One unit of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, non-blank line without its terminator.
    Line(Bytes),
    /// A line longer than the limit; only its first bytes were kept.
    Oversized { len: usize, head: Bytes },
}

/// A line borrowed from the read buffer it is in: its bytes, and that buffer, from which a
/// shared `Bytes` of the line is cut only if it is kept ([`LineRef::to_bytes`]).
#[derive(Debug, Clone, Copy)]
pub struct LineRef<'a> {
    text: &'a [u8],
    buffer: &'a Bytes,
}

impl<'a> LineRef<'a> {
    /// A line that is a whole `Bytes` of its own (a frame's).
    pub fn whole(line: &'a Bytes) -> LineRef<'a> {
        LineRef { text: line, buffer: line }
    }

    /// A part of this line (a batch member), as a line of its own; `None` if `part` is not one.
    pub fn part(self, part: &'a [u8]) -> Option<LineRef<'a>> {
        let start = (part.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.text.len()).then_some(LineRef { text: part, buffer: self.buffer })
    }

    pub fn as_bytes(self) -> &'a [u8] {
        self.text
    }

    /// The line as a `Bytes` of its own, sharing the read buffer.
    pub fn to_bytes(self) -> Bytes {
        self.buffer.slice_ref(self.text)
    }
}

impl crate::io::Outgoing for LineRef<'_> {
    fn bytes(&self) -> &[u8] {
        self.text
    }

    fn into_shared(self) -> Bytes {
        self.to_bytes()
    }
}

impl std::ops::Deref for LineRef<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.text
    }
}

/// What [`Lines::next_line`] lends: a line, or a frame for a line over the limit.
#[derive(Debug)]
pub enum Lent<'a> {
    Line(LineRef<'a>),
    /// A line that is a JSON object, already scanned: its fields were written to the
    /// [`Fields`] given to [`Lines::next_line`].
    Object(LineRef<'a>),
    Oversized(Frame),
}

/// Complete lines cut off a read buffer together, lent one at a time.
#[derive(Debug)]
pub struct Lines {
    /// Whole lines, each with its newline.
    buffer: Bytes,
    /// Where the next line starts.
    pos: usize,
    max: usize,
}

impl Lines {
    /// The next line that is not blank, without its terminator. A line that is exactly a JSON
    /// object (nearly every line of MCP traffic) is found by scanning it
    /// ([`json_scan::scan_line_into`]), which also finds its end, and lent as [`Lent::Object`]
    /// with its fields in `fields` (which must start empty): its newline is not searched for
    /// first, nor is it scanned again. Any other line is found by its newline.
    pub fn next_line<'s>(&'s mut self, fields: &mut Fields<'s>) -> Option<Lent<'s>> {
        let buffer = &self.buffer;
        if let Some(rest) = buffer.get(self.pos..) {
            if let Some(len) = json_scan::scan_line_into(rest, fields).filter(|&len| len <= self.max) {
                self.pos += len + 1;
                return Some(Lent::Object(LineRef { text: &rest[..len], buffer }));
            }
        }
        loop {
            let rest = buffer.get(self.pos..).filter(|rest| !rest.is_empty())?;
            // The buffer ends with a newline: there is one.
            let len = find_newline(rest).unwrap_or(rest.len());
            let start = self.pos;
            self.pos += len + 1;
            let text = without_cr(&rest[..len]);
            if text.len() > self.max {
                let head = buffer.slice(start..start + OVERSIZED_HEAD.min(text.len()));
                return Some(Lent::Oversized(Frame::Oversized { len: text.len(), head }));
            }
            if !is_blank(text) {
                return Some(Lent::Line(LineRef { text, buffer }));
            }
        }
    }

    /// Whether every line was lent.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buffer.len()
    }

    /// The next line as a frame of its own.
    fn next_frame(&mut self) -> Option<Frame> {
        Some(match self.next_line(&mut Fields::default())? {
            Lent::Line(line) | Lent::Object(line) => Frame::Line(line.to_bytes()),
            Lent::Oversized(frame) => frame,
        })
    }
}

/// A line without the `\r` of a `\r\n` terminator.
fn without_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Pure newline splitter with a size limit.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    /// Lines lent and given back, handed out before anything in `buf`.
    returned: Option<Lines>,
    buf: BytesMut,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
    /// Set while skipping the rest of an oversized line. (Boxed: it is taken and put back for
    /// every line, and a pointer moves in one store where the struct took ten.)
    discarding: Option<Box<Discard>>,
}

/// The part of an oversized line that is remembered while the rest is skipped.
#[derive(Debug)]
struct Discard {
    /// Bytes seen so far, without the newline.
    len: usize,
    /// The first [`OVERSIZED_HEAD`] of them.
    head: BytesMut,
    /// Whether the last byte seen was `\r` (not counted if the newline follows).
    last_cr: bool,
}

impl Discard {
    fn take(&mut self, bytes: &[u8]) {
        let room = OVERSIZED_HEAD - self.head.len();
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.len += bytes.len();
        if let Some(last) = bytes.last() {
            self.last_cr = *last == b'\r';
        }
    }

    /// The frame for the whole line: the same, wherever the reads happened to split it.
    fn frame(mut self) -> Frame {
        let len = self.len - usize::from(self.last_cr);
        self.head.truncate(len);
        Frame::Oversized { len, head: self.head.freeze() }
    }
}

/// The index of the first `\n` in `bytes`. Most lines are short and the buffer holds many: their
/// end is found 32 bytes at a time inline (two 16-byte compares, one test), where memchr's
/// dispatch and set-up cost more than the search itself; a long line goes on with memchr's wider
/// loop.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use safe_arch::*;
        let newline = set_splat_i8_m128i(b'\n' as i8);
        let newlines =
            |block: &[u8; 16]| move_mask_i8_m128i(cmp_eq_mask_i8_m128i(load_unaligned_m128i(block), newline));
        let mut searched = 0;
        // Two blocks per test: a line of 100 bytes is four steps, not seven.
        while let Some(pair) = bytes.get(searched..).and_then(<[u8]>::first_chunk::<32>) {
            let (Some(a), Some(b)) = (pair.first_chunk::<16>(), pair.last_chunk::<16>()) else { break };
            let found = newlines(a) as u32 | (newlines(b) as u32) << 16;
            if found != 0 {
                return Some(searched + found.trailing_zeros() as usize);
            }
            searched += 32;
            if searched == 128 {
                break;
            }
        }
        if let Some(block) = bytes.get(searched..).and_then(<[u8]>::first_chunk::<16>) {
            let found = newlines(block);
            if found != 0 {
                return Some(searched + found.trailing_zeros() as usize);
            }
            searched += 16;
        }
        memchr::memchr(b'\n', &bytes[searched..]).map(|i| searched + i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    memchr::memchr(b'\n', bytes)
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        LineSplitter { max, returned: None, buf: BytesMut::with_capacity(READ_CHUNK), scanned: 0, discarding: None }
    }

    /// Adds bytes (used by tests and fuzzing; the reader fills [`Self::read_buffer`] directly).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into, with room for at least one more chunk.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// Bytes currently held (never much more than the limit plus one read).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if let Some(returned) = &mut self.returned {
            if let Some(frame) = returned.next_frame() {
                return Some(frame);
            }
            self.returned = None;
        }
        loop {
            if let Some(mut discard) = self.discarding.take() {
                match find_newline(&self.buf) {
                    Some(i) => {
                        discard.take(&self.buf[..i]);
                        let _ = self.buf.split_to(i + 1);
                        self.scanned = 0;
                        return Some((*discard).frame());
                    }
                    None => {
                        discard.take(&self.buf);
                        self.buf.clear();
                        self.discarding = Some(discard);
                        return None;
                    }
                }
            }
            match find_newline(&self.buf[self.scanned..]) {
                Some(i) => {
                    let end = self.scanned + i;
                    let mut line = self.buf.split_to(end + 1);
                    self.scanned = 0;
                    self.unshare_rest();
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.len() > self.max {
                        return Some(Frame::Oversized {
                            len: line.len(),
                            head: line.split_to(OVERSIZED_HEAD.min(line.len())).freeze(),
                        });
                    }
                    if is_blank(&line) {
                        continue;
                    }
                    return Some(Frame::Line(line.freeze()));
                }
                None => {
                    self.scanned = self.buf.len();
                    // One byte of slack: a `\r` that turns out to precede the newline is not counted.
                    if self.buf.len() > self.max + 1 {
                        let mut discard = Box::new(Discard { len: 0, head: BytesMut::new(), last_cr: false });
                        discard.take(&self.buf);
                        self.discarding = Some(discard);
                        self.buf.clear();
                        self.scanned = 0;
                    }
                    return None;
                }
            }
        }
    }

    /// The complete lines buffered (those given back first), cut off the buffer at once and lent
    /// from there; `None` if there are none, or while an oversized line is being skipped.
    pub fn lend_lines(&mut self) -> Option<Lines> {
        if let Some(returned) = self.returned.take() {
            return Some(returned);
        }
        if self.discarding.is_some() {
            return None;
        }
        let end = memchr::memrchr(b'\n', &self.buf)? + 1;
        let buffer = self.buf.split_to(end).freeze();
        self.scanned = 0;
        self.unshare_rest();
        Some(Lines { buffer, pos: 0, max: self.max })
    }

    /// Takes back what is left of lent lines: it comes before anything read after it.
    pub fn give_back(&mut self, lines: Lines) {
        if lines.is_empty() {
            return;
        }
        self.returned = Some(match self.returned.take() {
            None => lines,
            // Not reached: the instance holds one set of lent lines at a time, and lending hands
            // out the ones given back first. Were it reached, both are kept, those given back
            // earlier first.
            Some(older) => {
                let mut both = BytesMut::from(&older.buffer[older.pos..]);
                both.extend_from_slice(&lines.buffer[lines.pos..]);
                Lines { buffer: both.freeze(), pos: 0, max: self.max }
            }
        });
    }

    /// After a cut, the rest may still share a large line's allocation; reading on into it would
    /// keep that memory after the line is gone. The rest (one read at most) then moves to a buffer
    /// of its own, so that the large one is freed with the line.
    fn unshare_rest(&mut self) {
        if self.buf.capacity() > 2 * READ_CHUNK {
            self.buf = BytesMut::from(&self.buf[..]);
        }
    }

    /// At end of input: the last line if it had no terminator.
    pub fn finish(&mut self) -> Option<Frame> {
        if let Some(mut discard) = self.discarding.take() {
            discard.take(&self.buf);
            self.buf.clear();
            return Some((*discard).frame());
        }
        self.scanned = 0;
        let mut rest = self.buf.split();
        if rest.last() == Some(&b'\r') {
            rest.truncate(rest.len() - 1);
        }
        // The limit first, as for a terminated line: whitespace over it is reported too.
        if rest.len() > self.max {
            let len = rest.len();
            Some(Frame::Oversized { len, head: rest.split_to(OVERSIZED_HEAD.min(len)).freeze() })
        } else if is_blank(&rest) {
            None
        } else {
            Some(Frame::Line(rest.freeze()))
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// A [`LineSplitter`] fed from an async reader.
pub struct FramedReader<R> {
    reader: R,
    splitter: LineSplitter,
    eof: bool,
}

impl<R: AsyncRead + Unpin> FramedReader<R> {
    pub fn new(reader: R, max: usize) -> Self {
        FramedReader { reader, splitter: LineSplitter::new(max), eof: false }
    }

    /// The next frame if one is already buffered; never reads.
    pub fn buffered_frame(&mut self) -> Option<Frame> {
        self.splitter.next_frame()
    }

    /// The complete lines already buffered, lent ([`LineSplitter::lend_lines`]); never reads.
    pub fn lend_lines(&mut self) -> Option<Lines> {
        self.splitter.lend_lines()
    }

    /// Takes back what is left of lent lines ([`LineSplitter::give_back`]).
    pub fn give_back(&mut self, lines: Lines) {
        self.splitter.give_back(lines);
    }

    /// The next frame, or `None` at end of input. Cancel-safe.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.splitter.next_frame() {
                return Ok(Some(frame));
            }
            if self.eof {
                return Ok(self.splitter.finish());
            }
            // At most one chunk per read, so that reading never pulls far past the end of a line:
            // the kernel's pipe buffer, not mcpvisor's memory, holds what comes next.
            if self.reader.read_buf(&mut self.splitter.read_buffer().limit(READ_CHUNK)).await? == 0 {
                self.eof = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_is_found_at_every_offset_of_short_and_long_buffers() {
        for len in 0..300 {
            assert_eq!(find_newline(&vec![b'x'; len]), None);
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b'\n';
                if at + 1 < len {
                    bytes[len - 1] = b'\n';
                }
                assert_eq!(find_newline(&bytes), Some(at), "len {len} at {at}");
            }
        }
    }

    /// Every frame of `chunks`, pushed one after another.
    fn split_all(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        lend_all(chunks, max, 0)
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_lines_and_strips_terminators() {
        let frames = split_all(&[b"{\"a\":1}\n{\"b\":2}\r\n\n  \r\n{\"c\":3}"], 100);
        assert_eq!(frames, vec![line("{\"a\":1}"), line("{\"b\":2}"), line("{\"c\":3}")]);
    }

    #[test]
    fn same_result_at_every_split_point() {
        let input: &[u8] = b"{\"id\":1}\r\n\n{\"id\":\"x\"}\n{\"id\":3}\n";
        let whole = split_all(&[input], 100);
        for i in 0..input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(split_all(&[a, b], 100), whole, "split at {i}");
        }
    }

    #[test]
    fn oversized_line_is_skipped_without_buffering_it() {
        let mut s = LineSplitter::new(10);
        s.push(b"{\"id\":7,\"x\":\"");
        assert_eq!(s.next_frame(), None);
        for _ in 0..1000 {
            s.push(&[b'a'; 100]);
            assert_eq!(s.next_frame(), None);
            assert!(s.buffered() <= 100, "buffered {}", s.buffered());
        }
        s.push(b"\"}\n{\"ok\":1}\n");
        match s.next_frame() {
            Some(Frame::Oversized { len, head }) => {
                assert_eq!(len, 13 + 100_000 + 2);
                assert!(head.starts_with(b"{\"id\":7"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.next_frame(), Some(line("{\"ok\":1}")));
    }

    #[test]
    fn line_exactly_at_limit_passes_and_one_over_does_not() {
        let frames = split_all(&[b"12345\n123456\n"], 5);
        assert_eq!(frames[0], line("12345"));
        assert!(matches!(frames[1], Frame::Oversized { len: 6, .. }));
    }

    #[test]
    fn a_last_line_without_its_newline_is_framed_as_with_one() {
        // Every text of up to 8 bytes of spaces, `\r` and `x`, with a limit of 5: a line of
        // whitespace over the limit is oversized either way, as any line over it is.
        let alphabet = [b' ', b'\r', b'x'];
        for len in 0..=8u32 {
            for n in 0..3usize.pow(len) {
                let text: Vec<u8> = (0..len).map(|i| alphabet[n / 3usize.pow(i) % 3]).collect();
                let terminated = [&text[..], b"\n"].concat();
                let shown = String::from_utf8_lossy(&text);
                assert_eq!(split_all(&[&text], 5), split_all(&[&terminated], 5), "{shown:?}");
            }
        }
    }

    /// [`split_all`] as the instance reads: a frame, then lines lent `k` at a time with the rest
    /// given back, frames again when none are lent (`k` = 0: frames only).
    fn lend_all(chunks: &[&[u8]], max: usize, k: usize) -> Vec<Frame> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c);
            while let Some(f) = s.next_frame() {
                out.push(f);
                while let Some(mut lines) = if k > 0 { s.lend_lines() } else { None } {
                    for _ in 0..k {
                        match lines.next_line(&mut Fields::default()) {
                            Some(Lent::Line(line) | Lent::Object(line)) => out.push(Frame::Line(line.to_bytes())),
                            Some(Lent::Oversized(frame)) => out.push(frame),
                            None => break,
                        }
                    }
                    s.give_back(lines);
                }
            }
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn lent_lines_are_the_frames_in_the_same_order() {
        let input: &[u8] = b"{\"id\":1}\r\n\n{\"id\":\"x\"}\n  \n0123456789abcdef\n{\"id\":3}\r\n[1]\n0123456789abcdefghijklmnop\n{}\n{\"last\":1}";
        let whole = split_all(&[input], 12);
        assert!(whole.iter().any(|f| matches!(f, Frame::Oversized { len: 16, .. })), "{whole:?}");
        for k in 1..5 {
            assert_eq!(lend_all(&[input], 12, k), whole, "k = {k}");
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                assert_eq!(lend_all(&[a, b], 12, k), whole, "k = {k}, split at {at}");
            }
        }
    }

    #[test]
    fn lines_given_back_come_before_what_is_read_after_them() {
        let mut s = LineSplitter::new(100);
        s.push(b"a\nb\nc\npartial");
        let mut lines = s.lend_lines().expect("lines");
        assert!(matches!(lines.next_line(&mut Fields::default()), Some(Lent::Line(l)) if &*l == b"a"));
        s.give_back(lines);
        s.push(b"-end\nd\n");
        assert_eq!(s.next_frame(), Some(line("b")));
        let mut lines = s.lend_lines().expect("the rest given back");
        assert!(matches!(lines.next_line(&mut Fields::default()), Some(Lent::Line(l)) if &*l == b"c"));
        assert!(lines.next_line(&mut Fields::default()).is_none() && lines.is_empty());
        let mut lines = s.lend_lines().expect("what came after");
        assert!(matches!(lines.next_line(&mut Fields::default()), Some(Lent::Line(l)) if &*l == b"partial-end"));
        assert!(matches!(lines.next_line(&mut Fields::default()), Some(Lent::Line(l)) if &*l == b"d"));
        assert!(s.lend_lines().is_none());
    }

    #[test]
    fn a_part_of_a_lent_line_is_a_line_of_its_own() {
        let buffer = Bytes::from_static(b"[{\"a\":1},{\"b\":2}]");
        let line = LineRef::whole(&buffer);
        let member = line.part(&buffer[9..16]).expect("a part");
        assert_eq!(member.to_bytes(), Bytes::from_static(b"{\"b\":2}"));
        assert!(line.part(b"{\"b\":2}").is_none());
    }

    #[test]
    fn invalid_utf8_is_just_bytes() {
        let frames = split_all(&[b"\xff\xfe\n"], 100);
        assert_eq!(frames, vec![Frame::Line(Bytes::from_static(b"\xff\xfe"))]);
    }
}
