//! One server of the daemon: its endpoint (`NAME.mcp`, where `mcpvisor connect NAME` brings
//! clients), its control socket (`NAME.sock`, as a `run` instance has), and its processes. A
//! per-client server runs one instance per client connection; each ends when its client leaves.
//!
//! What the control socket reports is put together from the instances' own answers: the state is
//! the worst of its processes' (`idle` without any), counters are summed, and those of sessions
//! that ended are kept.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::pool::{self, Pool};
use super::shared::{HubHandle, HubRole};
use super::state::StateDir;
use crate::app::logging::SERVER_SPAN;
use crate::config::serve::{ServerConfig, Share, StartMode};
use crate::control::access::Access;
use crate::control::discovery;
use crate::control::protocol::{Command as ControlCommand, Response};
use crate::control::server::{ControlServer, ControlTarget};
use crate::instance::{Command, Instance, InstanceHandle, Reply, Services, StartFailed};
use crate::io::Outbox;
use crate::lifecycle::history::RestartHistory;
use crate::observe::metrics::{self, Metrics};
use crate::observe::status::{ProcessStatus, Restarts, State, Status};
use crate::port::any::AnyInput;
use crate::port::{refuse, ClientInput, ClientPort};
use crate::process::{Reaper, SharedTail};
use crate::protocol::errors::OwnError;
use crate::protocol::framing::FramedReader;

/// The extension of a server's client endpoint in the socket directory.
pub const ENDPOINT_EXTENSION: &str = "mcp";
/// How long a refused client has to send its first request before the connection is closed.
const REFUSAL_WAIT: Duration = Duration::from_secs(5);
/// A process counts as starting (against `max-starting`) for at most this long.
const STARTING_AT_MOST: Duration = Duration::from_secs(2);

/// What the daemon gives each of its servers.
#[derive(Clone)]
pub struct Common {
    /// The socket directory.
    pub dir: PathBuf,
    pub access: Access,
    pub reaper: Reaper,
    /// Permits of `max-starting`.
    pub starting: Arc<Semaphore>,
    /// Where restart histories are kept (`None`: in memory only).
    pub state: Option<StateDir>,
}

/// A running server of the daemon. Dropping it closes its sockets; its processes are stopped
/// with [`Server::shutdown`].
pub struct Server {
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    control: Option<ControlServer>,
    endpoint: PathBuf,
    /// Writes the restart history down as it changes.
    keeper: Option<JoinHandle<()>>,
    /// Keeps a per-client server's pool filled.
    pool_keeper: Option<JoinHandle<()>>,
}

/// What the accept loop, the sessions, the hub and the control socket share.
pub(super) struct Shared {
    name: String,
    /// Every line about the server is logged inside it.
    span: tracing::Span,
    /// Replaced when a reload changes the server.
    config: Mutex<Arc<ServerConfig>>,
    pub(super) reaper: Reaper,
    pub(super) tail: SharedTail,
    /// Restarts counted against the server's limit, by all its processes together.
    history: RestartHistory,
    pub(super) starting: Arc<Semaphore>,
    access: Access,
    live: Mutex<Live>,
    /// A session ended.
    pub(super) ended: Notify,
    /// Set once an eager server's first process has been started (at once for the others).
    pub(super) first_start: watch::Sender<bool>,
    /// A shared server's hub (`None`: per-client).
    hub: Option<HubHandle>,
    /// The hub of stateless-era HTTP requests, started with the first one.
    stateless: OnceLock<HubHandle>,
    /// A per-client server's processes started ahead of their clients (`standby`).
    pub(super) pool: Arc<Pool>,
}

#[derive(Default)]
pub(super) struct Live {
    next_client: u64,
    /// Connected clients, whether or not their process has started yet.
    pub(super) clients: usize,
    /// The running instances: per client, or the shared one under 0.
    sessions: BTreeMap<u64, InstanceHandle>,
    /// New clients are refused: the daemon is stopping.
    closed: bool,
    /// The counters of sessions that have ended.
    past: Metrics,
}

