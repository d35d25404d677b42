//! An instance: one supervised server and the one client port it serves, driven by one task.
//!
//! The instance owns everything per server and nothing per process: the server's generations
//! and their [`Lifecycle`], liveness, the in-flight tables, batches, the queue and the session
//! record that rebuilds the client's session on a new server. It is handed what it needs from
//! the process that hosts it ([`Services`]: a [`Scope`] of the reaper, an optional channel for
//! its state summary) and is driven through its [`InstanceHandle`]. It never installs signal
//! handlers, never talks to systemd and never listens on a socket: that is the app's job.
//!
//! Its loop waits for the next event (client frames, server frames, server exits, calls, one
//! timer for every deadline), handles it, then lets the lifecycle move on (finishing stops,
//! drains and restarts). The handlers are split by where the event comes from:
//! [`client`](self::client) (client → server), [`server`](self::server) (server → client),
//! [`generation`](self::generation) (starting, stopping and replacing the server),
//! [`requests`](self::requests) (calls and shutdown), [`standby`](self::standby) (spare
//! processes, `--standby`) and [`status`](self::status) (the snapshot).

mod client;
mod generation;
pub mod handle;
mod requests;
mod server;
mod standby;
mod status;

use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Sleep};

use crate::config::InstanceConfig;
use crate::io::Outbox;
use crate::lifecycle::history::RestartHistory;
use crate::lifecycle::liveness::Liveness;
use crate::lifecycle::standby::Standby;
use crate::lifecycle::Lifecycle;
use crate::observe::metrics::Metrics;
use crate::observe::status::State;
use crate::port::{ClientInput, ClientPort};
use crate::process::{Child, ChildExit, Pipes, Scope, SharedTail, SpawnError};
use crate::protocol::framing::{Frame, FramedReader, Lent};
use crate::protocol::json_scan::Fields;
use crate::relay::batch::Batches;
use crate::relay::inflight::{ClientTable, Epoch, IdMap, IdSet, OwnIds, ServerRequest};
use crate::relay::queue::Queue;
use crate::relay::session::Session;
pub use handle::{Call, CallError, Command, InstanceHandle, Reply};

/// How many already-buffered lines are handled in one go before other events get a turn.
const BATCH: usize = 256;
/// How often the server's memory is measured when `--max-memory` is set.
const MEMORY_CHECK: Duration = Duration::from_secs(1);
/// How long the last answers may take to reach the client once the instance has ended.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// What the hosting process gives an instance.
pub struct Services {
    /// Where its servers are registered, and their orphans swept.
    pub scope: Scope,
    /// Where its servers' stderr lines are kept (shared by the instances of one daemon server).
    pub tail: SharedTail,
    /// The restarts counted against the limit (shared likewise).
    pub history: RestartHistory,
}

impl Services {
    /// Services of their own for a lone instance in `scope`.
    pub fn alone(scope: Scope) -> Services {
        Services { scope, tail: SharedTail::default(), history: RestartHistory::default() }
    }
}

/// The few facts about an instance that its host reports on its behalf (systemd's STATUS line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub state: State,
    pub pid: Option<u32>,
    pub restarts_in_window: usize,
    /// The current server process has written a protocol message: it is up and talking.
    pub talking: bool,
}

/// Where a server's processes report their exits to the instance that owns them.
pub type Exits = (mpsc::UnboundedSender<ChildExit>, mpsc::UnboundedReceiver<ChildExit>);

/// A server process started before its instance, with the channel it reports its exit on.
pub struct Started {
    pub child: Child,
    pub pipes: Pipes,
    pub exits: Exits,
}

/// The first server process could not be started; the client port is handed back (so that
/// the client can still be told why).
pub struct StartFailed<I> {
    pub error: SpawnError,
    pub port: ClientPort<I>,
}

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client left, or a stop was asked for.
    Stopped,
    /// The restart limit was reached with `--on-failure exit`.
    GaveUp,
}

/// The client port's two halves and what is known about the client.
struct ClientSide<I> {
    input: I,
    output: Outbox,
    writer: Option<JoinHandle<()>>,
    /// Its input has ended: nothing more will come.
    eof: bool,
    /// Its output failed: nothing more can be sent.
    gone: bool,
}

enum Event {
    Client(io::Result<Option<Frame>>),
    Child(io::Result<Option<Frame>>),
    Exit(ChildExit),
    /// A line from spare number `.0`.
    Spare(usize, io::Result<Option<Frame>>),
    ClientGone(io::Error),
    Call(Call),
    Tick,
    Wake,
}

pub struct Instance<I: ClientInput> {
    cfg: InstanceConfig,
    name: String,
    client: ClientSide<I>,

