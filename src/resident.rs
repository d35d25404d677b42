//! Start-up code out of the resident set.
//!
//! Most of mcpvisor's idle memory is not data but code: the kernel maps a binary's pages as they
//! are first executed, 64 KiB around each fault, and start-up (argument parsing, logging, the
//! runtime, the control socket, and in the same binary the daemon, the HTTP front and TLS) touches
//! code spread over nearly the whole text. A supervisor then runs for days on a small fraction of
//! it, while `ps` and cgroups count all of it (4.4 of 5 MiB for an idle `run`).
//!
//! A second after start-up ([`drop_startup_pages_soon`]), [`drop_startup_pages`] tells the kernel
//! (`MADV_DONTNEED`) to unmap the pages of every read-only file mapping (the binary's code and
//! constants, the C library's), and the relay faults back in only what it runs. Nothing is lost: those pages are clean copies of
//! the file, still in the page cache, and they come back on the next access exactly as the kernel
//! would bring them back after reclaiming them under memory pressure. Mappings that hold private
//! changes (relocated tables, anything writable) are never touched.

use std::ops::Range;
use std::time::Duration;

/// How long after start-up the pages are dropped. Reading smaps and unmapping takes about a
/// millisecond on the only runtime thread; done at once it would delay the first messages (a
/// `connect` client's `initialize`, a server's handshake), a second later it is out of their way.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Drops the start-up pages once start-up has settled ([`SETTLE`]), from a task of the current
/// tokio runtime.
pub fn drop_startup_pages_soon() {
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        drop_startup_pages();
    });
}

/// Drops the read-only file-backed pages mapped so far. Best effort: on any error nothing happens.
pub fn drop_startup_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
        let mut dropped = 0;
        for range in droppable(&smaps) {
            let len = range.end - range.start;
            // SAFETY: `range` is a whole mapping of this process that the kernel reported as
            // private, not writable, backed by a file and holding no anonymous (copy-on-write)
            // page. MADV_DONTNEED only unmaps its pages; the next access maps the same bytes from
            // the file again, so no memory Rust can observe changes. No safe wrapper of madvise
            // exists for memory the process did not map itself.
            let ok = unsafe { libc::madvise(range.start as *mut libc::c_void, len, libc::MADV_DONTNEED) } == 0;
            dropped += if ok { len } else { 0 };
        }
        tracing::debug!(kib = dropped / 1024, "start-up pages dropped from the resident set");
    }
}

/// The mappings of an smaps text whose pages can be dropped and read back unchanged.
fn droppable(smaps: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(line) {
            current = range;
        } else if let Some(kb) = line.strip_prefix("Anonymous:") {
            if let Some(range) = current.take() {
                if kb.trim() == "0 kB" {
                    found.push(range);
                }
            }
        }
    }
    found
}

/// For a mapping's header line (`start-end perms offset dev inode path`): `Some(Some(range))` if
/// the mapping is a candidate (private, not writable, a file's), `Some(None)` if it is not, `None`
/// if the line is not a header.
fn mapping_header(line: &str) -> Option<Option<Range<usize>>> {
    let mut parts = line.split_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?.as_bytes();
    let path = parts.nth(3).unwrap_or("");
    let candidate = perms.len() == 4 && perms[1] != b'w' && perms[3] == b'p' && path.starts_with('/');
    Some((candidate && start < end).then_some(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let smaps = "\
5600a0000000-5600a0100000 r--p 00000000 08:01 42 /usr/bin/mcpvisor
Size:               1024 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
5600a0100000-5600a0400000 r-xp 00100000 08:01 42 /usr/bin/mcpvisor
Anonymous:             0 kB
5600a0400000-5600a0480000 r--p 00400000 08:01 42 /usr/bin/mcpvisor
Anonymous:           512 kB
5600a0480000-5600a0490000 rw-p 00480000 08:01 42 /usr/bin/mcpvisor
Anonymous:             0 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Anonymous:           132 kB
7f0000100000-7f0000180000 r-xp 00000000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            droppable(smaps),
            vec![0x5600a0000000..0x5600a0100000, 0x5600a0100000..0x5600a0400000, 0x7f0000100000..0x7f0000180000]
        );
        assert!(droppable("garbage\nAnonymous: 0 kB\n").is_empty());
    }
}
