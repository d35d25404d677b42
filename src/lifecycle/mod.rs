//! The life of one supervised server, as decisions without I/O: which state the current
//! generation is in, when it is stopped, drained, restarted or given up on, and when a shutdown
//! or a requested restart may proceed. Every decision takes `now`, so the whole cycle runs on
//! virtual time in the tests below; the instance carries the decisions out (spawning, settling
//! requests, logging).
//!
//! ```text
//!            spawn ok (replay needed)       replayed initialize answered
//! Backoff ─────────────────────────▶ Up(Rebuilding) ─────────────────────▶ Up(Ready)
//!    ▲                                    │                                   │
//!    │ policy: restart after d            │ exit / stdout closed / hung       │ restart, shutdown
//!    │                                    ▼                                   ▼
//!    └──────────────────────────── Stopping (stop sequence, drain stdout) ◀───┘
//!                                         │ policy: limit reached
//!                                         ▼
//!                                       Failed ── slot frees / restart ──▶ Up
//! ```

pub mod history;
pub mod liveness;
pub mod policy;
pub mod standby;
pub mod state;

use std::time::{Duration, Instant};

use crate::config::OnFailure;
use crate::observe::status::State as PublicState;
use crate::process::ExitInfo;
use policy::{Decision, PolicyConfig, RestartPolicy};
pub use state::{Cause, ChildControl, ChildState, EndCause, Ended, Phase, StopReason};

/// How long a child's stdout is still read after its exit, for lines written just before; also
/// how long a child that closed its stdout may take to exit before it counts as broken.
pub const STDOUT_DRAIN: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// In-flight requests may finish until the deadline; then the server is stopped.
    Draining { deadline: Instant },
    /// The stop sequence is under way.
    Stopping,
}

/// What comes after a crashed generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    /// A restart in this long (the state is now Backoff).
    RestartAfter(Duration),
    /// The restart limit is reached (the state is now Failed until `until`); with `give_up`
    /// (`--on-failure exit`) the instance ends instead of waiting.
    Failed { until: Instant, give_up: bool },
}

/// A timer that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The server closed its stdout and has not exited since: it is broken.
    StdoutClosed,
    /// The restarted server did not answer the replayed `initialize` in time.
    RebuildTimedOut,
    /// Backoff is over, or (`after_failed`) a restart slot freed for a Failed server.
    Restart { after_failed: bool },
}

/// What to do at the start of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStep {
    /// Already shutting down: nothing new.
    AlreadyUnderWay,
    /// In-flight requests are being waited for.
    Draining,
    /// Stop the server now (see [`Lifecycle::stop_for_shutdown`]).
    StopNow,
    /// No server runs: the instance can end.
    Done,
}

/// What a restart request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartStep {
    Refused,
    /// Once in-flight requests are answered (or the drain timeout passes), the server is stopped
    /// and started again.
    Scheduled,
    /// No server runs (backoff or failed): start one now.
    StartNow,
    AlreadyUnderWay,
}

/// One server's lifecycle. `C` is the running process ([`crate::process::Child`]).
#[derive(Debug)]
pub struct Lifecycle<C> {
    state: ChildState<C>,
    policy: RestartPolicy,
    on_failure: OnFailure,
    drain_timeout: Duration,
    /// The current generation's number.
    generation: u64,
    /// The last number given out (spares get theirs before they become current).
    issued: u64,
    shutdown: Option<Shutdown>,
    /// A requested restart waiting for in-flight requests, until this deadline.
    restart: Option<Instant>,
    /// Set by a second shutdown request: every wait is skipped.
    forced: bool,
    /// Set when the child closed stdout while still running: if it has not exited by then, it
    /// is treated as broken. (Usually the exit follows at once and carries the real status.)
    stdout_closed_deadline: Option<Instant>,
    last_exit: Option<ExitInfo>,
    /// Why the last restart could not start the command, if it could not.
    last_spawn_error: Option<String>,
    last_end: Option<(Instant, EndCause)>,
}

impl<C: ChildControl> Lifecycle<C> {
    /// A lifecycle counting its restarts in `history` (the server's, shared by its processes).
    pub fn new(
        policy: PolicyConfig,
        history: history::RestartHistory,
        on_failure: OnFailure,
        drain_timeout: Duration,
    ) -> Lifecycle<C> {
        Self::with_policy(RestartPolicy::new(policy, history), on_failure, drain_timeout)
    }

