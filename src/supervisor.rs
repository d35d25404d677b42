//! The supervisor loop: one task that owns the session and makes every decision.
//!
//! Everything else feeds it events (client frames, child frames, child exits, write failures,
//! signals, timers) or carries out its orders (writer tasks, the child watcher). The child's
//! life is an explicit state machine:
//!
//! ```text
//!            spawn ok (replay needed)       replayed initialize answered
//! Backoff ─────────────────────────▶ Up(Rebuilding) ─────────────────────▶ Up(Ready)
//!    ▲                                    │                                   │
//!    │ policy: restart after d            │ exit / stdout closed / hung       │ SIGHUP, SIGTERM,
//!    │                                    ▼                                   ▼ client EOF
//!    └──────────────────────────── Stopping (stop sequence, drain stdout) ◀───┘
//!                                         │ policy: limit reached
//!                                         ▼
//!                                       Failed ── slot frees ──▶ Up (half-open)
//! ```
//!
//! Client messages are forwarded at once when the child is Up and Ready, queued (bounded) while
//! it restarts, and answered with an error when it is Failed or mcpvisor is shutting down.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use smallvec::{smallvec, SmallVec};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Sleep};

use crate::child::{tail_lines, Child, ChildExit, ExitInfo, SharedTail, SpawnError};
use crate::cli::OnFailure;
use crate::config::RunConfig;
use crate::control::{Command as ControlCommand, Control, ControlCall, Response};
use crate::framing::{Frame, FramedReader};
use crate::inflight::{self, ClientRequest, ClientTable, IdMap, IdSet, OwnIds, OwnPurpose, ServerRequest};
use crate::jsonrpc::{self, Envelope, Id, Kind, Message, Params, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy::{Decision, RestartPolicy};
use crate::session::Session;
use crate::signals::{SignalEvent, Signals};
use crate::status::{self, Status};
use crate::stdio::Input;
use crate::writer::Outbox;

/// How long the child's stdout is still read after its exit, for lines written just before.
const STDOUT_DRAIN: Duration = Duration::from_millis(250);
/// How many stderr lines go into error `data`.
const ERROR_STDERR_LINES: usize = 10;
/// How much of a diverted stdout line is logged.
const DIVERTED_LOG_BYTES: usize = 2048;
/// How many already-buffered lines are handled in one go before other events get a turn.
const BATCH: usize = 256;
/// How often the server's memory is measured when `--max-memory` is set.
const MEMORY_CHECK: Duration = Duration::from_secs(1);

/// Exit statuses of `mcpvisor run`.
pub mod exit_code {
    pub const CLEAN: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const SPAWN_FAILED: u8 = 3;
    pub const RESTART_LIMIT: u8 = 4;
}

/// Why a child is being stopped or has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    Exited,
    StdoutClosed,
    Hung,
    RebuildFailed(String),
    SpawnFailed(String),
    /// Over `--max-memory`, with the resident bytes measured.
    Memory(u64),
}

impl Cause {
    fn key(&self) -> &'static str {
        match self {
            Cause::Exited => "exited",
            Cause::StdoutClosed => "stdout_closed",
            Cause::Hung => "hung",
            Cause::RebuildFailed(_) => "rebuild_failed",
            Cause::SpawnFailed(_) => "spawn_failed",
            Cause::Memory(_) => "memory",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StopWhy {
    Crashed(Cause),
    /// Operator-requested restart (SIGHUP): not counted against the limit.
    Restart,
    Shutdown,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the answer to the replayed `initialize`; client traffic is queued.
    Rebuilding {
        deadline: Instant,
    },
    Ready,
}

enum ChildState {
    Up {
        child: Child,
        phase: Phase,
    },
    Stopping {
        child: Child,
        why: StopWhy,
        exit: Option<ExitInfo>,
        drain_until: Option<Instant>,
    },
    Backoff {
        until: Instant,
    },
    Failed {
        until: Instant,
    },
    /// No child and none coming: mcpvisor is exiting.
    Gone,
}

impl ChildState {
    fn name(&self) -> &'static str {
        match self {
            ChildState::Up { phase: Phase::Ready, .. } => "ready",
            ChildState::Up { phase: Phase::Rebuilding { .. }, .. } => "rebuilding",
            ChildState::Stopping { .. } => "stopping",
            ChildState::Backoff { .. } => "backoff",
            ChildState::Failed { .. } => "failed",
            ChildState::Gone => "gone",
        }
    }
}

/// A client message waiting for a child that can take it.
#[derive(Debug)]
struct Queued {
    line: Bytes,
    /// The requests the line carries (several for a batch), with their arrival numbers. Inline for
    /// the usual single request, so queueing a message does not allocate.
    requests: SmallVec<[(Id, u64); 1]>,
}

/// A client batch whose answers are being gathered.
#[derive(Debug, Default)]
struct PendingBatch {
    /// Requests of the batch not answered yet.
    waiting: usize,
    answers: Vec<Bytes>,
}

#[derive(Debug, Default)]
struct Liveness {
    last_output: Option<Instant>,
    probe_deadline: Option<Instant>,
    misses: u32,
    last_latency: Option<Duration>,
}

#[derive(Debug)]
enum Shutdown {
    /// Waiting for in-flight requests until the deadline, then stopping the child.
    Draining { deadline: Instant },
    /// The stop sequence is under way.
    Stopping,
}

/// A pending graceful restart (SIGHUP): drain, then stop and start a new child.
#[derive(Debug)]
struct RestartRequest {
    deadline: Instant,
}

enum Event {
    Client(io::Result<Option<Frame>>),
    Child(io::Result<Option<Frame>>),
    Exit(ChildExit),
    ClientGone(io::Error),
    Signal(SignalEvent),
    Control(ControlCall),
    Tick,
    Wake,
}

/// The failure at start-up that makes `mcpvisor run` give up at once.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),
}

pub struct Supervisor {
    cfg: RunConfig,
    client_in: FramedReader<Input>,
    client_eof: bool,
    client_out: Outbox,
    client_out_task: JoinHandle<()>,
    client_gone_rx: mpsc::UnboundedReceiver<io::Error>,
    client_gone: bool,
    signals: Signals,
    exits_tx: mpsc::UnboundedSender<ChildExit>,
    exits_rx: mpsc::UnboundedReceiver<ChildExit>,

    state: ChildState,
    child_in: Option<Outbox>,
    child_out: Option<FramedReader<pipe::Receiver>>,
    generation: u64,
    tail: SharedTail,
    last_exit: Option<ExitInfo>,
    /// Why the last restart could not start the command, if it could not.
    last_spawn_error: Option<String>,

