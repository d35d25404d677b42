//! A handshake-era session's streams: the open POSTs, the GET stream, and what was sent on them.
//!
//! Every message the session sends gets an event id, unique within the session, and is kept in
//! a bounded replay buffer beside the stream it belongs to. A client whose stream broke comes
//! back with a GET carrying `Last-Event-ID`: it is sent what that stream got after that event,
//! then the rest of that stream as it comes (a POST's stream still ends with its response). While
//! a POST's client is away, the messages for its request are still kept, for such a return. A
//! stream's priming event (2025-11-25) is kept too, as a place to resume from: the client got
//! nothing else on that stream, so it is sent all of it.
//!
//! No I/O: the session's dispatcher and handlers call in under its lock; the channels are the
//! streams' bodies.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::routes::{Backlog, Route, Routes};
use super::sse::Delivery;
use crate::protocol::jsonrpc::Id;

/// Events kept for resumption, and their total size at most.
const REPLAY_EVENTS: usize = 1000;
const REPLAY_BYTES: usize = 4 << 20;

/// Which stream an event went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Post(u64),
    Get(u64),
}

struct Post {
    serial: u64,
    /// `None` while its client is away.
    tx: Option<mpsc::UnboundedSender<Delivery>>,
}

struct Kept {
    id: u64,
    key: Key,
    /// Empty for a priming event.
    line: Bytes,
    last: bool,
}

#[derive(Default)]
pub struct Streams {
    routes: Routes,
    posts: HashMap<Id, Post>,
    get: Option<(u64, mpsc::UnboundedSender<Delivery>)>,
    backlog: Backlog,
    replay: VecDeque<Kept>,
    replay_bytes: usize,
    next_serial: u64,
    next_event: u64,
}

pub type Receiver = mpsc::UnboundedReceiver<Delivery>;

impl Streams {
    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Numbers a message of stream `key`, keeps it for resumption, and makes its delivery.
    fn event(&mut self, key: Key, line: Bytes, last: bool) -> Delivery {
        self.next_event += 1;
        let id = self.next_event;
        self.replay_bytes += line.len();
        // A copy: the line is a slice of the buffer it was read into (64 KiB), which keeping it
        // would keep whole.
        self.replay.push_back(Kept { id, key, line: Bytes::copy_from_slice(&line), last });
        while self.replay.len() > REPLAY_EVENTS || self.replay_bytes > REPLAY_BYTES {
            match self.replay.pop_front() {
                Some(old) => self.replay_bytes -= old.line.len(),
                None => break,
            }
        }
        Delivery { id, line, last }
    }

    /// The priming event of stream `key`, which starts it.
    pub fn prime(&mut self, key: Key) -> Delivery {
        self.event(key, Bytes::new(), false)
    }

    /// A POSTed request (`id`, giving progress `token`) is on its way: its stream and the
    /// stream's key.
    pub fn open_post(&mut self, id: Id, token: Option<String>) -> (Key, Receiver) {
        self.routes.open(id.clone(), token);
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.serial();
        self.posts.insert(id, Post { serial, tx: Some(tx) });
        (Key::Post(serial), rx)
    }

    /// The GET stream (replacing an older one), starting with the backlog; also says how many
    /// messages the backlog had to drop.
    pub fn open_get(&mut self) -> (Key, Receiver, u64) {
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.serial();
        let dropped = self.attach_get(serial, tx);
        (Key::Get(serial), rx, dropped)
    }

    /// Makes `tx` the GET stream and sends it the backlog.
    fn attach_get(&mut self, serial: u64, tx: mpsc::UnboundedSender<Delivery>) -> u64 {
        let dropped = std::mem::take(&mut self.backlog.dropped);
        let waiting: Vec<Bytes> = self.backlog.messages.drain(..).collect();
        for line in waiting {
            let _ = tx.send(self.event(Key::Get(serial), line, false));
        }
        self.get = Some((serial, tx));
        self.routes.set_stream_open(true);
        dropped
    }

