//! Client ports: where an instance's client messages come from and where its answers go.
//!
//! An instance is fed by exactly one port and does not know what is behind it: mcpvisor's own
//! stdin/stdout in `run` ([`stdio`]), an in-process client ([`memory`]: the tests, an HTTP
//! session), a Unix socket connection; [`any`] is either of the last two, as a daemon takes them. A port is a [`ClientInput`] (whole frames, cancel-safe)
//! and an [`Outbox`] for the answers; a failed or dropped output is how the instance learns that
//! the client is gone.

pub mod any;
pub mod memory;
pub mod stdio;

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::task::JoinHandle;

use crate::io::Outbox;
use crate::protocol::errors::OwnError;
use crate::protocol::framing::{Frame, FramedReader, Lines};
use crate::protocol::jsonrpc::{self, Kind, Message};

/// The client's messages, one frame at a time.
pub trait ClientInput: Send + 'static {
    /// The next frame; `None` at the end of the input. Must be cancel-safe: it sits in the
    /// instance's `select!`.
    fn next(&mut self) -> impl Future<Output = io::Result<Option<Frame>>> + Send;

    /// A frame that is already buffered, without waiting: the instance handles a whole read's
    /// worth of messages per wake-up.
    fn buffered(&mut self) -> Option<Frame>;

    /// The complete lines already buffered, lent rather than cut into frames (see
    /// [`Lines`]); `None` for an input without a read buffer, whose frames are whole messages.
    fn lend_lines(&mut self) -> Option<Lines> {
        None
    }

    /// Takes back what the instance did not handle of lent lines; it comes next.
    fn give_back(&mut self, lines: Lines) {
        // Only an input that lends lines is given any back, and each such input overrides this.
        if !lines.is_empty() {
            tracing::error!("lines given back to a client input that does not lend them were dropped");
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> ClientInput for FramedReader<R> {
    fn next(&mut self) -> impl Future<Output = io::Result<Option<Frame>>> + Send {
        FramedReader::next(self)
    }

    fn buffered(&mut self) -> Option<Frame> {
        self.buffered_frame()
    }

    fn lend_lines(&mut self) -> Option<Lines> {
        FramedReader::lend_lines(self)
    }

    fn give_back(&mut self, lines: Lines) {
        FramedReader::give_back(self, lines)
    }
}

/// A client input that first replays frames already read from it (a client moved from a
/// shared server's mux to a process of its own).
pub struct Prepended<I> {
    pub first: std::collections::VecDeque<Frame>,
    pub rest: I,
}

impl<I: ClientInput> ClientInput for Prepended<I> {
    async fn next(&mut self) -> io::Result<Option<Frame>> {
        match self.first.pop_front() {
            Some(frame) => Ok(Some(frame)),
            None => self.rest.next().await,
        }
    }

    fn buffered(&mut self) -> Option<Frame> {
        self.first.pop_front().or_else(|| self.rest.buffered())
    }

    fn lend_lines(&mut self) -> Option<Lines> {
        // The replayed frames go first, as frames.
        self.first.is_empty().then(|| self.rest.lend_lines()).flatten()
    }

    fn give_back(&mut self, lines: Lines) {
        self.rest.give_back(lines)
    }
}

/// One client, as an instance sees it.
pub struct ClientPort<I> {
    pub input: I,
    pub output: Outbox,
    /// The task writing `output` to a byte stream, if it is one: awaited at exit (briefly), so
    /// that the last answers reach the client.
    pub writer: Option<JoinHandle<()>>,
}

/// Answers a client that cannot be served: its first request (within `wait`) gets `error`, so
/// that the reason shows in the client, then the port is closed. Notifications before it are
/// ignored.
pub async fn refuse<I: ClientInput>(mut port: ClientPort<I>, error: OwnError, wait: Duration) {
    let first_request = async {
        while let Ok(Some(frame)) = port.input.next().await {
            let Frame::Line(line) = frame else { continue };
            match jsonrpc::parse(&line) {
                Ok(Message::Single(env)) => match env.kind {
                    Kind::Request { id, .. } => return Some(Some(id)),
                    Kind::Notification { .. } | Kind::Response { .. } => continue,
                    Kind::Invalid { id, .. } => return Some(id),
                },
                _ => return Some(None),
            }
        }
        None
    };
    if let Ok(Some(id)) = tokio::time::timeout(wait, first_request).await {
        port.output.send(error.response(id.as_ref()));
    }
    drop(port.output);
    if let Some(writer) = port.writer {
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    }
}