impl Shared {
    pub(super) fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The server's settings as they are now.
    pub(super) fn cfg(&self) -> Arc<ServerConfig> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// What each of the server's instances is given: they share the stderr tail and the restart
    /// history.
    pub(super) fn services(&self) -> Services {
        Services { scope: self.reaper.scope(), tail: self.tail.clone(), history: self.history.clone() }
    }

    fn handles(&self) -> Vec<(u64, InstanceHandle)> {
        self.live().sessions.iter().map(|(c, h)| (*c, h.clone())).collect()
    }
}

impl Server {
    /// Opens the server's endpoint and control socket in `dir`. Nothing starts until a client
    /// connects.
    pub fn start(cfg: ServerConfig, common: &Common) -> io::Result<Server> {
        let endpoint = common.dir.join(format!("{}.{ENDPOINT_EXTENSION}", cfg.name));
        if discovery::is_live(&endpoint) {
            return Err(io::Error::other(format!(
                "another daemon already serves `{}` at {}",
                cfg.name,
                endpoint.display()
            )));
        }
        let _ = std::fs::remove_file(&endpoint);
        let listener = UnixListener::bind(&endpoint)?;
        common.access.secure_socket(&endpoint)?;
        let name = cfg.name.clone();
        let history = common.state.as_ref().map(|s| s.load(&name)).unwrap_or_default();
        let keeper = common.state.as_ref().map(|s| s.keep(&name, history.clone()));
        let span = tracing::info_span!(SERVER_SPAN, server = %name);
        let shared = Arc::new_cyclic(|me| Shared {
            hub: (cfg.sharing.share == Share::Shared)
                .then(|| HubHandle::spawn(me.clone(), span.clone(), HubRole::Shared)),
            stateless: OnceLock::new(),
            span,
            name: name.clone(),
            config: Mutex::new(Arc::new(cfg)),
            reaper: common.reaper.clone(),
            tail: SharedTail::default(),
            history,
            starting: common.starting.clone(),
            access: common.access,
            live: Mutex::new(Live::default()),
            ended: Notify::new(),
            first_start: watch::Sender::new(false),
            pool: Arc::default(),
        });
        let pool_keeper = (shared.cfg().sharing.share == Share::PerClient)
            .then(|| tokio::spawn(pool::keep(shared.clone(), shared.pool.clone()).instrument(shared.span.clone())));
        let (_, control) =
            crate::control::server::open_in(&common.dir, &name, ServerHandle(shared.clone()), common.access);
        let accept = tokio::spawn(accept_loop(shared.clone(), listener).instrument(shared.span.clone()));
        tracing::info!(server = name, endpoint = %endpoint.display(), "server ready for clients");
        Ok(Server { shared, accept, control, endpoint, keeper, pool_keeper })
    }

