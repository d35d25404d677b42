//! Client ports: where an instance's client messages come from and where its answers go.
//!
//! An instance is fed by exactly one port and does not know what is behind it: mcpvisor's own
//! stdin/stdout in `run` ([`stdio`]), an in-process client in tests ([`memory`]), later a Unix
//! socket connection or an HTTP session. A port is a [`ClientInput`] (whole frames, cancel-safe)
//! and an [`Outbox`] for the answers; a failed or dropped output is how the instance learns that
//! the client is gone.

pub mod memory;
pub mod stdio;

use std::future::Future;
use std::io;

use tokio::io::AsyncRead;
use tokio::task::JoinHandle;

use crate::io::Outbox;
use crate::protocol::framing::{Frame, FramedReader};

/// The client's messages, one frame at a time.
pub trait ClientInput: Send + 'static {
    /// The next frame; `None` at the end of the input. Must be cancel-safe: it sits in the
    /// instance's `select!`.
    fn next(&mut self) -> impl Future<Output = io::Result<Option<Frame>>> + Send;

    /// A frame that is already buffered, without waiting: the instance handles a whole read's
    /// worth of messages per wake-up.
    fn buffered(&mut self) -> Option<Frame>;
}

impl<R: AsyncRead + Unpin + Send + 'static> ClientInput for FramedReader<R> {
    fn next(&mut self) -> impl Future<Output = io::Result<Option<Frame>>> + Send {
        FramedReader::next(self)
    }

    fn buffered(&mut self) -> Option<Frame> {
        self.buffered_frame()
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
