//! The client port of `mcpvisor run`: mcpvisor's own stdin and stdout.
//!
//! When they are pipes or Unix sockets (as when an MCP client or systemd starts mcpvisor), they
//! are put in non-blocking mode and driven by the reactor (tokio's pipe and Unix stream types),
//! which avoids tokio's blocking helper thread and its hand-off on every read. Anything else (a
//! terminal, a file, /dev/null, or a stdout that shares its pipe with stderr, where non-blocking
//! mode would make log writes fail) falls back to tokio's blocking stdin/stdout. The original
//! file status flags are restored when [`Stdio`] drops. Pipes are also enlarged (as the server's
//! are, see [`crate::io::pipe`]) so a large message crosses in one write.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, SFlag};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

use super::ClientPort;
use crate::io::pipe::enlarge as enlarge_pipe;
use crate::io::Outbox;
use crate::protocol::framing::FramedReader;

pub type Input = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
pub type Output = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// Restores the file status flags of stdin/stdout on drop.
pub struct Stdio {
    /// Duplicates share the file description, so setting their flags restores the originals.
    restore: Vec<(OwnedFd, OFlag)>,
}

impl Drop for Stdio {
    fn drop(&mut self) {
        for (fd, flags) in &self.restore {
            let _ = fcntl(fd, FcntlArg::F_SETFL(*flags));
        }
    }
}

#[derive(PartialEq, Eq)]
enum FdKind {
    Fifo,
    Socket,
    Other,
}

fn kind(fd: BorrowedFd<'_>) -> FdKind {
    match fstat(fd) {
        Ok(st) => match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFIFO => FdKind::Fifo,
            SFlag::S_IFSOCK => FdKind::Socket,
            _ => FdKind::Other,
        },
        Err(_) => FdKind::Other,
    }
}

fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    match (fstat(a), fstat(b)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// The client port over stdin and stdout, and the guard that restores their flags. Must be called
/// inside the runtime.
pub fn port(max_message_size: usize) -> io::Result<(Stdio, ClientPort<FramedReader<Input>>)> {
    let (stdio, input, output) = open()?;
    let (output, writer) = Outbox::spawn(output);
    Ok((stdio, ClientPort { input: FramedReader::new(input, max_message_size), output, writer: Some(writer) }))
}

/// Opens stdin and stdout for async use. Must be called inside the runtime.
pub fn open() -> io::Result<(Stdio, Input, Output)> {
    let mut stdio = Stdio { restore: Vec::new() };
    let stdin = io::stdin();
    let stdout = io::stdout();
    let input: Input = match kind(stdin.as_fd()) {
        FdKind::Fifo => {
            enlarge_pipe(&stdin);
            Box::new(pipe::Receiver::from_owned_fd(stdio.nonblocking(stdin.as_fd())?)?)
        }
        FdKind::Socket => Box::new(unix_stream(stdio.nonblocking(stdin.as_fd())?)?),
        FdKind::Other => Box::new(tokio::io::stdin()),
    };
    let shares_stderr = same_file(stdout.as_fd(), io::stderr().as_fd());
    let output: Output = match kind(stdout.as_fd()) {
        _ if shares_stderr => Box::new(tokio::io::stdout()),
        FdKind::Fifo => {
            enlarge_pipe(&stdout);
            Box::new(pipe::Sender::from_owned_fd(stdio.nonblocking(stdout.as_fd())?)?)
        }
        FdKind::Socket => Box::new(unix_stream(stdio.nonblocking(stdout.as_fd())?)?),
        FdKind::Other => Box::new(tokio::io::stdout()),
    };
    Ok((stdio, input, output))
}

impl Stdio {
    /// A duplicate of `fd`; remembers the original flags so they can be put back.
    fn nonblocking(&mut self, fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        if !flags.contains(OFlag::O_NONBLOCK) {
            self.restore.push((fd.try_clone_to_owned()?, flags));
        }
        fd.try_clone_to_owned()
    }
}

/// A Unix socket on stdin/stdout (systemd `StandardInput=socket`). The shutdown of one direction
/// must not close the other, so each gets its own duplicate.
fn unix_stream(fd: OwnedFd) -> io::Result<UnixStream> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true)?;
    UnixStream::from_std(std_stream)
}