    /// A lifecycle with a given policy (a seeded one, in tests).
    pub fn with_policy(policy: RestartPolicy, on_failure: OnFailure, drain_timeout: Duration) -> Lifecycle<C> {
        Lifecycle {
            state: ChildState::Gone,
            policy,
            on_failure,
            drain_timeout,
            generation: 0,
            issued: 0,
            shutdown: None,
            restart: None,
            forced: false,
            stdout_closed_deadline: None,
            last_exit: None,
            last_spawn_error: None,
            last_end: None,
        }
    }

    // ----- reading -----------------------------------------------------------------------

    pub fn state(&self) -> &ChildState<C> {
        &self.state
    }

    /// The number of the newest generation (0 before the first start).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn child(&self) -> Option<&C> {
        match &self.state {
            ChildState::Up { child, .. } | ChildState::Stopping { child, .. } => Some(child),
            _ => None,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, ChildState::Up { .. })
    }

    /// Whether client messages can go to the server: it is up, its session is rebuilt, and no
    /// requested restart is waiting to stop it.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, ChildState::Up { phase: Phase::Ready, .. }) && self.restart.is_none()
    }

    /// Whether the server is up and its session in place (liveness probes may go out).
    pub fn is_serving(&self) -> bool {
        matches!(self.state, ChildState::Up { phase: Phase::Ready, .. })
    }

    /// `until` when the restart limit is reached.
    pub fn failed_until(&self) -> Option<Instant> {
        match self.state {
            ChildState::Failed { until } => Some(until),
            _ => None,
        }
    }

    /// When the next start happens, in Backoff and Failed.
    pub fn next_start(&self) -> Option<Instant> {
        match self.state {
            ChildState::Backoff { until } | ChildState::Failed { until } => Some(until),
            _ => None,
        }
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    pub fn forced(&self) -> bool {
        self.forced
    }

    pub fn last_exit(&self) -> Option<ExitInfo> {
        self.last_exit
    }

    pub fn last_spawn_error(&self) -> Option<&str> {
        self.last_spawn_error.as_deref()
    }

    pub fn last_end(&self) -> Option<&(Instant, EndCause)> {
        self.last_end.as_ref()
    }

    pub fn policy(&mut self) -> &mut RestartPolicy {
        &mut self.policy
    }

    /// The state as operators see it. `handshake_in_progress`: the client's own `initialize` has
    /// not been answered yet.
    pub fn public_state(&self, handshake_in_progress: bool) -> PublicState {
        if self.shutdown.is_some() {
            return PublicState::Draining;
        }
        match &self.state {
            ChildState::Up { phase: Phase::Ready, .. } if handshake_in_progress => PublicState::Starting,
            ChildState::Up { phase: Phase::Ready, .. } => PublicState::Ready,
            ChildState::Up { phase: Phase::Rebuilding { .. }, .. } => PublicState::Restarting,
            ChildState::Stopping { why: StopReason::Shutdown, .. } | ChildState::Gone => PublicState::Draining,
            ChildState::Stopping { .. } => PublicState::Restarting,
            ChildState::Backoff { .. } => PublicState::Backoff,
            ChildState::Failed { .. } => PublicState::Failed,
        }
    }

    /// The earliest of the lifecycle's deadlines.
    pub fn next_deadline(&self) -> Option<Instant> {
        let state = match &self.state {
            ChildState::Up { phase: Phase::Rebuilding { deadline }, .. } => Some(*deadline),
            ChildState::Stopping { drain_until, .. } => *drain_until,
            ChildState::Backoff { until } | ChildState::Failed { until } => Some(*until),
            _ => None,
        };
        let drain = match self.shutdown {
            Some(Shutdown::Draining { deadline }) => Some(deadline),
            _ => None,
        };
        [state, drain, self.restart, self.stdout_closed_deadline].into_iter().flatten().min()
    }

    // ----- starting ----------------------------------------------------------------------

    /// Numbers the generation about to be spawned.
    pub fn next_generation(&mut self) -> u64 {
        let generation = self.issue_generation();
        self.adopt_generation(generation);
        generation
    }

    /// A number for a spare process, which becomes a generation when it is promoted.
    pub fn issue_generation(&mut self) -> u64 {
        self.issued += 1;
        self.issued
    }

    /// Generation `generation` (a promoted spare) is the current one from now on.
    pub fn adopt_generation(&mut self, generation: u64) {
        self.generation = generation;
        self.issued = self.issued.max(generation);
        self.stdout_closed_deadline = None;
    }

    /// Counts a restart happening now against the limit (a crash's, not a requested one).
    pub fn record_restart(&mut self, now: Instant) {
        self.policy.record_restart(now);
    }

    /// A new generation is running.
    pub fn started(&mut self, child: C, phase: Phase) {
        self.last_spawn_error = None;
        self.state = ChildState::Up { child, phase };
    }

    /// The replayed handshake was answered: the server takes client traffic.
    pub fn rebuilt(&mut self) {
        if let ChildState::Up { phase, .. } = &mut self.state {
            *phase = Phase::Ready;
        }
    }

    /// A restart could not start the command: the generation ended before it began.
    pub fn spawn_failed(&mut self, error: String) -> Ended {
        self.last_spawn_error = Some(error.clone());
        self.state = ChildState::Gone;
        Ended { why: StopReason::Crashed(Cause::SpawnFailed(error)), exit: None, uptime: Duration::ZERO }
    }

    // ----- ending ------------------------------------------------------------------------

    /// Generation `generation` exited. Returns whether that was unexpected (it was not being
    /// stopped), or `None` for an older generation's late report.
    pub fn on_exit(&mut self, now: Instant, generation: u64, exit: ExitInfo) -> Option<bool> {
        if generation != self.generation {
            return None;
        }
        let unexpected = !matches!(self.state, ChildState::Stopping { .. });
        self.last_exit = Some(exit);
        let drain_until = Some(now + STDOUT_DRAIN);
        self.state = match std::mem::replace(&mut self.state, ChildState::Gone) {
            ChildState::Up { child, .. } => {
                ChildState::Stopping { child, why: StopReason::Crashed(Cause::Exited), exit: Some(exit), drain_until }
            }
            ChildState::Stopping { child, why, .. } => {
                ChildState::Stopping { child, why, exit: Some(exit), drain_until }
            }
            other => other,
        };
        Some(unexpected)
    }

    /// The server closed its stdout.
    pub fn on_stdout_closed(&mut self, now: Instant) {
        if self.is_up() {
            self.stdout_closed_deadline = Some(now + STDOUT_DRAIN);
        }
    }

    /// Starts stopping a running server (the caller has closed its stdin). Returns whether
    /// there was one.
    pub fn stop(&mut self, why: StopReason) -> bool {
        match std::mem::replace(&mut self.state, ChildState::Gone) {
            ChildState::Up { mut child, .. } => {
                if self.forced {
                    child.kill();
                } else {
                    child.stop();
                }
                self.state = ChildState::Stopping { child, why, exit: None, drain_until: None };
                true
            }
            other => {
                self.state = other;
                false
            }
        }
    }

    /// The stopped server has exited and its stdout is done (closed, drained for
    /// [`STDOUT_DRAIN`], or skipped by a forced stop): the generation is over.
    pub fn stop_finished(&mut self, now: Instant, stdout_open: bool) -> Option<Ended> {
        let ChildState::Stopping { exit: Some(_), drain_until, .. } = &self.state else { return None };
        if stdout_open && !drain_until.is_some_and(|d| now >= d) && !self.forced {
            return None;
        }
        let ChildState::Stopping { child, why, exit, .. } = std::mem::replace(&mut self.state, ChildState::Gone) else {
            return None;
        };
        Some(Ended { why, exit, uptime: now.saturating_duration_since(child.started()) })
    }

    /// Lets go of a generation that is being stopped, so that a spare can take its place at
    /// once: the caller holds the process until it exits (its stop sequence runs on) and
    /// carries on as if the generation had ended.
    pub fn hand_over(&mut self, now: Instant) -> Option<(C, Ended)> {
        if !matches!(self.state, ChildState::Stopping { .. }) {
            return None;
        }
        let ChildState::Stopping { child, why, exit, .. } = std::mem::replace(&mut self.state, ChildState::Gone) else {
            return None;
        };
        let uptime = now.saturating_duration_since(child.started());
        Some((child, Ended { why, exit, uptime }))
    }

    /// Remembers how the generation ended, for `status`.
    pub fn record_end(&mut self, now: Instant, why: &StopReason) {
        let how = match why {
            StopReason::Crashed(cause) => EndCause::Crashed(cause.clone()),
            StopReason::Restart | StopReason::Shutdown => EndCause::Stopped,
        };
        self.last_end = Some((now, how));
    }

    /// After a crash: back off and restart, or give up for now. A crash also overtakes a
    /// pending requested restart (the new server is the restart).
    pub fn schedule_restart(&mut self, now: Instant, uptime: Duration) -> Scheduled {
        self.restart = None;
        match self.policy.on_exit(now, uptime) {
            Decision::RestartAfter(delay) => {
                self.state = ChildState::Backoff { until: now + delay };
                Scheduled::RestartAfter(delay)
            }
            Decision::Failed { until } => {
                self.state = ChildState::Failed { until };
                Scheduled::Failed { until, give_up: self.on_failure == OnFailure::Exit }
            }
        }
    }

    /// The timer that ran out, if any (one per call; the caller acts on it before asking again).
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        if self.stdout_closed_deadline.is_some_and(|d| now >= d) {
            self.stdout_closed_deadline = None;
            if self.is_up() {
                return Some(Due::StdoutClosed);
            }
        }
        match self.state {
            ChildState::Up { phase: Phase::Rebuilding { deadline }, .. } if now >= deadline => {
                Some(Due::RebuildTimedOut)
            }
            ChildState::Backoff { until } if now >= until => Some(Due::Restart { after_failed: false }),
            ChildState::Failed { until } if now >= until => Some(Due::Restart { after_failed: true }),
            _ => None,
        }
    }

    // ----- requests ----------------------------------------------------------------------

    /// Begins a shutdown; `client_gone`: nobody is left to drain for.
    pub fn request_shutdown(&mut self, now: Instant, client_gone: bool) -> ShutdownStep {
        if self.shutdown.is_some() {
            return ShutdownStep::AlreadyUnderWay;
        }
        self.restart = None;
        match self.state {
            ChildState::Up { .. } if !client_gone => {
                self.shutdown = Some(Shutdown::Draining { deadline: now + self.drain_timeout });
                ShutdownStep::Draining
            }
            ChildState::Up { .. } | ChildState::Stopping { .. } => ShutdownStep::StopNow,
            _ => {
                self.shutdown = Some(Shutdown::Stopping);
                ShutdownStep::Done
            }
        }
    }

    /// Whether a draining shutdown may stop the server: nothing is owed, or time is up.
    pub fn drain_over(&self, now: Instant, awaiting: usize) -> bool {
        matches!(self.shutdown, Some(Shutdown::Draining { deadline }) if awaiting == 0 || now >= deadline)
    }

    /// Stops the server for the shutdown; returns false if none is left to stop (the instance
    /// can end).
    pub fn stop_for_shutdown(&mut self) -> bool {
        self.shutdown = Some(Shutdown::Stopping);
        match self.state {
            ChildState::Up { .. } => self.stop(StopReason::Shutdown),
            ChildState::Stopping { .. } => true,
            _ => false,
        }
    }

    /// Skips every wait of a shutdown (a second SIGTERM); returns false if no server is left.
    pub fn force(&mut self) -> bool {
        self.forced = true;
        self.shutdown = Some(Shutdown::Stopping);
        match &mut self.state {
            ChildState::Up { .. } => self.stop(StopReason::Shutdown),
            ChildState::Stopping { child, .. } => {
                child.kill();
                true
            }
            _ => false,
        }
    }

    /// A graceful restart (SIGHUP, `mcpvisor restart`); `clear_failed` also forgets the restart
    /// history, so a Failed server gets a full set of restarts again.
    pub fn request_restart(&mut self, now: Instant, clear_failed: bool) -> RestartStep {
        if self.shutdown.is_some() {
            return RestartStep::Refused;
        }
        if clear_failed && self.failed_until().is_some() {
            self.policy.reset();
        }
        match self.state {
            ChildState::Up { .. } => {
                self.restart = Some(now + self.drain_timeout);
                RestartStep::Scheduled
            }
            ChildState::Backoff { .. } | ChildState::Failed { .. } => RestartStep::StartNow,
            _ => RestartStep::AlreadyUnderWay,
        }
    }

    /// Whether a requested restart may stop the server now; if so, it is being stopped.
    pub fn restart_due(&mut self, now: Instant, awaiting: usize) -> bool {
        let Some(deadline) = self.restart else { return false };
        if !self.is_up() || (awaiting > 0 && now < deadline) {
            return false;
        }
        self.restart = None;
        self.stop(StopReason::Restart)
    }

    /// New settings (a reloaded configuration); history and state are kept.
    pub fn reconfigure(&mut self, policy: PolicyConfig, on_failure: OnFailure, drain_timeout: Duration) {
        self.policy.set_config(policy);
        self.on_failure = on_failure;
        self.drain_timeout = drain_timeout;
    }

    /// Lets go of the server at the instance's end (dropping it kills its group if it still runs).
    pub fn abandon(&mut self) -> Option<C> {
        match std::mem::replace(&mut self.state, ChildState::Gone) {
            ChildState::Up { child, .. } | ChildState::Stopping { child, .. } => Some(child),
            _ => None,
        }
    }

    /// Whether a requested restart is waiting for in-flight requests.
    pub fn restart_pending(&self) -> bool {
        self.restart.is_some()
    }
}

#[cfg(test)]
mod tests;
