//! A shared server of the daemon: every client connection goes through one hub, which holds the
//! [`Mux`] and one instance (fed through an in-memory client port). The hub starts the instance
//! when a client needs it (or at once, for `start = "eager"`), stops it after `idle-timeout`
//! without clients, and hands a client that speaks another protocol version or era to a process
//! of its own. When the shared process ends (stopped, or given up on), its clients are
//! disconnected: a fresh process has none of their sessions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::server::{run_instance, session, Shared};
use crate::config::serve::StartMode;
use crate::instance::{Command, Instance, InstanceHandle, StartFailed};
use crate::io::{Inbox, Outbox};
use crate::port::any::AnyInput;
use crate::port::{memory, ClientInput, ClientPort, Prepended};
use crate::protocol::errors::OwnError;
use crate::protocol::framing::Frame;
use crate::protocol::jsonrpc::{self, Kind, Message};
use crate::relay::mux::{ClientId, Mux, Out};

/// What a hub is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubRole {
    /// A shared server's clients (`connect`, handshake-era HTTP sessions).
    Shared,
    /// Stateless-era HTTP requests, each a client of its own, on one process per server
    /// (whatever the server's `share`), apart from the handshake-era clients.
    Stateless,
}

impl HubRole {
    /// The key its process is listed under among the server's sessions (clients count from 1).
    pub fn key(self) -> u64 {
        match self {
            HubRole::Shared => 0,
            HubRole::Stateless => u64::MAX,
        }
    }
}

type Port = ClientPort<AnyInput>;
type Reader = AnyInput;

enum HubEvent {
    Join(ClientId, Port),
    Frame(ClientId, Frame),
    /// A client's reading task stopped: at the end of its input (`eof`), or because the hub
    /// asked for the reader back. It comes after every frame the task read.
    Stopped {
        client: ClientId,
        reader: Reader,
        eof: bool,
    },
    /// No new clients: the daemon is stopping.
    Close,
}

/// How the accept loop hands clients to the hub.
pub struct HubHandle {
    tx: mpsc::UnboundedSender<HubEvent>,
}

impl HubHandle {
    /// Starts a hub of the server `shared` (which holds this handle), logging in `span`.
    pub fn spawn(shared: Weak<Shared>, span: tracing::Span, role: HubRole) -> HubHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = tx.clone();
        tokio::spawn(async move {
            // The server finishes being built before the hub looks at it.
            tokio::task::yield_now().await;
            let Some(shared) = shared.upgrade() else { return };
            Hub {
                shared,
                role,
                mux: Mux::default(),
                clients: HashMap::new(),
                events,
                upstream: None,
                closing: false,
                draining: Draining::default(),
            }
            .run(rx)
            .instrument(span)
            .await;
        });
        HubHandle { tx }
    }

    pub fn join(&self, client: ClientId, port: Port) {
        let _ = self.tx.send(HubEvent::Join(client, port));
    }

    pub fn close(&self) {
        let _ = self.tx.send(HubEvent::Close);
    }
}

/// A client connected through the hub.
struct Conn {
    output: Outbox,
    writer: Option<JoinHandle<()>>,
    /// Asks the reading task to stop and hand the reader back (to move the client elsewhere).
    give_back: Option<oneshot::Sender<()>>,
    /// Set while the client moves to a process of its own: its frames that reach the hub
    /// meanwhile, in order (the first is the one that showed it needs to move).
    moving: Option<VecDeque<Frame>>,
}

/// Clients whose input has ended, with answers still due: each stays until its last answer
/// is delivered, or until its deadline (the drain timeout), as a `run` instance's client does.
#[derive(Default)]
struct Draining(Vec<(ClientId, Instant)>);

impl Draining {
    fn next_deadline(&self) -> Option<Instant> {
        self.0.iter().map(|(_, at)| *at).min()
    }
}

/// The shared instance, seen from the hub.
struct Upstream {
    input: mpsc::UnboundedSender<Bytes>,
    output: Inbox,
    handle: InstanceHandle,
    task: JoinHandle<()>,
}

struct Hub {
    shared: Arc<Shared>,
    role: HubRole,
    mux: Mux,
    clients: HashMap<ClientId, Conn>,
    events: mpsc::UnboundedSender<HubEvent>,
    upstream: Option<Upstream>,
    closing: bool,
    draining: Draining,
}