    session: Session,
    client_reqs: ClientTable,
    server_reqs: IdMap<ServerRequest>,
    /// Requests a dead child had sent to the client: their late answers are dropped.
    orphaned_server_reqs: IdSet,
    /// Client batches being answered, and which batch each of their requests belongs to.
    batches: std::collections::HashMap<u64, PendingBatch>,
    batch_of: IdMap<u64>,
    next_batch: u64,
    own: OwnIds,
    queue: VecDeque<Queued>,
    seq: u64,
    policy: RestartPolicy,
    liveness: Liveness,
    shutdown: Option<Shutdown>,
    forced: bool,
    restart: Option<RestartRequest>,
    /// Set when the child closed stdout while still running: if it has not exited by then, it
    /// is treated as broken. (Usually the exit follows at once and carries the real status.)
    stdout_closed_deadline: Option<Instant>,
    exit_code: Option<u8>,
    metrics: Metrics,
    /// When and why the last child ended.
    last_end: Option<(Instant, &'static str)>,
    name: String,
    control: Option<Control>,
    notifier: Notifier,
    /// When the event being handled arrived: one clock read per event, not one per message.
    now: Instant,
    /// One timer for every deadline, re-armed only when the earliest deadline changes (a fresh
    /// timer per loop round would register and cancel a timer entry for every message).
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// When to measure the server's memory next (`--max-memory`).
    memory_check_at: Option<Instant>,
    /// What the last STATUS line sent to systemd showed: state, server pid, restarts in window.
    reported: Option<(status::State, Option<u32>, usize)>,
    next_watchdog: Option<Instant>,
}

impl Supervisor {
    /// Starts the first child. A command that cannot be started is an error for the caller to
    /// report; later spawn failures are crashes handled by the restart policy.
    pub fn start(cfg: RunConfig, client_in: Input, client_out: crate::stdio::Output) -> Result<Supervisor, RunError> {
        let signals = Signals::new().map_err(RunError::Signals)?;
        let (gone_tx, client_gone_rx) = mpsc::unbounded_channel();
        let (client_out, client_out_task) = Outbox::spawn(client_out, move |e| {
            let _ = gone_tx.send(e);
        });
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let policy = RestartPolicy::new(cfg.policy.clone());
        let mut sup = Supervisor {
            client_in: FramedReader::new(client_in, cfg.max_message_size),
            client_eof: false,
            client_out,
            client_out_task,
            client_gone_rx,
            client_gone: false,
            signals,
            exits_tx,
            exits_rx,
            state: ChildState::Gone,
            child_in: None,
            child_out: None,
            generation: 0,
            tail: SharedTail::default(),
            last_exit: None,
            last_spawn_error: None,
            session: Session::default(),
            client_reqs: ClientTable::default(),
            server_reqs: IdMap::default(),
            orphaned_server_reqs: IdSet::default(),
            batches: std::collections::HashMap::new(),
            batch_of: IdMap::default(),
            next_batch: 0,
            own: OwnIds::default(),
            queue: VecDeque::new(),
            seq: 0,
            policy,
            liveness: Liveness::default(),
            shutdown: None,
            forced: false,
            restart: None,
            stdout_closed_deadline: None,
            exit_code: None,
            metrics: Metrics::default(),
            last_end: None,
            name: String::new(),
            control: None,
            notifier: Notifier::from_env(),
            now: Instant::now(),
            timer: Box::pin(sleep_until(Instant::now().into())),
            timer_at: None,
            memory_check_at: None,
            reported: None,
            next_watchdog: None,
            cfg,
        };
        crate::child::become_subreaper();
        let child = sup.spawn_child()?;
        sup.state = ChildState::Up { child, phase: Phase::Ready };
        Ok(sup)
    }

    /// Names the instance and attaches its control socket (done once the server has started, so
    /// that a server that cannot start leaves nothing behind).
    pub fn with_control(mut self, name: String, control: Option<Control>) -> Supervisor {
        self.name = name;
        self.control = control;
        self.next_watchdog = self.notifier.watchdog_interval().map(|_| Instant::now());
        self
    }

    /// Runs until the client is gone or a signal ends the session; returns the exit status.
    pub async fn run(mut self) -> u8 {
        let code = loop {
            if let Some(code) = self.exit_code {
                break code;
            }
            let event = self.next_event().await;
            self.handle(event);
            self.advance();
        };
        tracing::info!(
            to_server = self.metrics.messages_to_server,
            to_client = self.metrics.messages_to_client,
            diverted = self.metrics.diverted_stdout_lines,
            oversized = self.metrics.oversized_messages,
            errors = self.metrics.errors.values().sum::<u64>(),
            restarts = self.metrics.restarts,
            state = self.state.name(),
            "mcpvisor exiting"
        );
        self.state = ChildState::Gone;
        // Whatever is still parented to mcpvisor now (a server skipped by a forced exit, or its
        // escaped descendants) must not outlive it.
        self.reap_orphans();
        let Supervisor { client_out, client_out_task, .. } = self;
        drop(client_out);
        let _ = tokio::time::timeout(Duration::from_secs(2), client_out_task).await;
        code
    }

    // ----- events -------------------------------------------------------------------------

    async fn next_event(&mut self) -> Event {
        let deadline = self.next_deadline();
        if let Some(at) = deadline.filter(|at| self.timer_at != Some(*at)) {
            self.timer.as_mut().reset(at.into());
            self.timer_at = Some(at);
        }
        let child_congested = self.child_in.as_ref().is_some_and(Outbox::congested);
        let read_client = self.reading_client();
        let read_child = self.reading_child();
        let child_in = self.child_in.as_ref();
        tokio::select! {
            frame = self.client_in.next(), if read_client => Event::Client(frame),
            frame = next_frame(&mut self.child_out), if read_child => Event::Child(frame),
            Some(exit) = self.exits_rx.recv() => Event::Exit(exit),
            Some(err) = self.client_gone_rx.recv() => Event::ClientGone(err),
            sig = self.signals.recv() => Event::Signal(sig),
            Some(call) = recv_control(&mut self.control) => Event::Control(call),
            _ = &mut self.timer, if deadline.is_some() => Event::Tick,
            _ = self.client_out.drained(), if self.client_out.congested() => Event::Wake,
            _ = drained(child_in), if child_congested => Event::Wake,
        }
    }

    /// Whether to take client input now: not after EOF, and not while the child's stdin is
    /// congested or the queue is full because of `--max-inflight` (backpressure: the server is
    /// up, so waiting for its answers beats refusing messages).
    fn reading_client(&self) -> bool {
        let held_back = self.child_in.as_ref().is_some_and(Outbox::congested)
            || (self.child_ready() && self.queue.len() >= self.cfg.queue_limit);
        !self.client_eof && !self.client_gone && !held_back
    }

    /// Whether to take the child's output now: not while the client's stdout is congested.
    fn reading_child(&self) -> bool {
        self.child_out.is_some() && !self.client_out.congested()
    }

    fn handle(&mut self, event: Event) {
        self.now = Instant::now();
        match event {
            Event::Client(Ok(Some(frame))) => {
                self.on_client_frame(frame);
                // Lines that came in the same read are handled now, not one `select!` round each.
                for _ in 1..BATCH {
                    if !self.reading_client() {
                        break;
                    }
                    let Some(frame) = self.client_in.buffered_frame() else { break };
                    self.on_client_frame(frame);
                }
            }
            Event::Client(Ok(None)) => {
                tracing::info!("client closed stdin");
                self.client_eof = true;
                self.begin_shutdown("the client closed its input");
            }
            Event::Client(Err(e)) => {
                tracing::warn!("reading stdin failed: {e}; treating the client as gone");
                self.client_eof = true;
                self.begin_shutdown("stdin failed");
            }
            Event::Child(Ok(Some(frame))) => {
                self.on_child_frame(frame);
                for _ in 1..BATCH {
                    if !self.reading_child() {
                        break;
                    }
                    let Some(frame) = self.child_out.as_mut().and_then(FramedReader::buffered_frame) else { break };
                    self.on_child_frame(frame);
                }
            }
            Event::Child(Ok(None)) => self.on_child_stdout_closed(None),
            Event::Child(Err(e)) => self.on_child_stdout_closed(Some(e)),
            Event::Exit(exit) => self.on_child_exit(exit),
            Event::ClientGone(e) => {
                tracing::info!("the client stopped reading (writing stdout failed: {e}); shutting down");
                self.client_gone = true;
                self.client_eof = true;
                self.begin_shutdown("the client is gone");
            }
            Event::Signal(SignalEvent::Terminate(name)) => {
                if self.shutdown.is_some() {
                    tracing::warn!("{name} again: skipping the waits");
                    self.force_exit();
                } else {
                    tracing::info!("{name}: draining and shutting down");
                    self.begin_shutdown(name);
                }
            }
            Event::Signal(SignalEvent::Hangup) => self.request_restart("SIGHUP"),
            Event::Control(call) => {
                let response = self.on_control(call.command);
                let _ = call.reply.send(response);
            }
            Event::Tick => self.on_tick(Instant::now()),
            Event::Wake => {}
        }
    }