    /// A client back after event `last_event`: what its stream got since, then the rest of it.
    /// `None` when that event is no longer kept (the client then opens a fresh stream).
    pub fn resume(&mut self, last_event: u64) -> Option<(Key, Receiver)> {
        let anchor = self.replay.iter().find(|e| e.id == last_event)?;
        // After a priming event the client has had nothing of its stream (a POST's stream is
        // primed once it has a message, with an id after that message's).
        let (key, after) = (anchor.key, if anchor.line.is_empty() { 0 } else { last_event });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut finished = false;
        for e in self.replay.iter().filter(|e| e.id > after && e.key == key && !e.line.is_empty()) {
            let _ = tx.send(Delivery { id: e.id, line: e.line.clone(), last: e.last });
            finished |= e.last;
        }
        match key {
            Key::Post(serial) if !finished => {
                if let Some(post) = self.posts.values_mut().find(|p| p.serial == serial) {
                    post.tx = Some(tx);
                }
            }
            Key::Get(serial) => {
                self.attach_get(serial, tx);
            }
            // Its response was replayed: the stream ends with it.
            Key::Post(_) => {}
        }
        Some((key, rx))
    }

    /// A stream's client went away.
    pub fn closed(&mut self, key: Key) {
        match key {
            // Its request stays routed: what comes for it is kept for the client's return.
            Key::Post(serial) => {
                if let Some(post) = self.posts.values_mut().find(|p| p.serial == serial) {
                    post.tx = None;
                }
            }
            Key::Get(serial) => {
                if self.get.as_ref().is_some_and(|(s, _)| *s == serial) {
                    self.get = None;
                    self.routes.set_stream_open(false);
                }
            }
        }
    }

    /// A message from the server, to the stream it belongs to.
    pub fn dispatch(&mut self, line: Bytes) {
        match self.routes.route(&line) {
            Route::Post { request, last } => {
                let Some(serial) = self.posts.get(&request).map(|p| p.serial) else { return };
                let delivery = self.event(Key::Post(serial), line, last);
                if let Some(tx) = self.posts.get(&request).and_then(|p| p.tx.as_ref()) {
                    let _ = tx.send(delivery);
                }
                if last {
                    self.posts.remove(&request);
                }
            }
            Route::Stream | Route::Backlog => self.send_to_get(line),
            Route::Drop => tracing::warn!("a response for a request nobody waits for was dropped"),
        }
    }

    /// To the GET stream, or the backlog while none is open.
    pub fn send_to_get(&mut self, line: Bytes) {
        let Some(serial) = self.get.as_ref().map(|(s, _)| *s) else { return self.backlog.push(line) };
        let delivery = self.event(Key::Get(serial), line, false);
        let failed = self.get.as_ref().and_then(|(_, tx)| tx.send(delivery).err());
        if let Some(unsent) = failed {
            self.get = None;
            self.routes.set_stream_open(false);
            self.backlog.push(unsent.0.line);
        }
    }

    /// The server let go of the session: every stream ends.
    pub fn end(&mut self) {
        self.posts.clear();
        self.get = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::routes::request_token;

    fn line(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    /// A request's params that give it the progress token "t".
    const REQUEST_PARAMS: &str = r#"{"_meta":{"progressToken":"t"}}"#;
    const PROGRESS: &str =
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#;
    const RESPONSE: &str = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;

    #[test]
    fn a_broken_post_stream_is_resumed_with_what_it_missed_then_its_response() {
        let mut s = Streams::default();
        let (key, mut rx) = s.open_post(Id::Int(1), request_token(Some(REQUEST_PARAMS.into())));
        s.dispatch(line(PROGRESS));
        let first = rx.try_recv().expect("progress");
        s.closed(key);
        drop(rx);
        s.dispatch(line(PROGRESS));
        let (resumed_key, mut again) = s.resume(first.id).expect("kept");
        assert_eq!(resumed_key, key);
        let missed = again.try_recv().expect("the missed progress");
        assert!(missed.id > first.id && !missed.last);
        s.dispatch(line(RESPONSE));
        assert!(again.try_recv().expect("the response").last);
        // After the response, a return gets the rest of the stream from the buffer and ends.
        let (_, mut late) = s.resume(first.id).expect("kept");
        assert_eq!(std::iter::from_fn(|| late.try_recv().ok()).count(), 2);
    }

    #[test]
    fn the_get_stream_gets_the_backlog_and_resumes_too() {
        let mut s = Streams::default();
        let changed = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
        s.send_to_get(line(changed));
        let (key, mut rx, dropped) = s.open_get();
        assert_eq!(dropped, 0);
        let first = rx.try_recv().expect("from the backlog");
        s.closed(key);
        s.send_to_get(line(changed));
        let (_, mut back) = s.resume(first.id).expect("kept");
        assert!(back.try_recv().is_ok(), "what waited in the backlog meanwhile");
        s.send_to_get(line(changed));
        assert!(back.try_recv().is_ok(), "the resumed stream is the GET stream again");
        assert!(s.resume(9999).is_none(), "an unknown event");
    }
}
