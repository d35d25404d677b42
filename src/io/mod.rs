//! Byte-stream plumbing shared by clients and servers: the non-blocking [`outbox`] every
//! message leaves through, and [`pipe`] sizing.

pub mod outbox;
pub mod pipe;

pub use outbox::{Inbox, Outbox, Outgoing};
