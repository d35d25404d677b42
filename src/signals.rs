//! SIGTERM, SIGINT and SIGHUP as one async stream of events.
//!
//! SIGPIPE needs nothing here: the Rust runtime ignores it, so a closed stdout is an EPIPE error
//! that the relay handles, never a silent death.

use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: drain and exit (a second one skips the waits).
    Terminate(&'static str),
    /// SIGHUP: restart the server gracefully.
    Hangup,
}

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe.
    pub async fn recv(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Terminate("SIGTERM"),
            _ = self.int.recv() => SignalEvent::Terminate("SIGINT"),
            _ = self.hup.recv() => SignalEvent::Hangup,
        }
    }
}
