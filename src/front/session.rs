//! A handshake-era HTTP session: one client of a supervised server, as a `connect` connection
//! is. It joins the server through an in-process port (so a per-client server gives it a process
//! of its own, a shared one maps its ids beside the others'), and a dispatcher task sends each
//! message from the server to the stream it belongs to ([`Routes`]).
//!
//! The session outlives crashes of the server (the instance rebuilds it on the new process); it
//! ends with DELETE, after `session-idle-timeout` without requests or open streams, or when the
//! server lets go of it (stopped, or the daemon drains). Its id is 128 random bits.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::routes::{Backlog, Route, Routes};
use super::sse::{Delivery, EventIds};
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
    next_event: AtomicU64,
}

#[derive(Default)]
struct State {
    routes: Routes,
    /// Open POSTs by request id, with a serial number (a stream closing late must not close a
    /// newer POST that reused its id).
    posts: HashMap<Id, (u64, mpsc::UnboundedSender<Delivery>)>,
    next_post: u64,
    stream: Option<mpsc::UnboundedSender<Delivery>>,
    backlog: Backlog,
    /// The server let go of the session.
    ended: bool,
}

impl State {
    /// To the GET stream, or the backlog while none is open.
    fn send_to_stream(&mut self, line: Bytes) {
        match &self.stream {
            Some(stream) => {
                if let Err(e) = stream.send(Delivery { line, last: false }) {
                    self.backlog.push(e.0.line);
                }
            }
            None => self.backlog.push(line),
        }
    }
}

impl EventIds for Inner {
    fn next_event_id(&self) -> u64 {
        self.next_event.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Why a message could not be passed on.
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

/// Closes what a stream held when its body is dropped.
struct StreamGuard {
    inner: Arc<Inner>,
    /// The POST's request and serial, or `None` for the GET stream.
    request: Option<(Id, u64)>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut state = self.inner.state();
        match &self.request {
            Some((id, serial)) => {
                if state.posts.get(id).is_some_and(|(s, _)| s == serial) {
                    state.routes.close(id);
                    state.posts.remove(id);
                }
            }
            None => {
                state.routes.set_stream_open(false);
                state.stream = None;
            }
        }
        drop(state);
        self.inner.open_streams.fetch_sub(1, Ordering::Relaxed);
        self.inner.touch();
    }
}

/// A stream's receiving end, with what the SSE body needs.
pub struct StreamParts {
    pub rx: mpsc::UnboundedReceiver<Delivery>,
    pub ids: Arc<dyn EventIds>,
    pub guard: Box<dyn Send + Sync>,
}

impl Session {
    /// A session for a client whose messages go to `to_server` and whose answers come from
    /// `from_server` (the two ends of its port to the server).
    pub fn start(server: String, to_server: mpsc::UnboundedSender<Bytes>, mut from_server: Inbox) -> Session {
        let inner = Arc::new(Inner {
            to_server: Mutex::new(Some(to_server)),
            state: Mutex::new(State::default()),
            last_active: Mutex::new(Instant::now()),
            open_streams: AtomicUsize::new(0),
            next_event: AtomicU64::new(0),
        });
        let id = new_session_id();
        let task_inner = inner.clone();
        let session_id = id.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(line) = from_server.recv().await {
                dispatch(&task_inner, line);
            }
            // The server let go of the session: open POSTs end, later requests get 404.
            let mut state = task_inner.state();
            state.ended = true;
            state.posts.clear();
            state.stream = None;
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
    pub fn request(&self, message: Bytes) -> Result<StreamParts, Ended> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.inner.state();
            if state.ended {
                return Err(Ended);
            }
            state.next_post += 1;
            let serial = state.next_post;
            let id = state.routes.open(&message);
            if let Some(id) = &id {
                state.posts.insert(id.clone(), (serial, tx));
            }
            id.map(|id| (id, serial))
        };
        self.send(message)?;
        Ok(self.parts(rx, id))
    }

    /// Opens the session's GET stream (replacing an older one), starting with the backlog.
    pub fn open_stream(&self) -> Result<StreamParts, Ended> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut state = self.inner.state();
            if state.ended {
                return Err(Ended);
            }
            if state.backlog.dropped > 0 {
                tracing::warn!(
                    session = self.id,
                    dropped = state.backlog.dropped,
                    "messages dropped while no GET stream was open"
                );
                state.backlog.dropped = 0;
            }
            for line in state.backlog.messages.drain(..) {
                let _ = tx.send(Delivery { line, last: false });
            }
            state.routes.set_stream_open(true);
            state.stream = Some(tx);
        }
        Ok(self.parts(rx, None))
    }

    /// Sends a message that came before a JSON-only client's response to the GET stream (or
    /// the backlog).
    pub fn divert(&self, line: Bytes) {
        self.inner.state().send_to_stream(line);
    }

    fn parts(&self, rx: mpsc::UnboundedReceiver<Delivery>, request: Option<(Id, u64)>) -> StreamParts {
        self.inner.open_streams.fetch_add(1, Ordering::Relaxed);
        let guard = StreamGuard { inner: self.inner.clone(), request };
        StreamParts { rx, ids: self.inner.clone(), guard: Box::new(guard) }
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

/// Sends one message from the server where it belongs.
fn dispatch(inner: &Inner, line: Bytes) {
    let mut state = inner.state();
    let state = &mut *state;
    match state.routes.route(&line) {
        Route::Post { request, last } => {
            let delivered = match state.posts.get(&request) {
                Some((_, tx)) => tx.send(Delivery { line, last }).is_ok(),
                None => false,
            };
            if last || !delivered {
                state.posts.remove(&request);
            }
            if !delivered {
                tracing::warn!(%request, "a message for a request whose client went away was dropped");
            }
        }
        Route::Stream | Route::Backlog => state.send_to_stream(line),
        Route::Drop => tracing::warn!("a response whose client went away was dropped"),
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