    /// The server's settings as they are now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.shared.cfg()
    }

    /// Takes new settings (a reload): later clients get them, and every running process
    /// restarts gracefully under them, its clients' sessions rebuilt. Returns how many.
    pub async fn update(&self, cfg: ServerConfig) -> usize {
        let instance = match cfg.sharing.share {
            Share::PerClient => cfg.per_client_instance(),
            Share::Shared => cfg.instance.clone(),
        };
        *self.shared.config.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg);
        // Processes waiting for clients were started under the old settings.
        self.shared.pool.flush();
        let handles = self.shared.handles();
        for (_, handle) in &handles {
            let _ = handle.call(Command::Reconfigure(Box::new(instance.clone()))).await;
        }
        handles.len()
    }

    /// Removed by a reload: its sockets go at once, its processes drain and stop.
    pub async fn retire(&mut self) {
        self.accept.abort();
        self.control = None;
        let _ = std::fs::remove_file(&self.endpoint);
        self.shutdown("reload").await;
    }

    pub fn name(&self) -> &str {
        self.shared.name()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.shared.clone())
    }

    /// Resolves once the server is as its start mode wants it at the daemon's start: an eager
    /// server's process has been started (or could not be: that is logged), a lazy one at once.
    pub async fn started(&self) {
        if self.shared.hub.is_some() {
            let _ = self.shared.first_start.subscribe().wait_for(|started| *started).await;
        }
    }

    /// Refuses new clients and asks every process to drain and stop (`signal`: what asked).
    pub async fn shutdown(&self, signal: &'static str) {
        self.shared.live().closed = true;
        self.shared.pool.close();
        // A hub stops its process (a second close skips the waits) and its clients.
        if let Some(hub) = self.shared.stateless.get() {
            hub.close();
        }
        match &self.shared.hub {
            Some(hub) => hub.close(),
            None => {
                for (key, handle) in self.shared.handles() {
                    if key != HubRole::Stateless.key() {
                        let _ = handle.call(Command::Terminate { signal }).await;
                    }
                }
            }
        }
    }

    /// Waits until every client has left and every process has stopped (a shared server's
    /// process may be running with no client).
    pub async fn stopped(&self) {
        loop {
            let notified = self.shared.ended.notified();
            {
                let live = self.shared.live();
                if live.clients == 0 && live.sessions.is_empty() {
                    break;
                }
            }
            notified.await;
        }
        self.shared.pool.stopped().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.keeper.iter().chain(&self.pool_keeper) {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.endpoint);
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(server = shared.name(), "accepting a client failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !shared.access.admits(&stream, "client") {
            continue;
        }
        let port = socket_port(stream, shared.cfg().instance.max_message_size);
        if let Err(refused) = admit(&shared, port, false) {
            tokio::spawn(refuse(refused.port, refused.error, REFUSAL_WAIT));
        }
    }
}

/// A client the server cannot take now, with why, and its port (to tell it).
pub struct Refused {
    pub error: OwnError,
    pub port: ClientPort<AnyInput>,
}

/// Takes a new client (from the endpoint, or the HTTP front): it gets a process of its own, or
/// joins the shared one; a `stateless` one (a stateless-era HTTP request) joins the server's
/// stateless hub. Returns its number.
fn admit(shared: &Arc<Shared>, port: ClientPort<AnyInput>, stateless: bool) -> Result<u64, Box<Refused>> {
    let refusal = {
        let mut live = shared.live();
        let limit = shared.cfg().sharing.max_clients;
        if live.closed {
            Some(OwnError::NotDelivered)
        } else if limit.is_some_and(|max| live.clients >= max) {
            Some(OwnError::TooManyClients { server: shared.cfg().name.clone(), limit: limit.unwrap_or(0) })
        } else {
            live.clients += 1;
            live.next_client += 1;
            None
        }
    };
    if let Some(error) = refusal {
        shared.span.in_scope(|| tracing::warn!("client refused: {}", error.message()));
        return Err(Box::new(Refused { error, port }));
    }
    let client = shared.live().next_client;
    if stateless {
        let hub = shared
            .stateless
            .get_or_init(|| HubHandle::spawn(Arc::downgrade(shared), shared.span.clone(), HubRole::Stateless));
        hub.join(client, port);
        return Ok(client);
    }
    match &shared.hub {
        Some(hub) => hub.join(client, port),
        None => {
            let span = tracing::info_span!(parent: &shared.span, "client", client);
            tokio::spawn(session(shared.clone(), client, port).instrument(span));
        }
    }
    Ok(client)
}

/// A client port over a Unix socket connection.
pub(super) fn socket_port(stream: UnixStream, max_message_size: usize) -> ClientPort<AnyInput> {
    let (read, write) = stream.into_split();
    let (output, writer) = Outbox::spawn(write);
    ClientPort { input: AnyInput::Socket(FramedReader::new(read, max_message_size)), output, writer: Some(writer) }
}