impl Hub {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<HubEvent>) {
        if self.role == HubRole::Shared {
            if self.shared.cfg().sharing.start == StartMode::Eager {
                self.start_upstream().await;
            }
            // Started (or tried to: a failure is logged), as the daemon's READY=1 waits for.
            self.shared.first_start.send_replace(true);
        }
        let mut idle_since = Some(Instant::now());
        loop {
            let idle_timeout = self.shared.cfg().sharing.idle_timeout;
            let idle_at = idle_since.zip(idle_timeout).map(|(since, after)| since + after);
            let drain_at = self.draining.next_deadline();
            tokio::select! {
                event = rx.recv() => match event {
                    Some(HubEvent::Join(client, port)) => self.join(client, port),
                    Some(HubEvent::Frame(client, frame)) => self.on_client_frame(client, frame).await,
                    Some(HubEvent::Stopped { client, reader, eof }) => self.stopped(client, reader, eof),
                    Some(HubEvent::Close) => {
                        // The daemon is stopping: drain the process (a second close skips the
                        // waits), then its clients go with it.
                        self.closing = true;
                        match &self.upstream {
                            Some(up) => {
                                let _ = up.handle.call(Command::Terminate { signal: "shutdown" }).await;
                            }
                            None => self.disconnect_all().await,
                        }
                    }
                    None => return,
                },
                line = upstream_line(&mut self.upstream) => match line {
                    Some(line) => {
                        let out = self.mux.on_upstream(&line);
                        self.act(out).await;
                        self.let_drained_go(Instant::now());
                    }
                    None => self.upstream_ended().await,
                },
                _ = tokio::time::sleep_until(drain_at.unwrap_or_else(Instant::now)), if drain_at.is_some() => {
                    self.let_drained_go(Instant::now());
                }
                _ = tokio::time::sleep_until(idle_at.unwrap_or_else(Instant::now)), if idle_at.is_some() && self.upstream.is_some() => {
                    tracing::info!("no client for the idle timeout: stopping the shared server");
                    if let Some(up) = &self.upstream {
                        let _ = up.handle.call(Command::Stop { why: "idle timeout" }).await;
                    }
                    idle_since = None;
                }
            }
            idle_since = match (self.mux.clients(), idle_since) {
                (0, None) => Some(Instant::now()),
                (0, since) => since,
                _ => None,
            };
        }
    }

    fn join(&mut self, client: ClientId, port: Port) {
        tracing::info!(client, "client connected");
        let ClientPort { input, output, writer } = port;
        let (give_back, asked) = oneshot::channel();
        tokio::spawn(read_client(client, input, self.events.clone(), asked));
        self.clients.insert(client, Conn { output, writer, give_back: Some(give_back), moving: None });
        self.mux.connect(client);
    }

    async fn on_client_frame(&mut self, client: ClientId, frame: Frame) {
        if let Some(moving) = self.clients.get_mut(&client).and_then(|c| c.moving.as_mut()) {
            moving.push_back(frame);
            return;
        }
        let out = match frame {
            Frame::Line(line) => self.mux.on_client(client, &line),
            Frame::Oversized { len, head } => {
                let id = jsonrpc::sniff_id(&head);
                let error = OwnError::TooLarge { size: len, limit: self.shared.cfg().instance.max_message_size };
                vec![Out::Client(client, error.response(id.as_ref()))]
            }
        };
        self.act(out).await;
    }

    /// A client's reading task stopped: the client left, or it is moving to a process of its own.
    fn stopped(&mut self, client: ClientId, reader: Reader, eof: bool) {
        let Some(mut conn) = self.clients.remove(&client) else { return };
        if let Some(frames) = conn.moving.take() {
            // Its process gets what it sent so far, then the rest of its connection.
            let shared = self.shared.clone();
            let port = ClientPort {
                input: Prepended { first: frames, rest: reader },
                output: conn.output,
                writer: conn.writer,
            };
            tokio::spawn(session(shared, client, port).in_current_span());
            return;
        }
        debug_assert!(eof);
        if self.mux.awaiting(client) {
            tracing::debug!(client, "the client's input ended: delivering the answers still due");
            let deadline = Instant::now() + self.shared.cfg().instance.drain_timeout;
            self.clients.insert(client, conn);
            self.draining.0.push((client, deadline));
            return;
        }
        self.leave(client, conn);
    }

    /// Lets go of draining clients that have had their answers, or whose time is up.
    fn let_drained_go(&mut self, now: Instant) {
        if self.draining.0.is_empty() {
            return;
        }
        let mux = &self.mux;
        let (done, still): (Vec<_>, Vec<_>) =
            self.draining.0.drain(..).partition(|(client, at)| *at <= now || !mux.awaiting(*client));
        self.draining.0 = still;
        for (client, _) in done {
            if let Some(conn) = self.clients.remove(&client) {
                self.leave(client, conn);
            }
        }
    }

    /// A client is gone: what it left at the server is cleaned up (see [`Mux::disconnect`]).
    fn leave(&mut self, client: ClientId, conn: Conn) {
        tracing::info!(client, "client gone");
        drop(conn);
        let out = self.mux.disconnect(client);
        self.send_upstream(out);
        self.shared.live().clients -= 1;
        self.shared.ended.notify_waiters();
    }

    /// Carries out what the mux decided.
    async fn act(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Client(client, line) => {
                    if let Some(conn) = self.clients.get_mut(&client) {
                        conn.output.send(line);
                    }
                }
                Out::Upstream(line) => self.upstream_send(line).await,
                Out::Detach(client, first) => self.detach(client, first),
            }
        }
    }

    fn send_upstream(&mut self, out: Vec<Out>) {
        for o in out {
            if let (Out::Upstream(line), Some(up)) = (o, &self.upstream) {
                let _ = up.input.send(line);
            }
        }
    }

    async fn upstream_send(&mut self, line: Bytes) {
        if self.upstream.is_none() && !self.closing {
            self.start_upstream().await;
        }
        match &self.upstream {
            Some(up) => {
                let _ = up.input.send(line);
            }
            None => {
                // No process: a request gets its error through the mux, so it reaches its client.
                if let Ok(Message::Single(env)) = jsonrpc::parse(&line) {
                    if let Kind::Request { id, .. } = env.kind {
                        let error = if self.closing {
                            OwnError::NotDelivered
                        } else {
                            OwnError::StartFailed {
                                server: self.shared.cfg().name.clone(),
                                detail: "see the daemon's log".into(),
                            }
                        };
                        let out = self.mux.on_upstream(&error.response(Some(&id)));
                        Box::pin(self.act(out)).await;
                    }
                }
            }
        }
    }

    async fn start_upstream(&mut self) {
        let shared = &self.shared;
        let permit = shared.starting.clone().acquire_owned().await.ok();
        let (port, client) = memory::pair(shared.cfg().instance.max_message_size);
        let services = shared.services();
        match Instance::start(shared.cfg().instance.clone(), shared.cfg().name.clone(), port, services) {
            Err(StartFailed { error, .. }) => tracing::error!("cannot start the shared server: {error}"),
            Ok((instance, handle)) => {
                let task_shared = shared.clone();
                let key = self.role.key();
                let task_handle = handle.clone();
                let task = tokio::spawn(
                    async move { run_instance(&task_shared, key, instance, task_handle, permit).await }
                        .in_current_span(),
                );
                self.upstream = Some(Upstream { input: client.tx, output: client.rx, handle, task });
            }
        }
    }

    /// The shared process has ended: its clients' sessions went with it.
    async fn upstream_ended(&mut self) {
        if let Some(up) = self.upstream.take() {
            let _ = up.task.await;
        }
        self.mux = Mux::default();
        self.disconnect_all().await;
    }

    /// Closes every client's connection (not those moving to a process of their own).
    async fn disconnect_all(&mut self) {
        let leaving: Vec<ClientId> = self.clients.iter().filter(|(_, c)| c.moving.is_none()).map(|(k, _)| *k).collect();
        for client in leaving {
            let Some(conn) = self.clients.remove(&client) else { continue };
            tracing::info!(client, "disconnecting the client: the shared server stopped");
            drop(conn.give_back);
            drop(conn.output);
            if let Some(writer) = conn.writer {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
            }
            self.shared.live().clients -= 1;
        }
        self.shared.ended.notify_waiters();
    }

    /// Moves a client of another protocol version or era to a process of its own; `first` is its
    /// message that showed it.
    fn detach(&mut self, client: ClientId, first: Bytes) {
        let out = self.mux.disconnect(client);
        self.send_upstream(out);
        let Some(conn) = self.clients.get_mut(&client) else { return };
        tracing::info!(client, "the client speaks another protocol version: giving it a process of its own");
        conn.moving = Some(VecDeque::from([Frame::Line(first)]));
        if let Some(give_back) = conn.give_back.take() {
            let _ = give_back.send(());
        }
    }
}

/// The next message of the shared process; `None` once it has ended (never, without one).
async fn upstream_line(upstream: &mut Option<Upstream>) -> Option<Bytes> {
    match upstream {
        Some(up) => up.output.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads one client's frames into the hub until it leaves, or until the hub asks for the reader.
async fn read_client(
    client: ClientId,
    mut reader: Reader,
    events: mpsc::UnboundedSender<HubEvent>,
    mut asked: oneshot::Receiver<()>,
) {
    let eof = loop {
        tokio::select! {
            frame = ClientInput::next(&mut reader) => match frame {
                Ok(Some(frame)) => {
                    if events.send(HubEvent::Frame(client, frame)).is_err() {
                        return;
                    }
                }
                _ => break true,
            },
            _ = &mut asked => break false,
        }
    };
    let _ = events.send(HubEvent::Stopped { client, reader, eof });
}
