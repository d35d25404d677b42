//! The line splitter: any bytes, cut at the read boundaries the input itself chooses, give the same
//! frames as reading it whole, and never hold more than the limit beyond the bytes just read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpvisor::protocol::framing::{Frame, LineSplitter};

const MAX: usize = 64;

fn split(chunks: &[&[u8]]) -> Vec<Frame> {
    let mut s = LineSplitter::new(MAX);
    let mut out = Vec::new();
    for chunk in chunks {
        s.push(chunk);
        assert!(s.buffered() <= MAX + 1 + chunk.len());
        while let Some(frame) = s.next_frame() {
            out.push(frame);
        }
        assert!(s.buffered() <= MAX + 1);
    }
    out.extend(s.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size.
    let Some((&size, input)) = data.split_first() else { return };
    let chunks: Vec<&[u8]> = input.chunks(usize::from(size).max(1)).collect();
    assert_eq!(split(&[input]), split(&chunks));
});