/// One client's connection to a per-client server: its own instance, for as long as it stays.
pub(super) async fn session<I: ClientInput>(shared: Arc<Shared>, client: u64, port: ClientPort<I>) {
    tracing::info!("client connected");
    let permit = shared.starting.clone().acquire_owned().await.ok();
    let cfg = shared.cfg();
    if let Some(pooled) = shared.pool.take() {
        let services = Services { scope: pooled.scope, ..shared.services() };
        let (instance, handle) =
            Instance::adopt(cfg.per_client_instance(), cfg.name.clone(), port, services, pooled.started);
        run_instance(&shared, client, instance, handle, permit).await;
    } else {
        start_session(&shared, client, port, permit).await;
    }
    shared.live().clients -= 1;
    shared.ended.notify_waiters();
    tracing::info!("client gone");
}

/// A client's own instance on a process started for it now.
async fn start_session<I: ClientInput>(
    shared: &Arc<Shared>,
    client: u64,
    port: ClientPort<I>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let cfg = shared.cfg();
    match Instance::start(cfg.per_client_instance(), cfg.name.clone(), port, shared.services()) {
        Err(StartFailed { error, port }) => {
            tracing::error!("cannot start the server: {error}");
            drop(permit);
            let error = OwnError::StartFailed { server: shared.cfg().name.clone(), detail: error.to_string() };
            refuse(port, error, REFUSAL_WAIT).await;
        }
        Ok((instance, handle)) => run_instance(shared, client, instance, handle, permit).await,
    }
}

/// Runs one of the server's instances to its end, listed under `key` meanwhile. The `permit`
/// (of `max-starting`) is given back once its process first speaks, or after a short while.
pub(super) async fn run_instance<I: ClientInput>(
    shared: &Shared,
    key: u64,
    mut instance: Instance<I>,
    handle: InstanceHandle,
    permit: Option<OwnedSemaphorePermit>,
) {
    shared.live().sessions.insert(key, handle);
    let mut summary = instance.watch_summary();
    let started = async {
        let _ = tokio::time::timeout(STARTING_AT_MOST, summary.wait_for(|s| s.talking)).await;
    };
    let run = instance.run_counted();
    tokio::pin!(run, started);
    let mut permit = permit;
    let (_, counters) = loop {
        tokio::select! {
            ended = &mut run => break ended,
            _ = &mut started, if permit.is_some() => permit = None,
        }
    };
    let mut live = shared.live();
    live.sessions.remove(&key);
    live.past.add(&counters);
    drop(live);
    shared.ended.notify_waiters();
}

/// The control socket's view of a server.
#[derive(Clone)]
pub struct ServerHandle(Arc<Shared>);

impl ControlTarget for ServerHandle {
    async fn answer(&self, command: ControlCommand) -> Response {
        let shared = &self.0;
        let handles = shared.handles();
        match command {
            ControlCommand::Status => Response { status: Some(Box::new(self.status().await)), ..Response::ok() },
            ControlCommand::Reload => Response::error("reload the whole daemon: `mcpvisor reload`"),
            ControlCommand::Restart | ControlCommand::Stop => {
                let (instance_command, verb) = match command {
                    ControlCommand::Restart => (
                        Command::Restart { why: "restart requested over the control socket", clear_failed: true },
                        "restarting",
                    ),
                    _ => (Command::Stop { why: "stop requested over the control socket" }, "stopping"),
                };
                for (_, handle) in &handles {
                    let _ = handle.call(instance_command.clone()).await;
                }
                let message = match handles.len() {
                    0 => "no server process is running".to_owned(),
                    n => format!("{verb} {n} server process(es)"),
                };
                Response { message: Some(message), ..Response::ok() }
            }
            ControlCommand::Logs { lines } => Response { lines: Some(shared.tail.last(lines)), ..Response::ok() },
            ControlCommand::Metrics => {
                let (counters, status) = (self.counters().await, self.status().await);
                Response { metrics: Some(metrics::render(&counters, &status)), ..Response::ok() }
            }
        }
    }
}

impl ServerHandle {
    /// A new client from elsewhere than the endpoint (an HTTP session of the front).
    pub fn attach(&self, port: ClientPort<AnyInput>) -> Result<u64, Box<Refused>> {
        admit(&self.0, port, false)
    }

