//! Pipe capacity: a whole large message should fit in the kernel's pipe buffer, so it is handed
//! over in one write (its buffer freed at once, not held in mcpvisor's memory) and the reader
//! takes it without a context switch per 64 KiB.

/// 1 MiB is the default unprivileged maximum (/proc/sys/fs/pipe-max-size).
pub const PIPE_CAPACITY: i32 = 1024 * 1024;

/// Enlarges a pipe to [`PIPE_CAPACITY`]. Best effort: past the per-user pipe memory limit the
/// kernel refuses, and the default 64 KiB pipe still works.
pub fn enlarge(fd: &impl std::os::fd::AsFd) {
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY)) {
        tracing::debug!("cannot enlarge a pipe to {PIPE_CAPACITY} bytes: {e}");
    }
}