    life: Lifecycle<Child>,
    child_in: Option<Outbox>,
    child_out: Option<FramedReader<pipe::Receiver>>,
    exits_tx: mpsc::UnboundedSender<ChildExit>,
    exits_rx: mpsc::UnboundedReceiver<ChildExit>,
    tail: SharedTail,
    scope: Scope,
    liveness: Liveness,
    /// When to measure the server's memory next (`--max-memory`).
    memory_check_at: Option<Instant>,
    /// `--standby`: the spare processes, and the decisions about them.
    standby: Standby,
    spares: Vec<standby::Spare>,
    /// Processes a spare took over from, finishing their stop sequence.
    retiring: Vec<Child>,

    session: Session,
    client_reqs: ClientTable,
    server_reqs: IdMap<ServerRequest>,
    /// Requests a dead server had sent to the client: their late answers are dropped.
    orphaned_server_reqs: IdSet,
    batches: Batches,
    own: OwnIds,
    queue: Queue,
    /// Arrival number of the last client request.
    seq: u64,

    calls: mpsc::Receiver<Call>,
    summary: Option<watch::Sender<Summary>>,
    metrics: Metrics,
    outcome: Option<Outcome>,
    /// When the event being handled arrived: one clock read per event, not one per message.
    now: Instant,
    /// `now` in the in-flight table's ticks, once something in this event needed it.
    now_ticks: Option<u64>,
    /// One timer for every deadline, re-armed only when the earliest deadline changes (a fresh
    /// timer per loop round would register and cancel a timer entry for every message).
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
}

impl<I: ClientInput> Instance<I> {
    /// Starts the first server generation. A command that cannot be started is an error for the
    /// caller to report; later spawn failures are crashes handled by the restart policy.
    pub fn start(
        cfg: InstanceConfig,
        name: String,
        port: ClientPort<I>,
        services: Services,
    ) -> Result<(Instance<I>, InstanceHandle), StartFailed<I>> {
        let (mut instance, handle) = Instance::new(cfg, name, port, services, mpsc::unbounded_channel());
        match instance.start_first() {
            Ok(()) => Ok((instance, handle)),
            Err(error) => {
                let Instance { client, .. } = instance;
                let port = ClientPort { input: client.input, output: client.output, writer: client.writer };
                Err(StartFailed { error, port })
            }
        }
    }

    /// An instance whose first generation is a process started ahead of its client (a
    /// per-client server's pool), spawned in `services.scope` as generation 1.
    pub fn adopt(
        cfg: InstanceConfig,
        name: String,
        port: ClientPort<I>,
        services: Services,
        started: Started,
    ) -> (Instance<I>, InstanceHandle) {
        let Started { child, pipes, exits } = started;
        let (mut instance, handle) = Instance::new(cfg, name, port, services, exits);
        instance.adopt_first(child, pipes);
        (instance, handle)
    }