    /// Moves the state machine along after any event: finishes stops, drains, restarts.
    fn advance(&mut self) {
        let now = Instant::now();
        // Answers free --max-inflight slots for queued requests.
        if !self.queue.is_empty() && self.child_ready() {
            self.flush_queue();
        }
        self.report_to_systemd();
        if let ChildState::Stopping { exit: Some(_), drain_until, .. } = &self.state {
            if self.child_out.is_none() || drain_until.is_some_and(|d| now >= d) || self.forced {
                self.finish_stop();
            }
        }
        if let Some(Shutdown::Draining { deadline }) = self.shutdown {
            if self.client_reqs.awaiting_child() == 0 || now >= deadline {
                self.stop_for_shutdown();
            }
        }
        if let Some(RestartRequest { deadline }) = self.restart {
            if matches!(self.state, ChildState::Up { .. })
                && (self.client_reqs.awaiting_child() == 0 || now >= deadline)
            {
                self.restart = None;
                self.stop_child(StopWhy::Restart);
            }
        }
    }

    /// READY/STOPPING/STATUS for systemd. Runs after every event, so it only formats and sends a
    /// STATUS line when what it shows (state, server pid, restart count) has changed.
    fn report_to_systemd(&mut self) {
        if !self.notifier.enabled() {
            return;
        }
        let state = self.public_state();
        match state {
            status::State::Ready => self.notifier.ready(),
            status::State::Draining => self.notifier.stopping(),
            _ => {}
        }
        let pid = self.child_pid();
        let restarts = self.policy.restarts_in_window(self.now);
        if self.reported == Some((state, pid, restarts)) {
            return;
        }
        self.reported = Some((state, pid, restarts));
        let pid = pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let window = fmt_duration(self.policy.config().window);
        self.notifier
            .status(&format!("{}: server pid {pid}, {restarts} restarts in the last {window}", state.as_str()));
    }

    fn next_deadline(&self) -> Option<Instant> {
        let state = match &self.state {
            ChildState::Up { phase: Phase::Rebuilding { deadline, .. }, .. } => Some(*deadline),
            ChildState::Stopping { drain_until, .. } => *drain_until,
            ChildState::Backoff { until } | ChildState::Failed { until } => Some(*until),
            _ => None,
        };
        let drain = match self.shutdown {
            Some(Shutdown::Draining { deadline }) => Some(deadline),
            _ => None,
        };
        [
            self.client_reqs.next_deadline(),
            self.liveness_deadline(),
            state,
            drain,
            self.restart.as_ref().map(|r| r.deadline),
            self.stdout_closed_deadline,
            self.next_watchdog,
            self.memory_check_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_tick(&mut self, now: Instant) {
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notifier.watchdog_interval()) {
            if now >= at {
                // A Failed server withholds the ping, so that systemd's WatchdogSec= acts.
                if !matches!(self.state, ChildState::Failed { .. }) {
                    self.notifier.watchdog();
                }
                self.next_watchdog = Some(now + every);
            }
        }
        for (id, req) in self.client_reqs.take_expired(now) {
            let after = self.cfg.request_timeout.unwrap_or_default();
            tracing::warn!(%id, method = &*req.method, "request timed out after {}", fmt_duration(after));
            if req.sent {
                self.send_to_child(jsonrpc::cancelled(&id, "mcpvisor: request timed out"));
            }
            let msg = format!(
                "MCP server did not answer {} within {} (mcpvisor --request-timeout); the request was cancelled",
                req.method,
                fmt_duration(after)
            );
            self.reply_error(
                Some(&id),
                INTERNAL_ERROR,
                &msg,
                json!({ "reason": "timeout", "timeout_ms": after.as_millis() as u64 }),
            );
        }
        self.check_liveness(now);
        self.check_memory(now);
        if self.stdout_closed_deadline.is_some_and(|d| now >= d) {
            self.stdout_closed_deadline = None;
            if matches!(self.state, ChildState::Up { .. }) {
                tracing::warn!(generation = self.generation, "server closed its stdout but keeps running; stopping it");
                self.crash(Cause::StdoutClosed);
            }
        }
        match &self.state {
            ChildState::Up { phase: Phase::Rebuilding { deadline, .. }, .. } if now >= *deadline => {
                tracing::warn!("the new server did not answer the replayed initialize in time");
                self.crash(Cause::RebuildFailed("no answer to the replayed initialize".into()));
            }
            ChildState::Backoff { until } | ChildState::Failed { until } if now >= *until => {
                if matches!(self.state, ChildState::Failed { .. }) {
                    tracing::info!("a restart slot is free again: trying one restart");
                }
                self.restart_child(true);
            }
            _ => {}
        }
    }

    // ----- client → child -----------------------------------------------------------------

    fn on_client_frame(&mut self, frame: Frame) {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Oversized { len, head } => {
                self.metrics.oversized_messages += 1;
                let id = jsonrpc::sniff_id(&head);
                if let Some(id) = &id {
                    self.client_reqs.remove(id);
                }
                tracing::warn!(len, id = ?id.as_ref().map(Id::to_json), "client message over --max-message-size skipped");
                let msg = format!(
                    "message of {len} bytes exceeds the limit of {} bytes (mcpvisor --max-message-size); it was not delivered",
                    self.cfg.max_message_size
                );
                self.reply_error(
                    id.as_ref(),
                    INVALID_REQUEST,
                    &msg,
                    json!({ "reason": "too_large", "size": len, "limit": self.cfg.max_message_size }),
                );
                return;
            }
        };
        match jsonrpc::parse(&line) {
            Err(e) => {
                tracing::warn!("client sent a line that is not JSON ({e}): {}", preview(&line));
                self.reply_error(None, PARSE_ERROR, &format!("Parse error: {e}"), json!({ "reason": "parse_error" }));
            }
            Ok(Message::Single(env)) => self.on_client_message(env, &line),
            Ok(Message::Batch(items)) => self.on_client_batch(items, &line),
        }
    }

    fn on_client_message(&mut self, env: Envelope<'_>, line: &Bytes) {
        match env.kind {
            Kind::Request { id, method } => {
                self.take_client_request(id, &method, env.params, line.clone());
            }
            Kind::Notification { method } => self.on_client_notification(&method, env.params, line),
            Kind::Response { id, .. } => self.on_client_response(&id, line),
            Kind::Invalid { id, reason } => {
                tracing::warn!("client sent an invalid JSON-RPC message ({reason}): {}", preview(line));
                self.reply_error(
                    id.as_ref(),
                    INVALID_REQUEST,
                    &format!("Invalid Request: {reason}"),
                    json!({ "reason": "invalid_request" }),
                );
            }
        }
    }

    /// A batch is taken apart: each member goes to the server as a message of its own (servers of
    /// the 2025-06-18 protocol no longer accept batches), invalid members are answered here, and
    /// the answers are gathered into one array for the client, as JSON-RPC requires.
    fn on_client_batch(&mut self, items: Vec<Envelope<'_>>, line: &Bytes) {
        if items.is_empty() {
            tracing::warn!("client sent an empty batch");
            let data = json!({ "reason": "invalid_request" });
            self.reply_error(None, INVALID_REQUEST, "Invalid Request: empty batch", data);
            return;
        }
        self.next_batch += 1;
        let number = self.next_batch;
        self.batches.insert(number, PendingBatch::default());
        for env in items {
            let member = line.slice_ref(env.raw.as_bytes());
            match env.kind {
                Kind::Request { id, method } => {
                    // Checked before the id is mapped to this batch, which would take it from the
                    // request already in flight under it.
                    if self.id_in_flight(&id) {
                        let error = self.duplicate_id_error(&id);
                        self.batch_answer(number, error);
                        continue;
                    }
                    if let Some(batch) = self.batches.get_mut(&number) {
                        batch.waiting += 1;
                    }
                    self.batch_of.insert(id.clone(), number);
                    self.take_client_request(id, &method, env.params, member);
                }
                Kind::Notification { method } => self.on_client_notification(&method, env.params, &member),
                Kind::Response { id, .. } => self.on_client_response(&id, &member),
                Kind::Invalid { id, reason } => {
                    let msg = format!("Invalid Request: {reason}");
                    let line =
                        self.error_line(id.as_ref(), INVALID_REQUEST, &msg, json!({ "reason": "invalid_request" }));
                    self.batch_answer(number, line);
                }
            }
        }
        self.finish_batch(number);
    }