    /// A stateless-era HTTP request, as a client of its own on the server's stateless process.
    pub fn attach_stateless(&self, port: ClientPort<AnyInput>) -> Result<u64, Box<Refused>> {
        admit(&self.0, port, true)
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Whether it starts with the daemon (and so holds the daemon's readiness back until ready).
    pub fn is_eager(&self) -> bool {
        self.0.cfg().sharing.start == StartMode::Eager
    }

    /// The counters of every process the server has had.
    pub async fn counters(&self) -> Metrics {
        let mut sum = self.0.live().past.clone();
        for (_, handle) in self.0.handles() {
            if let Ok(Reply::Counters(counters)) = handle.call(Command::Counters).await {
                sum.add(&counters);
            }
        }
        sum
    }

    /// The server's status, put together from its processes'.
    pub async fn status(&self) -> Status {
        let shared = &self.0;
        let mut parts = Vec::new();
        for (client, handle) in shared.handles() {
            if let Some(status) = handle.status().await {
                parts.push((client, status));
            }
        }
        let (clients, past) = {
            let live = shared.live();
            (live.clients, live.past.clone())
        };
        let mut status = aggregate(&shared.cfg(), clients, &past, parts, &shared.tail);
        // The window is the server's, whatever processes it has now (or none).
        let (now, window) = (Instant::now(), shared.cfg().instance.policy.window);
        status.restarts.in_window = shared.history.in_window(now, window);
        status.restarts.ages_secs = shared.history.ages(now, window).iter().map(Duration::as_secs_f64).collect();
        status.spares.extend(shared.pool.statuses(now));
        status.standby_off = status.standby_off.or_else(|| shared.pool.off_because());
        status.restarts.oldest_leaves_in_secs =
            shared.history.oldest(now, window).map(|t| (t + window).saturating_duration_since(now).as_secs_f64());
        status
    }
}

/// One status for a server from its processes' statuses (`client`, status).
fn aggregate(
    cfg: &ServerConfig,
    clients: usize,
    past: &Metrics,
    parts: Vec<(u64, Status)>,
    tail: &SharedTail,
) -> Status {
    let policy = &cfg.instance.policy;
    let state = State::worst(parts.iter().map(|(_, s)| s.state));
    let mut status = Status {
        state,
        restarts: Restarts {
            window_secs: policy.window.as_secs(),
            limit: policy.max_restarts,
            total: past.restarts,
            ..Restarts::default()
        },
        messages_to_server: past.messages_to_server,
        messages_to_client: past.messages_to_client,
        diverted_stdout_lines: past.diverted_stdout_lines,
        stderr_lines: tail.total(),
        errors: past.errors.values().sum(),
        share: Some(cfg.sharing.share.as_str().to_owned()),
        clients,
        stderr_tail: if matches!(state, State::Ready | State::Idle) { Vec::new() } else { tail.last(10) },
        ..Status::for_server(&cfg.name, &cfg.instance.spec)
    };
    for (client, part) in parts {
        status.restarts.total += part.restarts.total;
        status.in_flight += part.in_flight;
        status.queued += part.queued;
        status.messages_to_server += part.messages_to_server;
        status.messages_to_client += part.messages_to_client;
        status.diverted_stdout_lines += part.diverted_stdout_lines;
        status.errors += part.errors;
        if status.last_exit.as_ref().map_or(true, |e| part.last_exit.as_ref().is_some_and(|p| p.ago_secs < e.ago_secs))
        {
            status.last_exit = part.last_exit.clone().or(status.last_exit.take());
        }
        if status.protocol.server_name.is_none() {
            status.protocol = part.protocol.clone();
        }
        status.last_ping_ms = status.last_ping_ms.or(part.last_ping_ms);
        status.spares.extend(part.spares.iter().cloned());
        status.standby_off = status.standby_off.take().or(part.standby_off.clone());
        if let Some(child) = &part.child {
            // A per-client server's processes each have their client (not the stateless one's).
            let own = cfg.sharing.share == Share::PerClient && client != HubRole::Stateless.key();
            let client = own.then_some(client);
            status.processes.push(ProcessStatus::of(child, part.state, client));
        }
    }
    status
}