    fn new(
        cfg: InstanceConfig,
        name: String,
        port: ClientPort<I>,
        services: Services,
        exits: Exits,
    ) -> (Instance<I>, InstanceHandle) {
        let (handle, calls) = InstanceHandle::channel();
        let (exits_tx, exits_rx) = exits;
        let now = Instant::now();
        let instance = Instance {
            name,
            client: ClientSide { input: port.input, output: port.output, writer: port.writer, eof: false, gone: false },
            life: Lifecycle::new(cfg.policy.clone(), services.history, cfg.on_failure, cfg.drain_timeout),
            child_in: None,
            child_out: None,
            exits_tx,
            exits_rx,
            tail: services.tail,
            scope: services.scope,
            liveness: Liveness::new(cfg.ping_interval, cfg.ping_timeout, cfg.ping_failures),
            memory_check_at: None,
            standby: Standby::new(cfg.standby, cfg.policy.clone()),
            spares: Vec::new(),
            retiring: Vec::new(),
            session: Session::default(),
            client_reqs: ClientTable::new(cfg.request_timeout, Epoch::new(now)),
            server_reqs: IdMap::default(),
            orphaned_server_reqs: IdSet::default(),
            batches: Batches::default(),
            own: OwnIds::default(),
            queue: Queue::new(cfg.queue_limit, cfg.max_inflight),
            seq: 0,
            calls,
            summary: None,
            metrics: Metrics::default(),
            outcome: None,
            now,
            now_ticks: None,
            timer: Box::pin(sleep_until(now.into())),
            timer_at: None,
            cfg,
        };
        (instance, handle)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its [`Summary`], published whenever it changes (it is computed after every event only once
    /// someone watches).
    pub fn watch_summary(&mut self) -> watch::Receiver<Summary> {
        let (tx, rx) = watch::channel(self.summary_now());
        self.summary = Some(tx);
        rx
    }

    /// Renames the instance before it runs (the host learns its final name once the server has
    /// started, so that a server that cannot start leaves nothing behind).
    pub fn set_name(&mut self, name: String) {
        self.name = name;
    }

    /// Runs until the client is gone, a stop is asked for, or (`--on-failure exit`) the server
    /// keeps crashing.
    pub async fn run(self) -> Outcome {
        self.run_counted().await.0
    }

    /// [`Instance::run`], also handing back the instance's counters (a daemon keeps them for
    /// its server after the client has gone).
    pub async fn run_counted(mut self) -> (Outcome, Metrics) {
        self.publish_summary();
        let outcome = loop {
            if let Some(outcome) = self.outcome {
                // Spares go with the server; the instance ends once every process has exited.
                if !self.spares.is_empty() {
                    self.stop_spares(self.life.forced());
                }
                if self.retiring.is_empty() {
                    break outcome;
                }
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
            state = self.life.state().name(),
            "instance ended"
        );
        self.end_generation_processes();
        let Instance { client, metrics, .. } = self;
        drop(client.output);
        if let Some(writer) = client.writer {
            let _ = tokio::time::timeout(FLUSH_AT_EXIT, writer).await;
        }
        (outcome, metrics)
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
        let watch_client = !self.client.gone;
        let read_spares = self.spares.iter().any(standby::Spare::open);
        let child_in = self.child_in.as_ref();
        tokio::select! {
            frame = self.client.input.next(), if read_client => Event::Client(frame),
            frame = next_frame(&mut self.child_out), if read_child => Event::Child(frame),
            Some(exit) = self.exits_rx.recv() => Event::Exit(exit),
            (index, frame) = standby::next_spare_frame(&mut self.spares), if read_spares => Event::Spare(index, frame),
            err = self.client.output.failed(), if watch_client => Event::ClientGone(err),
            Some(call) = self.calls.recv() => Event::Call(call),
            _ = &mut self.timer, if deadline.is_some() => Event::Tick,
            _ = self.client.output.drained(), if self.client.output.congested() => Event::Wake,
            _ = drained(child_in), if child_congested => Event::Wake,
        }
    }

    /// Whether to take client input now: not after EOF, and not while the server's stdin is
    /// congested or the queue is full because of `--max-inflight` (backpressure: the server is
    /// up, so waiting for its answers beats refusing messages).
    fn reading_client(&self) -> bool {
        // Asked for every line of a burst: the cheapest tests first (the queue is nearly always
        // empty, so whether the server is ready is rarely asked).
        let held_back =
            self.child_in.as_ref().is_some_and(Outbox::congested) || (self.queue.is_full() && self.life.is_ready());
        !self.client.eof && !self.client.gone && !held_back
    }

    /// Whether to take the server's output now: not while the client's output is congested.
    fn reading_child(&self) -> bool {
        self.child_out.is_some() && !self.client.output.congested()
    }

    /// The client lines that came in the same read as the frame just handled, handled now rather
    /// than one `select!` round each (up to [`BATCH`], while the server's side keeps up). They are
    /// lent from the read buffer; an input that does not lend them hands them out as frames.
    fn on_buffered_client_lines(&mut self) {
        let mut budget = BATCH - 1;
        // The requests go to the server's stdin together, once the round ends.
        if let Some(stdin) = &mut self.child_in {
            stdin.hold();
        }
        if let Some(mut lines) = self.client.input.lend_lines() {
            while budget > 0 && self.reading_client() {
                let mut fields = Fields::default();
                match lines.next_line(&mut fields) {
                    Some(Lent::Object(line)) => self.on_client_object(&fields, line),
                    Some(Lent::Line(line)) => self.on_client_line(line),
                    Some(Lent::Oversized(frame)) => self.on_client_frame(frame),
                    None => break,
                }
                budget -= 1;
            }
            self.client.input.give_back(lines);
        }
        while budget > 0 && self.reading_client() {
            let Some(frame) = self.client.input.buffered() else { break };
            self.on_client_frame(frame);
            budget -= 1;
        }
        // (A server started in the round has its own outbox, which holds nothing.)
        if let Some(stdin) = &mut self.child_in {
            stdin.release();
        }
    }

    /// [`Self::on_buffered_client_lines`] for the server's output. Lines left when a new server
    /// replaced the one that wrote them are dropped with the old one's output, as they always were.
    fn on_buffered_child_lines(&mut self) {
        let generation = self.life.generation();
        let Some(mut lines) = self.child_out.as_mut().and_then(FramedReader::lend_lines) else { return };
        let mut budget = BATCH - 1;
        self.client.output.hold();
        while budget > 0 && self.reading_child() {
            let mut fields = Fields::default();
            match lines.next_line(&mut fields) {
                Some(Lent::Object(line)) => self.on_child_object(&fields, line),
                Some(Lent::Line(line)) => self.on_child_line(line),
                Some(Lent::Oversized(frame)) => self.on_child_frame(frame),
                None => break,
            }
            budget -= 1;
        }
        self.client.output.release();
        if let Some(reader) = self.child_out.as_mut().filter(|_| self.life.generation() == generation) {
            reader.give_back(lines);
        }
    }

    fn handle(&mut self, event: Event) {
        self.now = Instant::now();
        self.now_ticks = None;
        match event {
            Event::Client(Ok(Some(frame))) => {
                self.on_client_frame(frame);
                self.on_buffered_client_lines();
            }
            Event::Client(Ok(None)) => {
                tracing::info!("client closed stdin");
                self.client.eof = true;
                self.begin_shutdown("the client closed its input");
            }
            Event::Client(Err(e)) => {
                tracing::warn!("reading stdin failed: {e}; treating the client as gone");
                self.client.eof = true;
                self.begin_shutdown("stdin failed");
            }
            Event::Child(Ok(Some(frame))) => {
                self.on_child_frame(frame);
                self.on_buffered_child_lines();
            }
            Event::Child(Ok(None)) => self.on_child_stdout_closed(None),
            Event::Child(Err(e)) => self.on_child_stdout_closed(Some(e)),
            Event::Exit(exit) => self.on_child_exit(exit),
            Event::Spare(index, frame) => self.on_spare_frame(index, frame),
            Event::ClientGone(e) => {
                tracing::info!("the client stopped reading (writing stdout failed: {e}); shutting down");
                self.client.gone = true;
                self.client.eof = true;
                self.begin_shutdown("the client is gone");
            }
            Event::Call(call) => {
                let reply = self.on_call(call.command);
                let _ = call.reply.send(reply);
            }
            Event::Tick => self.on_tick(Instant::now()),
            Event::Wake => {}
        }
    }

    /// The event's time in the in-flight table's ticks: read once per event and only if a request
    /// arrives or is answered in it, so one-at-a-time traffic does not pay for it twice.
    fn now_ticks(&mut self) -> u64 {
        match self.now_ticks {
            Some(ticks) => ticks,
            None => *self.now_ticks.insert(self.client_reqs.epoch().ticks(self.now)),
        }
    }

    /// Moves the lifecycle along after any event: finishes stops, drains and restarts.
    fn advance(&mut self) {
        let now = Instant::now();
        // Answers free --max-inflight slots for queued requests.
        if !self.queue.is_empty() && self.life.is_ready() {
            self.flush_queue();
        }
        if let Some(ended) = self.life.stop_finished(now, self.child_out.is_some()) {
            self.child_out = None;
            self.after_child_gone(ended);
        }
        let awaiting = self.client_reqs.awaiting_child();
        if self.life.drain_over(now, awaiting) {
            self.stop_for_shutdown();
        }
        if self.life.restart_due(now, awaiting) {
            self.child_in = None;
            self.hand_over_to_spare();
        }
        self.keep_spares(now);
        self.publish_summary();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let liveness = self.liveness.deadline(self.probing());
        let spares = self.spares_deadline();
        [self.client_reqs.next_deadline(), liveness, self.life.next_deadline(), self.memory_check_at, spares]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_tick(&mut self, now: Instant) {
        self.expire_requests(now);
        self.check_liveness(now);
        self.check_memory(now);
        self.check_spares(now);
        self.on_due(now);
    }

    /// Publishes the state summary if it changed (only when someone listens: it is computed after
    /// every event).
    fn publish_summary(&mut self) {
        if self.summary.is_none() {
            return;
        }
        let summary = self.summary_now();
        let Some(tx) = &self.summary else { return };
        tx.send_if_modified(|old| {
            let changed = *old != summary;
            *old = summary;
            changed
        });
    }
}

impl<I: ClientInput> Instance<I> {
    fn summary_now(&mut self) -> Summary {
        Summary {
            state: self.life.public_state(self.session.handshake_in_progress()),
            pid: self.life.child().map(|c| c.pid),
            restarts_in_window: self.life.policy().restarts_in_window(self.now),
            talking: self.liveness.heard(),
        }
    }
}

async fn next_frame(reader: &mut Option<FramedReader<pipe::Receiver>>) -> io::Result<Option<Frame>> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

async fn drained(outbox: Option<&Outbox>) {
    match outbox {
        Some(o) => o.drained().await,
        None => std::future::pending().await,
    }
}

/// A loggable excerpt of a line that may be long or not UTF-8.
fn preview(line: &[u8]) -> String {
    const LOGGED: usize = 2048;
    let cut = &line[..line.len().min(LOGGED)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > cut.len() {
        s.push_str(&format!("… [{} bytes]", line.len()));
    }
    s
}
