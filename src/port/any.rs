//! A client input of either transport a daemon's server accepts: a Unix connection (`mcpvisor
//! connect NAME`) or an in-process port (an HTTP session of the front), so that one hub and one
//! kind of session serve both.

use std::io;

use tokio::net::unix::OwnedReadHalf;

use super::memory::MemoryInput;
use super::ClientInput;
use crate::protocol::framing::{Frame, FramedReader, Lines};

pub enum AnyInput {
    Socket(FramedReader<OwnedReadHalf>),
    Memory(MemoryInput),
}

impl ClientInput for AnyInput {
    async fn next(&mut self) -> io::Result<Option<Frame>> {
        match self {
            AnyInput::Socket(reader) => reader.next().await,
            AnyInput::Memory(input) => input.next().await,
        }
    }

    fn buffered(&mut self) -> Option<Frame> {
        match self {
            AnyInput::Socket(reader) => reader.buffered_frame(),
            AnyInput::Memory(input) => input.buffered(),
        }
    }

    fn lend_lines(&mut self) -> Option<Lines> {
        match self {
            AnyInput::Socket(reader) => reader.lend_lines(),
            AnyInput::Memory(input) => input.lend_lines(),
        }
    }

    fn give_back(&mut self, lines: Lines) {
        match self {
            AnyInput::Socket(reader) => reader.give_back(lines),
            AnyInput::Memory(input) => input.give_back(lines),
        }
    }
}