    /// Sends the answer to a client request, or keeps it for the batch the request came in.
    fn answer(&mut self, id: &Id, line: Bytes) {
        if self.batch_of.is_empty() {
            self.send_to_client(line);
            return;
        }
        match self.batch_of.remove(id) {
            Some(number) => {
                if let Some(batch) = self.batches.get_mut(&number) {
                    batch.waiting = batch.waiting.saturating_sub(1);
                }
                self.batch_answer(number, line);
                self.finish_batch(number);
            }
            None => self.send_to_client(line),
        }
    }

    fn batch_answer(&mut self, number: u64, line: Bytes) {
        if let Some(batch) = self.batches.get_mut(&number) {
            batch.answers.push(line);
        }
    }

    /// A request that will never be answered (cancelled before it reached the server) no longer
    /// holds up its batch.
    fn batch_forget(&mut self, id: &Id) {
        if let Some(number) = self.batch_of.remove(id) {
            if let Some(batch) = self.batches.get_mut(&number) {
                batch.waiting = batch.waiting.saturating_sub(1);
            }
            self.finish_batch(number);
        }
    }

    /// Sends a batch's answers as one array once nothing in it is outstanding. A batch of
    /// notifications only gets no answer at all.
    fn finish_batch(&mut self, number: u64) {
        if self.batches.get(&number).is_some_and(|b| b.waiting == 0) {
            if let Some(batch) = self.batches.remove(&number) {
                if !batch.answers.is_empty() {
                    let mut out = Vec::with_capacity(batch.answers.iter().map(|a| a.len() + 1).sum::<usize>() + 1);
                    out.push(b'[');
                    for (i, answer) in batch.answers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(answer);
                    }
                    out.push(b']');
                    self.send_to_client(Bytes::from(out));
                }
            }
        }
    }

    /// Records a client request and sends it on, or queues it; answers it at once if it cannot be
    /// taken. The common case, a ready child and nothing queued, skips the queue's bookkeeping.
    fn take_client_request(&mut self, id: Id, method: &str, params: Option<&str>, line: Bytes) {
        let send_now = self.can_send_now();
        if self.accept_client_request(&id, method, params, Some(&line), send_now) {
            if send_now {
                self.send_to_child(line);
            } else {
                let seq = self.seq;
                self.dispatch(Queued { line, requests: smallvec![(id, seq)] });
            }
        }
    }

    /// Whether a client id is taken: by a client request in flight, or by one of mcpvisor's own.
    fn id_in_flight(&self, id: &Id) -> bool {
        self.client_reqs.contains(id) || (!self.own.is_empty() && self.own.contains(id))
    }

    /// The answer to a request that reuses an id in flight. It is never routed by id (that would
    /// reach the request already holding the id), so the caller sends it where it belongs.
    fn duplicate_id_error(&mut self, id: &Id) -> Bytes {
        tracing::warn!(%id, "client reused an id that is still in flight");
        let msg = format!("request id {id} is already in flight; ids must be unique among pending requests");
        self.error_line(Some(id), INVALID_REQUEST, &msg, json!({ "reason": "duplicate_id" }))
    }

    /// Checks and records a client request; answers it at once and returns false if it cannot
    /// be taken.
    fn accept_client_request(
        &mut self,
        id: &Id,
        method: &str,
        params: Option<&str>,
        line: Option<&Bytes>,
        sent: bool,
    ) -> bool {
        if self.id_in_flight(id) {
            let error = self.duplicate_id_error(id);
            self.send_to_client(error);
            return false;
        }
        if let Some(refusal) = self.refusal() {
            self.reply_refusal(id, refusal);
            return false;
        }
        self.session.on_client_request(id, method, params);
        self.metrics.requests += 1;
        self.seq += 1;
        let now = self.now;
        self.client_reqs.insert(
            id.clone(),
            ClientRequest {
                method: method.into(),
                line: line.filter(|_| self.may_resend(method)).map(retained),
                seq: self.seq,
                received: now,
                deadline: self.cfg.request_timeout.map(|t| now + t),
                sent,
            },
        );
        true
    }

    fn on_client_notification(&mut self, method: &str, params: Option<&str>, line: &Bytes) {
        self.session.on_client_notification(method);
        if method == "notifications/cancelled" {
            if let Some(target) = Params::read(params).request_id() {
                // A cancelled request gets no answer, so its batch stops waiting for one.
                let removed = self.client_reqs.remove(&target);
                if removed.is_some() {
                    self.batch_forget(&target);
                }
                if removed.is_some_and(|req| !req.sent) {
                    tracing::debug!(id = %target, "client cancelled a request that had not reached the server");
                    return;
                }
            }
        }
        if matches!(self.state, ChildState::Failed { .. }) {
            tracing::warn!(method, "server is failed; client notification dropped");
            return;
        }
        self.dispatch(Queued { line: line.clone(), requests: SmallVec::new() });
    }

    fn on_client_response(&mut self, id: &Id, line: &Bytes) {
        if self.server_reqs.remove(id).is_some() {
            self.send_to_child(line.clone());
        } else if self.orphaned_server_reqs.remove(id) {
            tracing::debug!(%id, "dropping the client's late answer to a request from a server process that is gone");
        } else {
            tracing::debug!(%id, "client answered an unknown request; forwarding it");
            self.dispatch(Queued { line: line.clone(), requests: SmallVec::new() });
        }
    }

    /// Whether a client message can go to the child at once (not queued behind a restart, nor
    /// over `--max-inflight`).
    fn can_send_now(&self) -> bool {
        self.child_ready() && self.queue.is_empty() && self.below_max_inflight()
    }

    fn child_ready(&self) -> bool {
        matches!(self.state, ChildState::Up { phase: Phase::Ready, .. }) && self.restart.is_none()
    }

    fn below_max_inflight(&self) -> bool {
        self.cfg.max_inflight.map_or(true, |max| self.client_reqs.awaiting_child() < max)
    }

    /// Sends a client message to the child now, or queues it (while the child restarts, or over
    /// `--max-inflight`).
    fn dispatch(&mut self, item: Queued) {
        if self.can_send_now() {
            self.deliver(item);
        } else if self.queue.len() < self.cfg.queue_limit {
            self.queue.push_back(item);
        } else {
            tracing::warn!(limit = self.cfg.queue_limit, "restart queue is full; message refused");
            for (id, seq) in item.requests {
                if self.take_if_current(&id, seq).is_some() {
                    let msg = format!(
                        "MCP server is restarting and {} messages are already waiting (mcpvisor --queue-limit); retry later",
                        self.cfg.queue_limit
                    );
                    self.reply_error(Some(&id), INTERNAL_ERROR, &msg, json!({ "reason": "queue_full" }));
                }
            }
        }
    }

    fn deliver(&mut self, item: Queued) {
        if !item.requests.is_empty() && !item.requests.iter().any(|(id, seq)| self.is_current(id, *seq)) {
            return; // every request in it was cancelled or timed out while it waited
        }
        for (id, seq) in &item.requests {
            self.client_reqs.mark_sent(id, *seq);
        }
        self.send_to_child(item.line);
    }

    /// Sends queued messages in order, as far as `--max-inflight` allows.
    fn flush_queue(&mut self) {
        while self.queue.front().is_some_and(|item| item.requests.is_empty() || self.below_max_inflight()) {
            if let Some(item) = self.queue.pop_front() {
                self.deliver(item);
            }
        }
    }

    fn is_current(&self, id: &Id, seq: u64) -> bool {
        self.client_reqs.get(id).is_some_and(|r| r.seq == seq)
    }

    fn take_if_current(&mut self, id: &Id, seq: u64) -> Option<ClientRequest> {
        if self.is_current(id, seq) {
            self.client_reqs.remove(id)
        } else {
            None
        }
    }

