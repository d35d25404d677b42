//! An in-process client port: messages in through a channel, answers out through an
//! [`Inbox`]. Used by the in-process test harness, and the shape a message-based transport (an
//! HTTP session) takes.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{ClientInput, ClientPort};
use crate::io::{Inbox, Outbox};
use crate::protocol::framing::{Frame, OVERSIZED_HEAD};

/// The instance's side: the client's messages as frames.
pub struct MemoryInput {
    rx: mpsc::UnboundedReceiver<Bytes>,
    max_message_size: usize,
}

/// The client's side of the port.
pub struct MemoryClient {
    /// One message per send, without a newline. Dropping it is the client's EOF.
    pub tx: mpsc::UnboundedSender<Bytes>,
    /// The instance's answers. Dropping it is a client that stopped reading.
    pub rx: Inbox,
}

/// A connected pair; messages over `max_message_size` arrive as oversized frames, as they would
/// from a pipe.
pub fn pair(max_message_size: usize) -> (ClientPort<MemoryInput>, MemoryClient) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (output, inbox) = Outbox::channel();
    let port = ClientPort { input: MemoryInput { rx, max_message_size }, output, writer: None };
    (port, MemoryClient { tx, rx: inbox })
}

impl MemoryInput {
    fn frame(&self, msg: Bytes) -> Frame {
        if msg.len() > self.max_message_size {
            return Frame::Oversized { len: msg.len(), head: msg.slice(..msg.len().min(OVERSIZED_HEAD)) };
        }
        // Raw newlines can only be whitespace between JSON tokens (strings cannot hold them): they
        // would split the message on the server's stdin, so they become spaces.
        if memchr::memchr2(b'\n', b'\r', &msg).is_some() {
            let flat: Vec<u8> = msg.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }).collect();
            return Frame::Line(Bytes::from(flat));
        }
        Frame::Line(msg)
    }
}

impl ClientInput for MemoryInput {
    async fn next(&mut self) -> io::Result<Option<Frame>> {
        Ok(self.rx.recv().await.map(|msg| self.frame(msg)))
    }

    fn buffered(&mut self) -> Option<Frame> {
        self.rx.try_recv().ok().map(|msg| self.frame(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_messages_like_a_pipe_would() {
        let (mut port, client) = pair(16);
        client.tx.send(Bytes::from_static(b"{\"a\":\n1}")).expect("send");
        client.tx.send(Bytes::from(vec![b'x'; 20])).expect("send");
        assert_eq!(port.input.next().await.expect("io"), Some(Frame::Line(Bytes::from_static(b"{\"a\": 1}"))));
        assert!(matches!(port.input.buffered(), Some(Frame::Oversized { len: 20, .. })));
        assert_eq!(port.input.buffered(), None);
        drop(client);
        assert_eq!(port.input.next().await.expect("io"), None, "a dropped client is EOF");
    }
}
