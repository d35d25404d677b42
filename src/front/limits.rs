//! How much of the daemon one server's HTTP clients may hold: open sessions and open event
//! streams, each counted per server. Beyond a limit the client is told so (503 with a JSON-RPC
//! error that names the limit) rather than left waiting; a POST whose answer cannot have a
//! stream of its own is answered as JSON instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_streams: usize,
    streams: Mutex<HashMap<String, usize>>,
}

/// One open stream of a server; the count goes down when it is dropped (with the stream).
pub struct StreamSlot {
    limits: Arc<Limits>,
    server: String,
}

impl Limits {
    pub fn new(max_sessions: usize, max_streams: usize) -> Limits {
        Limits { max_sessions, max_streams, streams: Mutex::default() }
    }

    /// A slot for one more open stream of `server`, if it is under its limit.
    pub fn stream_slot(self: &Arc<Self>, server: &str) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = streams.entry(server.to_owned()).or_default();
        if *open >= self.max_streams {
            return None;
        }
        *open += 1;
        Some(StreamSlot { limits: self.clone(), server: server.to_owned() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.limits.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = streams.get_mut(&self.server) {
            *open = open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_per_server_and_given_back() {
        let limits = Arc::new(Limits::new(10, 2));
        let a1 = limits.stream_slot("a");
        let a2 = limits.stream_slot("a");
        assert!(a1.is_some() && a2.is_some());
        assert!(limits.stream_slot("a").is_none(), "a is at its limit");
        assert!(limits.stream_slot("b").is_some(), "b has its own");
        drop(a1);
        assert!(limits.stream_slot("a").is_some(), "a slot came back");
    }
}
