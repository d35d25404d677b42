//! Memory allocator tuning for the relay's traffic pattern.
//!
//! A large message (a 1 MiB tool result) is read into one buffer that is freed as soon as it is
//! written on. glibc serves such buffers with mmap and returns them at free, but its *dynamic* mmap
//! threshold then rises to the size just freed, so every later buffer up to that size comes from
//! the heap instead, and freed heap memory is kept (up to twice the threshold) rather than returned.
//! Measured with 1 MiB messages, that doubled mcpvisor's peak RSS (about 16 MiB instead of 8).
//! Setting the threshold explicitly turns the adjustment off: large buffers always come from mmap
//! and go back to the kernel when freed. Small allocations are unaffected.

/// Allocations at least this large are served by mmap (glibc's initial default).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Applies the tuning; a no-op where the C library is not glibc.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it takes plain integers, touches no Rust
    // memory, and is called once at start-up before any other thread exists. No safe wrapper for
    // it exists in a maintained crate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