    fn send_to_child(&mut self, line: Bytes) {
        if let Some(stdin) = &self.child_in {
            if stdin.send(line) {
                self.metrics.messages_to_server += 1;
            }
        }
    }

    // ----- child → client -----------------------------------------------------------------

    fn on_child_frame(&mut self, frame: Frame) {
        self.liveness.last_output = Some(self.now);
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Oversized { len, head } => {
                self.metrics.oversized_messages += 1;
                tracing::warn!(len, "server wrote a line over --max-message-size; dropped: {}", preview(&head));
                if let Some(id) = jsonrpc::sniff_id(&head) {
                    if let Some(req) = self.client_reqs.remove(&id) {
                        let msg = format!(
                            "the MCP server's response to {} was {len} bytes, over the limit of {} bytes (mcpvisor --max-message-size)",
                            req.method, self.cfg.max_message_size
                        );
                        self.reply_error(
                            Some(&id),
                            INTERNAL_ERROR,
                            &msg,
                            json!({ "reason": "response_too_large", "size": len }),
                        );
                    }
                }
                return;
            }
        };
        match jsonrpc::parse(&line) {
            Ok(Message::Single(env)) => match env.kind {
                Kind::Response { id, is_error } => self.on_child_response(&id, is_error, env.result, line.clone()),
                Kind::Request { id, method } => {
                    self.orphaned_server_reqs.remove(&id);
                    self.server_reqs.insert(id, ServerRequest { method });
                    self.send_to_client(line.clone());
                }
                Kind::Notification { .. } => self.send_to_client(line.clone()),
                Kind::Invalid { id, .. } => self.divert(&line, id),
            },
            Ok(Message::Batch(items)) => {
                if items.iter().all(|e| matches!(e.kind, Kind::Invalid { .. })) {
                    self.divert(&line, None);
                    return;
                }
                for env in items {
                    match env.kind {
                        Kind::Response { id, .. } => {
                            self.client_reqs.remove(&id);
                        }
                        Kind::Request { id, method } => {
                            self.server_reqs.insert(id, ServerRequest { method });
                        }
                        _ => {}
                    }
                }
                self.send_to_client(line.clone());
            }
            Err(_) => {
                // A broken response must not leave its request hanging: if it names one, fail it.
                let id = (line.first() == Some(&b'{')).then(|| jsonrpc::sniff_id(&line)).flatten();
                self.divert(&line, id);
            }
        }
    }

    fn on_child_response(&mut self, id: &Id, is_error: bool, result: Option<&str>, line: Bytes) {
        if let Some(purpose) = self.own.take(id) {
            self.on_own_response(purpose, is_error, result);
            return;
        }
        match self.client_reqs.remove(id) {
            Some(req) => {
                if !is_error {
                    self.session.on_child_result(id, &req.method, result);
                }
                self.metrics.latency.observe(self.now.saturating_duration_since(req.received));
                self.answer(id, line);
            }
            None => {
                tracing::debug!(%id, "dropping a server response with no request in flight (answered, cancelled or timed out)")
            }
        }
    }

    fn on_own_response(&mut self, purpose: OwnPurpose, is_error: bool, result: Option<&str>) {
        match purpose {
            OwnPurpose::Probe(sent) => {
                let latency = sent.elapsed();
                tracing::debug!(latency_ms = latency.as_millis() as u64, "liveness probe answered");
                self.liveness = Liveness {
                    last_output: Some(Instant::now()),
                    probe_deadline: None,
                    misses: 0,
                    last_latency: Some(latency),
                };
            }
            OwnPurpose::ReplayInitialize => {
                if is_error {
                    let detail = result.unwrap_or_default().to_owned();
                    tracing::warn!("the new server refused the replayed initialize: {detail}");
                    self.crash(Cause::RebuildFailed(format!("initialize refused: {detail}")));
                    return;
                }
                if let Some(diff) = self.session.compare_initialize_result(result) {
                    tracing::warn!("the restarted server differs from the one the client initialized: {diff}");
                }
                let (own, reqs) = (&mut self.own, &self.client_reqs);
                let followups = self.session.replay_after_initialize(|| own.issue(OwnPurpose::Replay, reqs));
                for line in followups {
                    self.send_to_child(line);
                }
                tracing::info!(generation = self.generation, "session rebuilt on the new server");
                self.become_ready(true);
            }
            OwnPurpose::Replay => {
                if is_error {
                    tracing::warn!("the new server refused a replayed call: {}", result.unwrap_or(""));
                }
            }
        }
    }

    fn send_to_client(&mut self, line: Bytes) {
        if self.client_out.send(line) {
            self.metrics.messages_to_client += 1;
        }
    }

    /// Logs a child stdout line that is not valid JSON-RPC instead of forwarding it. If it names a
    /// request the client is waiting for (a malformed response), the client gets an error.
    fn divert(&mut self, line: &[u8], id: Option<Id>) {
        self.metrics.diverted_stdout_lines += 1;
        tracing::warn!(
            target: "mcpvisor::child",
            generation = self.generation,
            "stdout (not JSON-RPC, diverted): {}",
            preview(line)
        );
        if let Some(req) = id.and_then(|id| self.client_reqs.remove(&id).map(|r| (id, r))) {
            let (id, req) = req;
            let msg = format!("the MCP server sent an invalid response to {} (not valid JSON-RPC)", req.method);
            self.reply_error(Some(&id), INTERNAL_ERROR, &msg, json!({ "reason": "invalid_response" }));
        }
    }

    fn reply_error(&mut self, id: Option<&Id>, code: i64, message: &str, data: serde_json::Value) {
        let line = self.error_line(id, code, message, data);
        match id {
            Some(id) => self.answer(id, line),
            None => self.send_to_client(line),
        }
    }

    /// An error response of mcpvisor's own (`data.source = "mcpvisor"`), counted by its reason.
    fn error_line(&mut self, id: Option<&Id>, code: i64, message: &str, mut data: serde_json::Value) -> Bytes {
        data["source"] = json!("mcpvisor");
        let reason = data["reason"].as_str().unwrap_or("other").to_owned();
        *self.metrics.errors.entry(reason).or_default() += 1;
        jsonrpc::error_response(id, code, message, Some(data))
    }

    // ----- liveness ----------------------------------------------------------------------

    /// `--max-memory`: a server whose process group holds more is stopped and restarted.
    fn check_memory(&mut self, now: Instant) {
        let (Some(at), Some(limit)) = (self.memory_check_at, self.cfg.max_memory) else { return };
        if now < at {
            return;
        }
        self.memory_check_at = Some(now + MEMORY_CHECK);
        let ChildState::Up { child, .. } = &self.state else { return };
        let rss = crate::child::group_rss_bytes(child.pid);
        if rss > limit as u64 {
            tracing::warn!(
                generation = self.generation,
                rss_mib = rss >> 20,
                limit_mib = limit >> 20,
                "server is over --max-memory; restarting it"
            );
            self.memory_check_at = None;
            self.crash(Cause::Memory(rss));
        }
    }

    fn liveness_deadline(&self) -> Option<Instant> {
        let interval = self.cfg.ping_interval?;
        if !matches!(self.state, ChildState::Up { phase: Phase::Ready, .. }) || !self.session.established() {
            return None;
        }
        self.liveness.probe_deadline.or_else(|| self.liveness.last_output.map(|t| t + interval))
    }

    fn check_liveness(&mut self, now: Instant) {
        let Some(deadline) = self.liveness_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        if self.liveness.probe_deadline.is_some() {
            self.liveness.misses += 1;
            tracing::warn!(misses = self.liveness.misses, of = self.cfg.ping_failures, "liveness probe unanswered");
            if self.liveness.misses >= self.cfg.ping_failures {
                tracing::error!(
                    "server is hung: {} probes in a row went unanswered; restarting it",
                    self.liveness.misses
                );
                self.crash(Cause::Hung);
                return;
            }
        }
        let id = self.own.issue(OwnPurpose::Probe(now), &self.client_reqs);
        if let Some(probe) = self.session.probe(&id) {
            self.send_to_child(probe);
            self.liveness.probe_deadline = Some(now + self.cfg.ping_timeout);
        }
    }

    // ----- the child's life --------------------------------------------------------------

    fn spawn_child(&mut self) -> Result<Child, SpawnError> {
        self.generation += 1;
        self.stdout_closed_deadline = None;
        let (child, stdin, stdout) = Child::spawn(
            &self.cfg.spec,
            self.generation,
            self.cfg.max_message_size,
            self.cfg.stop,
            self.tail.clone(),
            self.exits_tx.clone(),
        )?;
        tracing::info!(generation = self.generation, pid = child.pid, command = %self.cfg.spec.display(), "server started");
        self.child_in = Some(stdin);
        self.child_out = Some(stdout);
        self.liveness = Liveness { last_output: Some(Instant::now()), ..Liveness::default() };
        self.memory_check_at = self.cfg.max_memory.map(|_| Instant::now() + MEMORY_CHECK);
        Ok(child)
    }

    /// Starts a new child after a crash (`counted`) or an operator restart, and rebuilds the
    /// session on it.
    fn restart_child(&mut self, counted: bool) {
        if counted {
            self.policy.record_restart(Instant::now());
        }
        self.metrics.restarts += 1;
        match self.spawn_child() {
            Ok(child) => {
                self.last_spawn_error = None;
                let replay = self.session.needs_handshake_replay();
                let phase = if replay {
                    let id = self.own.issue(OwnPurpose::ReplayInitialize, &self.client_reqs);
                    let deadline = Instant::now() + self.rebuild_timeout();
                    if let Some(line) = self.session.replay_initialize(&id) {
                        if let Some(stdin) = &self.child_in {
                            stdin.send(line);
                        }
                    }
                    Phase::Rebuilding { deadline }
                } else {
                    Phase::Ready
                };
                self.state = ChildState::Up { child, phase };
                if !replay {
                    self.become_ready(self.session.has_started());
                }
            }
            Err(e) => {
                tracing::error!("cannot restart the server: {e}");
                self.last_spawn_error = Some(e.to_string());
                self.state = ChildState::Gone;
                self.after_child_gone(StopWhy::Crashed(Cause::SpawnFailed(e.to_string())), None, Duration::ZERO);
            }
        }
    }

    fn rebuild_timeout(&self) -> Duration {
        (self.cfg.ping_timeout * self.cfg.ping_failures).max(Duration::from_secs(30))
    }

    /// The child can take client traffic: re-send what must be re-sent, then the queue.
    fn become_ready(&mut self, rebuilt: bool) {
        if let ChildState::Up { phase, .. } = &mut self.state {
            *phase = Phase::Ready;
        }
        if self.restart.is_some() {
            return;
        }
        self.flush_queue();
        if rebuilt {
            for note in self.session.list_changed_notifications() {
                self.send_to_client(note);
            }
        }
    }

    fn on_child_exit(&mut self, exit: ChildExit) {
        if exit.generation != self.generation {
            return;
        }
        let now = Instant::now();
        let level_warn = !matches!(self.state, ChildState::Stopping { .. });
        if level_warn {
            tracing::warn!(generation = exit.generation, "server exited unexpectedly: {}", exit.exit);
        } else {
            tracing::info!(generation = exit.generation, "server stopped: {}", exit.exit);
        }
        self.last_exit = Some(exit.exit);
        let state = std::mem::replace(&mut self.state, ChildState::Gone);
        self.state = match state {
            ChildState::Up { child, .. } => ChildState::Stopping {
                child,
                why: StopWhy::Crashed(Cause::Exited),
                exit: Some(exit.exit),
                drain_until: Some(now + STDOUT_DRAIN),
            },
            ChildState::Stopping { child, why, .. } => {
                ChildState::Stopping { child, why, exit: Some(exit.exit), drain_until: Some(now + STDOUT_DRAIN) }
            }
            other => other,
        };
        self.child_in = None;
    }

    fn on_child_stdout_closed(&mut self, err: Option<io::Error>) {
        self.child_out = None;
        if let Some(e) = err {
            tracing::warn!("reading the server's stdout failed: {e}");
        }
        if matches!(self.state, ChildState::Up { .. }) {
            tracing::debug!(generation = self.generation, "server closed its stdout");
            self.stdout_closed_deadline = Some(Instant::now() + STDOUT_DRAIN);
        }
    }

    /// The child is no longer usable: answer what it owed, then stop it.
    fn crash(&mut self, cause: Cause) {
        self.settle_inflight(&cause, None);
        self.stop_child(StopWhy::Crashed(cause));
    }

    fn stop_child(&mut self, why: StopWhy) {
        let state = std::mem::replace(&mut self.state, ChildState::Gone);
        self.state = match state {
            ChildState::Up { mut child, .. } => {
                self.child_in = None;
                if self.forced {
                    child.kill();
                } else {
                    child.stop();
                }
                ChildState::Stopping { child, why, exit: None, drain_until: None }
            }
            other => other,
        };
    }

    /// The child has exited and its stdout is drained (or the drain deadline passed).
    /// With no server running, anything still parented to mcpvisor escaped a server's group.
    fn reap_orphans(&mut self) {
        let killed = crate::child::kill_orphans();
        if !killed.is_empty() {
            tracing::warn!(
                generation = self.generation,
                ?killed,
                "killed processes the server left behind outside its process group"
            );
        }
    }

    fn finish_stop(&mut self) {
        let ChildState::Stopping { child, why, exit, .. } = std::mem::replace(&mut self.state, ChildState::Gone) else {
            return;
        };
        self.child_out = None;
        let uptime = child.uptime();
        drop(child);
        self.after_child_gone(why, exit, uptime);
    }

    fn after_child_gone(&mut self, why: StopWhy, exit: Option<ExitInfo>, uptime: Duration) {
        self.own.clear();
        self.reap_orphans();
        self.last_end = Some((
            Instant::now(),
            match &why {
                StopWhy::Crashed(cause) => cause.key(),
                StopWhy::Restart | StopWhy::Shutdown => "stopped",
            },
        ));
        if let StopWhy::Crashed(cause) = &why {
            let label = match (cause, exit) {
                (Cause::Exited, Some(ExitInfo::Signal { .. })) => "signal",
                (Cause::Exited, _) => "exit_code",
                (Cause::Hung, _) => "hung",
                (Cause::StdoutClosed, _) => "stdout_closed",
                (Cause::RebuildFailed(_), _) => "rebuild_failed",
                (Cause::SpawnFailed(_), _) => "spawn_failure",
                (Cause::Memory(_), _) => "memory",
            };
            *self.metrics.crashes.entry(label).or_default() += 1;
        }
        self.liveness = Liveness { last_latency: self.liveness.last_latency, ..Liveness::default() };
        if self.shutdown.is_some() || self.client_eof {
            self.settle_for_exit("MCP server stopped because mcpvisor is shutting down");
            self.exit_code.get_or_insert(exit_code::CLEAN);
            return;
        }
        match why {
            StopWhy::Shutdown => {
                self.exit_code.get_or_insert(exit_code::CLEAN);
            }
            StopWhy::Restart => {
                self.settle_inflight(&Cause::Exited, exit);
                tracing::info!("starting a new server (requested restart)");
                self.restart_child(false);
            }
            StopWhy::Crashed(cause) => {
                // A crash overtakes a pending graceful restart: the new child is the restart.
                self.restart = None;
                // Requests still owed are answered now (for an exit, after stdout was drained).
                self.settle_inflight(&cause, exit);
                let now = Instant::now();
                match self.policy.on_exit(now, uptime) {
                    Decision::RestartAfter(delay) => {
                        tracing::info!("restarting the server in {}", fmt_duration(delay));
                        self.state = ChildState::Backoff { until: now + delay };
                    }
                    Decision::Failed { until } => {
                        self.metrics.restart_limit_hits += 1;
                        let cfg = self.policy.config();
                        tracing::error!(
                            "server crashed {} times within {}: restart limit reached; {}",
                            cfg.max_restarts,
                            fmt_duration(cfg.window),
                            if self.cfg.on_failure == OnFailure::Exit {
                                "exiting (--on-failure exit)".to_owned()
                            } else {
                                format!("next attempt in {}", fmt_duration(until - now))
                            }
                        );
                        self.state = ChildState::Failed { until };
                        if self.cfg.on_failure == OnFailure::Exit {
                            self.settle_for_exit("MCP server keeps crashing; mcpvisor gave up (restart limit reached)");
                            self.exit_code = Some(exit_code::RESTART_LIMIT);
                        } else {
                            self.refuse_queue();
                        }
                    }
                }
            }
        }
    }

    /// Whether a request with this method is re-sent to a new child if the current one dies with it.
    /// Only those keep their line while in flight.
    fn may_resend(&self, method: &str) -> bool {
        inflight::always_resent(method) || (self.cfg.retry && inflight::is_safe_to_repeat(method))
    }

    /// Answers or re-queues client requests the child was working on, and cancels the requests
    /// the child had sent to the client.
    fn settle_inflight(&mut self, cause: &Cause, exit: Option<ExitInfo>) {
        let mut requeue = Vec::new();
        // The same error for every request the child took down with it.
        let mut error: Option<(String, serde_json::Value)> = None;
        for (id, req) in self.client_reqs.take_sent() {
            match (&req.line, self.may_resend(&req.method)) {
                (Some(line), true) => {
                    tracing::info!(%id, method = &*req.method, "request will be re-sent to the new server");
                    requeue.push(Queued { line: line.clone(), requests: smallvec![(id.clone(), req.seq)] });
                    self.client_reqs.insert(id, ClientRequest { sent: false, ..req });
                }
                _ => {
                    let (msg, data) = match &error {
                        Some(e) => e.clone(),
                        None => error.insert(self.crash_error(cause, exit)).clone(),
                    };
                    self.reply_error(Some(&id), INTERNAL_ERROR, &msg, data);
                }
            }
        }
        for item in requeue.into_iter().rev() {
            self.queue.push_front(item);
        }
        for (id, req) in std::mem::take(&mut self.server_reqs) {
            tracing::debug!(%id, method = &*req.method, "cancelling the server's request to the client: the server is gone");
            self.send_to_client(jsonrpc::cancelled(&id, "the MCP server restarted"));
            self.orphaned_server_reqs.insert(id);
        }
        self.own.clear();
    }

    fn crash_error(&mut self, cause: &Cause, exit: Option<ExitInfo>) -> (String, serde_json::Value) {
        let what = match (cause, exit) {
            (Cause::Hung, _) => "stopped answering (hung)".to_owned(),
            (Cause::StdoutClosed, _) => "closed its stdout".to_owned(),
            (Cause::RebuildFailed(d), _) => format!("could not be re-initialized ({d})"),
            (Cause::SpawnFailed(d), _) => format!("could not be started ({d})"),
            (Cause::Memory(bytes), _) => format!(
                "used {} MiB of memory, over the limit of {} MiB (mcpvisor --max-memory)",
                bytes >> 20,
                self.cfg.max_memory.unwrap_or_default() >> 20
            ),
            (Cause::Exited, Some(exit)) => format!("crashed ({exit})"),
            (Cause::Exited, None) => "crashed".to_owned(),
        };
        let now = Instant::now();
        let msg = format!("MCP server {what}; mcpvisor is restarting it. The request was not completed; retry it.");
        let data = json!({
            "reason": "server_crashed",
            "cause": cause.key(),
            "exit": exit.map(ExitInfo::to_json),
            "stderr": tail_lines(&self.tail, ERROR_STDERR_LINES),
            "restarts_in_window": self.policy.restarts_in_window(now),
            "generation": self.generation,
        });
        (msg, data)
    }

    /// Why a new request cannot be taken right now, if it cannot.
    fn refusal(&self) -> Option<Refusal> {
        if self.shutdown.is_some() || self.client_eof {
            return Some(Refusal::ShuttingDown);
        }
        if let ChildState::Failed { until } = self.state {
            return Some(Refusal::Failed { until });
        }
        None
    }

    fn reply_refusal(&mut self, id: &Id, refusal: Refusal) {
        let (msg, data) = match refusal {
            Refusal::ShuttingDown => (
                "mcpvisor is shutting down; the request was not delivered to the MCP server".to_owned(),
                json!({ "reason": "shutting_down" }),
            ),
            Refusal::Failed { until } => self.failed_error(until),
        };
        self.reply_error(Some(id), INTERNAL_ERROR, &msg, data);
    }

    fn failed_error(&mut self, until: Instant) -> (String, serde_json::Value) {
        let now = Instant::now();
        let retry_in = until.saturating_duration_since(now);
        let count = self.policy.restarts_in_window(now);
        let window = self.policy.config().window;
        let last = match (&self.last_spawn_error, self.last_exit) {
            (Some(e), _) => e.clone(),
            (None, Some(exit)) => exit.to_string(),
            (None, None) => "unknown".to_owned(),
        };
        let msg = format!(
            "MCP server is down: it kept failing after {count} restarts within {} (mcpvisor --max-restarts {}); last failure: {last}. \
             mcpvisor will try to start it again in {}.",
            fmt_duration(window),
            self.policy.config().max_restarts,
            fmt_duration(retry_in)
        );
        let data = json!({
            "reason": "restart_limit",
            "restarts_in_window": count,
            "window_secs": window.as_secs(),
            "last_exit": self.last_exit.map(ExitInfo::to_json),
            "spawn_error": self.last_spawn_error,
            "stderr": tail_lines(&self.tail, ERROR_STDERR_LINES),
            "retry_in_ms": retry_in.as_millis() as u64,
        });
        (msg, data)
    }

    /// Answers everything queued with the Failed error.
    fn refuse_queue(&mut self) {
        let ChildState::Failed { until } = self.state else {
            return;
        };
        for item in std::mem::take(&mut self.queue) {
            for (id, seq) in item.requests {
                if self.take_if_current(&id, seq).is_some() {
                    let (msg, data) = self.failed_error(until);
                    self.reply_error(Some(&id), INTERNAL_ERROR, &msg, data);
                }
            }
        }
    }

    /// Answers every pending client request before exiting.
    fn settle_for_exit(&mut self, message: &str) {
        self.queue.clear();
        for (id, req) in self.client_reqs.take_all() {
            if &*req.method == inflight::LISTEN && self.client_eof {
                continue;
            }
            self.reply_error(Some(&id), INTERNAL_ERROR, message, json!({ "reason": "shutting_down" }));
        }
    }

    // ----- control socket ----------------------------------------------------------------

    fn on_control(&mut self, command: ControlCommand) -> Response {
        match command {
            ControlCommand::Status => Response { status: Some(Box::new(self.status())), ..Response::ok() },
            ControlCommand::Restart => {
                if self.shutdown.is_some() {
                    return Response::error("mcpvisor is shutting down");
                }
                if matches!(self.state, ChildState::Failed { .. }) {
                    tracing::info!("restart requested over the control socket: clearing the Failed state");
                    self.policy.reset();
                }
                self.request_restart("restart requested over the control socket");
                Response { message: Some("restarting the server".into()), ..Response::ok() }
            }
            ControlCommand::Stop => {
                tracing::info!("stop requested over the control socket: draining and shutting down");
                self.begin_shutdown("control: stop");
                Response { message: Some("draining and stopping".into()), ..Response::ok() }
            }
            ControlCommand::Logs { lines } => Response { lines: Some(tail_lines(&self.tail, lines)), ..Response::ok() },
            ControlCommand::Metrics => {
                let status = self.status();
                Response { metrics: Some(crate::metrics::render(&self.metrics, &status)), ..Response::ok() }
            }
        }
    }

    /// The operator's view of this instance.
    /// The server's state as `status` and systemd show it.
    fn public_state(&self) -> status::State {
        if self.shutdown.is_some() {
            return status::State::Draining;
        }
        match &self.state {
            ChildState::Up { phase: Phase::Ready, .. } if self.session.handshake_in_progress() => {
                status::State::Starting
            }
            ChildState::Up { phase: Phase::Ready, .. } => status::State::Ready,
            ChildState::Up { phase: Phase::Rebuilding { .. }, .. } => status::State::Restarting,
            ChildState::Stopping { why: StopWhy::Shutdown, .. } | ChildState::Gone => status::State::Draining,
            ChildState::Stopping { .. } => status::State::Restarting,
            ChildState::Backoff { .. } => status::State::Backoff,
            ChildState::Failed { .. } => status::State::Failed,
        }
    }

    fn child_pid(&self) -> Option<u32> {
        match &self.state {
            ChildState::Up { child, .. } | ChildState::Stopping { child, .. } => Some(child.pid),
            _ => None,
        }
    }

    pub fn status(&mut self) -> Status {
        let now = Instant::now();
        let state = self.public_state();
        let child = match &self.state {
            ChildState::Up { child, .. } | ChildState::Stopping { child, .. } => Some(status::ChildStatus {
                pid: child.pid,
                generation: child.generation,
                uptime_secs: child.uptime().as_secs_f64(),
            }),
            _ => None,
        };
        let next_restart_in_secs = match self.state {
            ChildState::Backoff { until } | ChildState::Failed { until } => {
                Some(until.saturating_duration_since(now).as_secs_f64())
            }
            _ => None,
        };
        let last_exit = self.last_end.map(|(at, cause)| status::LastExit {
            description: match (cause, self.last_exit, &self.last_spawn_error) {
                ("spawn_failed", _, Some(e)) => e.clone(),
                ("hung", _, _) => "hung (liveness probes unanswered)".into(),
                ("memory", _, _) => "over --max-memory".into(),
                (_, Some(exit), _) => exit.to_string(),
                _ => cause.replace('_', " "),
            },
            code: match self.last_exit {
                Some(ExitInfo::Code(c)) => Some(c),
                _ => None,
            },
            signal: match self.last_exit {
                Some(ExitInfo::Signal { signal, .. }) => Some(signal.as_str().to_owned()),
                _ => None,
            },
            cause: cause.to_owned(),
            ago_secs: now.saturating_duration_since(at).as_secs_f64(),
        });
        let (server_name, server_version) = self.session.server_info();
        let window = self.policy.config().window;
        let stderr_lines = self.tail.lock().map(|t| t.total()).unwrap_or(0);
        Status {
            name: self.name.clone(),
            mcpvisor_version: env!("CARGO_PKG_VERSION").to_owned(),
            mcpvisor_pid: std::process::id(),
            command: std::iter::once(&self.cfg.spec.program)
                .chain(&self.cfg.spec.args)
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env_keys: self.cfg.spec.env.iter().map(|var| var.key.to_string_lossy().into_owned()).collect(),
            state,
            child,
            restarts: status::Restarts {
                in_window: self.policy.restarts_in_window(now),
                window_secs: window.as_secs(),
                limit: self.policy.config().max_restarts,
                total: self.metrics.restarts,
                oldest_leaves_in_secs: self.policy.oldest_leaves(now).map(|d| d.as_secs_f64()),
            },
            last_exit,
            next_restart_in_secs,
            in_flight: self.client_reqs.awaiting_child(),
            queued: self.queue.len(),
            last_ping_ms: self.liveness.last_latency.map(|d| d.as_secs_f64() * 1000.0),
            messages_to_server: self.metrics.messages_to_server,
            messages_to_client: self.metrics.messages_to_client,
            diverted_stdout_lines: self.metrics.diverted_stdout_lines,
            stderr_lines,
            protocol: status::Protocol {
                era: self.session.era().as_str().to_owned(),
                version: self.session.protocol_version(),
                server_name,
                server_version,
            },
            stderr_tail: if state == status::State::Ready { Vec::new() } else { tail_lines(&self.tail, 10) },
        }
    }

    // ----- shutdown and restart requests --------------------------------------------------

    fn begin_shutdown(&mut self, why: &str) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::debug!("shutdown: {why}");
        // Queued messages never reached the server: answer them now.
        for item in std::mem::take(&mut self.queue) {
            for (id, seq) in item.requests {
                if self.take_if_current(&id, seq).is_some() {
                    self.reply_refusal(&id, Refusal::ShuttingDown);
                }
            }
        }
        self.restart = None;
        match self.state {
            ChildState::Up { .. } if !self.client_gone => {
                self.shutdown = Some(Shutdown::Draining { deadline: Instant::now() + self.cfg.drain_timeout });
            }
            ChildState::Up { .. } | ChildState::Stopping { .. } => self.stop_for_shutdown(),
            _ => {
                self.shutdown = Some(Shutdown::Stopping);
                self.settle_for_exit("mcpvisor is shutting down");
                self.exit_code.get_or_insert(exit_code::CLEAN);
            }
        }
    }

    fn stop_for_shutdown(&mut self) {
        self.shutdown = Some(Shutdown::Stopping);
        if self.client_reqs.awaiting_child() > 0 {
            tracing::warn!(
                pending = self.client_reqs.awaiting_child(),
                "drain timeout: answering unfinished requests with an error"
            );
        }
        self.settle_for_exit("MCP server stopped because mcpvisor is shutting down");
        match self.state {
            ChildState::Up { .. } => self.stop_child(StopWhy::Shutdown),
            ChildState::Stopping { .. } => {}
            _ => {
                self.exit_code.get_or_insert(exit_code::CLEAN);
            }
        }
    }

    fn force_exit(&mut self) {
        self.forced = true;
        self.settle_for_exit("mcpvisor is shutting down");
        self.shutdown = Some(Shutdown::Stopping);
        match &mut self.state {
            ChildState::Up { .. } => self.stop_child(StopWhy::Shutdown),
            ChildState::Stopping { child, .. } => child.kill(),
            _ => {
                self.exit_code.get_or_insert(exit_code::CLEAN);
            }
        }
    }

    fn request_restart(&mut self, why: &str) {
        if self.shutdown.is_some() {
            return;
        }
        match self.state {
            ChildState::Up { .. } => {
                tracing::info!("{why}: restarting the server gracefully (in-flight requests first)");
                self.restart = Some(RestartRequest { deadline: Instant::now() + self.cfg.drain_timeout });
            }
            ChildState::Backoff { .. } | ChildState::Failed { .. } => {
                tracing::info!("{why}: starting the server now");
                self.restart_child(false);
            }
            _ => tracing::info!("{why}: a restart is already under way"),
        }
    }
}

enum Refusal {
    ShuttingDown,
    Failed { until: Instant },
}

async fn next_frame(reader: &mut Option<FramedReader<pipe::Receiver>>) -> io::Result<Option<Frame>> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// A request line kept for re-sending. A small line is copied: sharing it would keep the whole
/// read buffer it was cut from (64 KiB or more) alive for as long as the request is in flight.
fn retained(line: &Bytes) -> Bytes {
    if line.len() < 16 * 1024 {
        Bytes::copy_from_slice(line)
    } else {
        line.clone()
    }
}

async fn recv_control(control: &mut Option<Control>) -> Option<ControlCall> {
    match control {
        Some(c) => c.calls.recv().await,
        None => std::future::pending().await,
    }
}

async fn drained(outbox: Option<&Outbox>) {
    match outbox {
        Some(o) => o.drained().await,
        None => std::future::pending().await,
    }
}

fn fmt_duration(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(rounded).to_string()
}

/// A loggable excerpt of a line that may be long or not UTF-8.
fn preview(line: &[u8]) -> String {
    let cut = &line[..line.len().min(DIVERTED_LOG_BYTES)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > cut.len() {
        s.push_str(&format!("… [{} bytes]", line.len()));
    }
    s
}
