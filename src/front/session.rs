//! A handshake-era HTTP session: one client of a supervised server, as a `connect` connection
//! is. It joins the server through an in-process port (so a per-client server gives it a process
//! of its own, a shared one maps its ids beside the others'), and a dispatcher task sends each
//! message from the server to the stream it belongs to ([`Streams`], which also keeps what was
//! sent for a client that comes back with `Last-Event-ID`).
//!
//! The session outlives crashes of the server (the instance rebuilds it on the new process); it
//! ends with DELETE, after `session-idle-timeout` without requests or open streams, or when the
//! server lets go of it (stopped, or the daemon drains). Its id is 128 random bits, after the
//! replica's name and a dot when the daemon has one (`--replica`), so that a load balancer can
//! send the session's requests to the replica that holds it.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sse::Delivery;
use super::streams::{Key, Receiver, Streams};
use crate::io::Inbox;
use crate::protocol::jsonrpc::Id;

pub struct Session {
    pub id: String,
    /// The server it belongs to.
    pub server: String,
    inner: Arc<Inner>,
    dispatcher: JoinHandle<()>,
}

struct Inner {
    to_server: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    state: Mutex<State>,
    last_active: Mutex<Instant>,
    open_streams: AtomicUsize,
}

#[derive(Default)]
struct State {
    streams: Streams,
    /// The server let go of the session.
    ended: bool,
}

/// The session is over (ended by its server, its client, or expiry).
#[derive(Debug)]
pub struct Ended;

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}

/// Tells the session when a stream's body is dropped (its client went away, or it ended).
struct StreamGuard {
    inner: Arc<Inner>,
    key: Key,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.inner.state().streams.closed(self.key);
        self.inner.open_streams.fetch_sub(1, Ordering::Relaxed);
        self.inner.touch();
    }
}

/// A stream's receiving end, and the guard its body must hold.
pub struct StreamParts {
    pub rx: Receiver,
    pub guard: Box<dyn Send + Sync>,
    key: Key,
    /// It goes on a stream that broke (`Last-Event-ID`): the client has an id to resume from.
    pub resumed: bool,
}

impl Session {
    /// A session for a client whose messages go to `to_server` and whose answers come from
    /// `from_server` (the two ends of its port to the server), on replica `replica`.
    pub fn start(
        server: String,
        replica: Option<&str>,
        to_server: mpsc::UnboundedSender<Bytes>,
        mut from_server: Inbox,
    ) -> Session {
        let inner = Arc::new(Inner {
            to_server: Mutex::new(Some(to_server)),
            state: Mutex::new(State::default()),
            last_active: Mutex::new(Instant::now()),
            open_streams: AtomicUsize::new(0),
        });
        let id = match replica {
            Some(replica) => format!("{replica}.{}", new_session_id()),
            None => new_session_id(),
        };
        let task_inner = inner.clone();
        let session_id = id.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(line) = from_server.recv().await {
                task_inner.state().streams.dispatch(line);
            }
            // The server let go of the session: its streams end, later requests get 404.
            let mut state = task_inner.state();
            state.ended = true;
            state.streams.end();
            tracing::info!(session = session_id, "the server closed the HTTP session");
        });
        Session { id, server, inner, dispatcher }
    }

    pub fn ended(&self) -> bool {
        self.inner.state().ended
    }

    /// Passes a notification or a response to the server.
    pub fn send(&self, message: Bytes) -> Result<(), Ended> {
        self.inner.touch();
        let to_server = self.inner.to_server.lock().unwrap_or_else(PoisonError::into_inner);
        match to_server.as_ref() {
            Some(tx) if !self.ended() => tx.send(message).map_err(|_| Ended),
            _ => Err(Ended),
        }
    }

    /// Passes a request to the server; what the server sends for it arrives on the returned
    /// stream, which ends after the response.
    /// (`id` and `token`: the request's id and progress token, read by the caller.)
    pub fn request(&self, message: Bytes, id: Id, token: Option<String>) -> Result<StreamParts, Ended> {
        let (key, rx) = {
            let mut state = self.inner.state();
            if state.ended {
                return Err(Ended);
            }
            state.streams.open_post(id, token)
        };
        self.send(message)?;
        Ok(self.parts(rx, key))
    }

    /// Opens the session's GET stream (replacing an older one), starting with the backlog; with
    /// `last_event` (`Last-Event-ID`), resumes the stream that event was sent on instead.
    pub fn open_stream(&self, last_event: Option<u64>) -> Result<StreamParts, Ended> {
        let mut state = self.inner.state();
        if state.ended {
            return Err(Ended);
        }
        if let Some((key, rx)) = last_event.and_then(|id| state.streams.resume(id)) {
            drop(state);
            return Ok(StreamParts { resumed: true, ..self.parts(rx, key) });
        }
        let (key, rx, dropped) = state.streams.open_get();
        drop(state);
        if dropped > 0 {
            tracing::warn!(session = self.id, dropped, "messages dropped while no GET stream was open");
        }
        Ok(self.parts(rx, key))
    }

    /// Sends a message that came before a JSON-only client's response to the GET stream (or
    /// the backlog).
    pub fn divert(&self, line: Bytes) {
        self.inner.state().streams.send_to_get(line);
    }

    /// The priming event for a stream about to be sent (2025-11-25 sessions).
    pub fn prime(&self, parts: &StreamParts) -> Delivery {
        self.inner.state().streams.prime(parts.key)
    }

    fn parts(&self, rx: Receiver, key: Key) -> StreamParts {
        self.inner.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamParts { rx, guard: Box::new(StreamGuard { inner: self.inner.clone(), key }), key, resumed: false }
    }

    /// Ends the session: the server sees its client leave (after delivering what is due).
    pub fn close(&self) {
        self.inner.to_server.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Idle: no stream open and no request for `idle` as of `now`.
    pub fn idle(&self, now: Instant, idle: Duration) -> bool {
        let last = *self.inner.last_active.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.open_streams.load(Ordering::Relaxed) == 0 && now.saturating_duration_since(last) >= idle
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
        self.dispatcher.abort();
    }
}

/// 128 random bits as hex (visible ASCII, as the spec asks).
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Not expected on Linux; fastrand is seeded from the OS, but not meant for secrets.
        tracing::warn!("cannot read /dev/urandom; session ids are less unpredictable");
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The front's sessions, by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, session: Session) -> Arc<Session> {
        let session = Arc::new(session);
        self.map().insert(session.id.clone(), session.clone());
        session
    }

    /// A live session; one the server let go of is forgotten.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = self.map();
        match map.get(id) {
            Some(s) if s.ended() => {
                map.remove(id);
                None
            }
            other => other.cloned(),
        }
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map().remove(id)
    }

    /// Open sessions of `server` (`None`: of every server).
    pub fn count(&self, server: Option<&str>) -> usize {
        self.map().values().filter(|s| server.map_or(true, |name| s.server == name)).count()
    }

    /// Ends sessions idle for `idle` (or let go of by their server); returns how many.
    pub fn expire(&self, now: Instant, idle: Duration) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, s| !s.ended() && !s.idle(now, idle));
        before - map.len()
    }
}
