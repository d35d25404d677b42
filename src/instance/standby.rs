//! Hot standby (`--standby N`): spare server processes started beside the active one, so that a
//! crash, a hang, a memory restart or a requested restart is taken over at once instead of after
//! a server start.
//!
//! A spare is started only once the client's session exists (never before the client's first
//! message, so the era the client chose is known) and while the active server is ready. In the
//! handshake era it is sent the client's `initialize` again under mcpvisor's own id, and becomes
//! warm when it answers. In the stateless era there is no session to build on it: it is asked
//! `server/discover` (the liveness probe, which changes nothing) only to learn when it can answer,
//! so that a promotion never hands the client a process still starting. Nothing a spare writes
//! reaches the client. Promotion makes a warm spare the current generation: it is sent the rest of the
//! replay (`notifications/initialized`, the log level, subscriptions), then the queue and the
//! re-sent requests, as a restarted server would be. The process it replaced, if still running,
//! finishes its stop sequence among the retiring ones.
//!
//! The decisions (how many spares, replacing dead ones, turning standby off) are
//! [`Standby`]'s; this file starts, reads, promotes and stops the processes.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::unix::pipe;

use super::Instance;
use crate::io::Outbox;
use crate::lifecycle::standby::Warmth;
use crate::lifecycle::{Phase, STDOUT_DRAIN};
use crate::observe::status::SpareStatus;
use crate::port::ClientInput;
use crate::process::{Child, ChildExit, Pipes};
use crate::protocol::framing::{Frame, FramedReader};
use crate::protocol::jsonrpc::{self, Id, Kind, Message};
use crate::relay::inflight::OwnPurpose;
use crate::relay::session::Era;

/// One spare process.
pub(super) struct Spare {
    child: Child,
    stdin: Outbox,
    stdout: FramedReader<pipe::Receiver>,
    warmth: Warmth,
    /// What it was sent to warm it up, with mcpvisor's own id: the client's `initialize`
    /// (handshake era; it may take over only a session that would replay the same one) or
    /// `server/discover` (stateless era).
    warmup: Option<(Id, Bytes)>,
    /// It is dropped if it is not warm by then.
    warm_by: Instant,
    /// When its stdout ended (its exit usually follows at once).
    eof: Option<Instant>,
}

impl Spare {
    /// Whether its stdout is still read.
    pub(super) fn open(&self) -> bool {
        self.eof.is_none()
    }

    /// When it is given up on if nothing else happens first: not warm in time, or alive without
    /// stdout for [`STDOUT_DRAIN`].
    fn deadline(&self) -> Option<Instant> {
        let warm_by = (self.warmth == Warmth::Starting).then_some(self.warm_by);
        warm_by.into_iter().chain(self.eof.map(|at| at + STDOUT_DRAIN)).min()
    }
}

impl<I: ClientInput> Instance<I> {
    /// Whether the session is far enough along for spares: its era is known and, in the
    /// handshake era, the server has answered the client's `initialize`.
    fn session_ready_for_spares(&self) -> bool {
        match self.session.era() {
            Era::Handshake => self.session.needs_handshake_replay(),
            Era::Stateless => true,
            Era::Unknown => false,
        }
    }

    /// Starts the spares that are missing, if it is time (after every event).
    pub(super) fn keep_spares(&mut self, now: Instant) {
        if self.standby.wanted() == 0 {
            return;
        }
        let eligible = self.life.is_ready()
            && !self.life.restart_pending()
            && !self.life.shutting_down()
            && !self.client.eof
            && self.session_ready_for_spares();
        for _ in 0..self.standby.to_start(now, self.spares.len(), eligible) {
            self.start_spare(now);
        }
    }

    fn start_spare(&mut self, now: Instant) {
        self.standby.starting(now);
        let generation = self.life.issue_generation();
        let (child, pipes) = match self.spawn_process(generation) {
            Ok(started) => started,
            Err(e) => {
                self.metrics.spare_failures += 1;
                match self.standby.died(now, std::time::Duration::ZERO, false, &e.to_string()) {
                    Some(off) => tracing::warn!("{off}"),
                    None => tracing::warn!("cannot start a spare: {e}"),
                }
                return;
            }
        };
        let mut spare = Spare {
            child,
            stdin: pipes.stdin,
            stdout: pipes.stdout,
            warmth: Warmth::Starting,
            warmup: None,
            warm_by: now + self.cfg.rebuild_timeout(),
            eof: None,
        };
        let id = Id::string(format!("mcpvisor-standby-{generation}"));
        let warmup = match self.session.era() {
            Era::Handshake => self.session.replay_initialize(&id),
            _ => self.session.probe(&id),
        };
        match warmup {
            Some(line) => {
                spare.stdin.send(line.clone());
                spare.warmup = Some((id, line));
            }
            None => {
                spare.warmth = Warmth::Warm;
                self.standby.warmed();
            }
        }
        tracing::info!(generation, pid = spare.child.pid, "spare started");
        self.spares.push(spare);
    }

    /// Whether a spare could take over now.
    pub(super) fn has_warm_spare(&self) -> bool {
        self.spares.iter().any(|s| s.warmth == Warmth::Warm && s.open())
    }

    /// A line a spare wrote: the answer to its warm-up request makes it warm (or, refused, ends
    /// it); anything else is not for the client.
    pub(super) fn on_spare_frame(&mut self, index: usize, frame: io::Result<Option<Frame>>) {
        let Some(spare) = self.spares.get_mut(index) else { return };
        let line = match frame {
            Ok(Some(Frame::Line(line))) => line,
            Ok(Some(Frame::Oversized { len, .. })) => {
                tracing::debug!(generation = spare.child.generation, len, "a spare wrote an oversized line; dropped");
                return;
            }
            Ok(None) | Err(_) => {
                // Its exit (with its status) usually follows at once; see check_spares.
                spare.eof = Some(self.now);
                return;
            }
        };
        let answer = match jsonrpc::parse(&line) {
            Ok(Message::Single(env)) => match env.kind {
                Kind::Response { id, is_error } if spare.warmup.as_ref().is_some_and(|(i, _)| *i == id) => {
                    Some((is_error, env.result.map(|r| r.get().to_owned())))
                }
                _ => None,
            },
            _ => None,
        };
        let generation = spare.child.generation;
        match answer {
            Some((false, result)) if spare.warmth == Warmth::Starting => {
                spare.warmth = Warmth::Warm;
                let ms = spare.child.uptime(self.now).as_millis() as u64;
                if self.session.era() == Era::Handshake {
                    if let Some(diff) = self.session.compare_initialize_result(result.as_deref()) {
                        tracing::warn!(generation, "a spare differs from the server the client initialized: {diff}");
                    }
                }
                tracing::info!(generation, ready_in_ms = ms, "spare warm: it answered its first request");
                self.standby.warmed();
            }
            Some((true, result)) => {
                let detail = result.unwrap_or_default();
                tracing::warn!(generation, "a spare refused its first request: {detail}");
                self.drop_spare(index, &format!("it refused its first request: {detail}"));
            }
            _ => tracing::debug!(generation, "a spare's output is not relayed: {}", super::preview(&line)),
        }
    }

    /// Spares that did not become warm in time, or live on without stdout, are given up on.
    pub(super) fn check_spares(&mut self, now: Instant) {
        while let Some(index) = self.spares.iter().position(|s| s.deadline().is_some_and(|d| now >= d)) {
            let spare = &self.spares[index];
            let what = if spare.open() { "no answer to its first request in time" } else { "it closed its stdout" };
            tracing::warn!(generation = spare.child.generation, "giving up on a spare: {what}");
            self.drop_spare(index, what);
        }
    }

    /// When the next spare check is due.
    pub(super) fn spares_deadline(&self) -> Option<Instant> {
        let spares = self.spares.iter().filter_map(Spare::deadline);
        spares.chain(self.standby.next_deadline(self.spares.len())).min()
    }

    /// Stops spare `index` as a failure (`what`: why), to be replaced under the spares' limit.
    fn drop_spare(&mut self, index: usize, what: &str) {
        let spare = self.spares.remove(index);
        let (uptime, warm) = (spare.child.uptime(self.now), spare.warmth == Warmth::Warm);
        self.retire_spare(spare);
        self.spare_failed(uptime, warm, what);
    }

    fn spare_failed(&mut self, uptime: std::time::Duration, warm: bool, what: &str) {
        self.metrics.spare_failures += 1;
        if let Some(off) = self.standby.died(self.now, uptime, warm, what) {
            tracing::warn!("{off}");
        }
    }

    /// An exit of a spare or of a process a spare replaced; false if it is neither.
    pub(super) fn on_standby_exit(&mut self, exit: &ChildExit) -> bool {
        if let Some(index) = self.retiring.iter().position(|c| c.generation == exit.generation) {
            let child = self.retiring.remove(index);
            tracing::info!(
                generation = exit.generation,
                pid = child.pid,
                "retired server process stopped: {}",
                exit.exit
            );
            return true;
        }
        let Some(index) = self.spares.iter().position(|s| s.child.generation == exit.generation) else { return false };
        let spare = self.spares.remove(index);
        let (uptime, warm) = (spare.child.uptime(self.now), spare.warmth == Warmth::Warm);
        tracing::warn!(generation = exit.generation, pid = spare.child.pid, "a spare exited: {}", exit.exit);
        self.spare_failed(uptime, warm, &exit.exit.to_string());
        true
    }

    /// Promotes a warm spare to the current generation, if one can take over this session
    /// (`counted`: a crash's restart, counted against the limit). Returns whether one did.
    pub(super) fn promote_spare(&mut self, counted: bool) -> bool {
        let replay = self.session.needs_handshake_replay();
        let usable = |s: &Spare| {
            let same_initialize = match &s.warmup {
                Some((id, line)) if replay => self.session.replay_initialize(id).is_some_and(|l| l == *line),
                _ => !replay,
            };
            s.warmth == Warmth::Warm && s.open() && same_initialize
        };
        let Some(index) = self.spares.iter().position(usable) else { return false };
        let spare = self.spares.remove(index);
        let now = Instant::now();
        if counted {
            self.life.record_restart(now);
        }
        self.metrics.restarts += 1;
        self.metrics.promotions += 1;
        self.standby.promoted(now);
        let Spare { child, stdin, stdout, .. } = spare;
        tracing::info!(generation = child.generation, pid = child.pid, "spare promoted: it serves the client now");
        self.life.adopt_generation(child.generation);
        self.use_pipes(Pipes { stdin, stdout });
        self.life.started(child, Phase::Ready);
        if replay {
            let (own, reqs) = (&mut self.own, &self.client_reqs);
            for line in self.session.replay_after_initialize(|| own.issue(OwnPurpose::Replay, reqs)) {
                self.send_to_child(line);
            }
        }
        self.become_ready(self.session.has_started());
        true
    }

    /// A generation being stopped makes way for a warm spare at once, instead of being waited
    /// for; returns whether it did.
    pub(super) fn hand_over_to_spare(&mut self) -> bool {
        if !self.has_warm_spare() || self.life.shutting_down() {
            return false;
        }
        let Some((old, ended)) = self.life.hand_over(Instant::now()) else { return false };
        self.child_in = None;
        self.child_out = None;
        self.retiring.push(old);
        self.after_child_gone(ended);
        true
    }

    /// Stops every spare (a shutdown, or settings that changed); `force`: SIGKILL now.
    pub(super) fn stop_spares(&mut self, force: bool) {
        for spare in std::mem::take(&mut self.spares) {
            self.retire_spare(spare);
        }
        if force {
            self.retiring.iter_mut().for_each(Child::kill);
        }
    }

    /// Closes a spare's stdin and starts its stop sequence; it is held until it exits.
    fn retire_spare(&mut self, spare: Spare) {
        let Spare { mut child, stdin, .. } = spare;
        drop(stdin);
        child.stop();
        self.retiring.push(child);
    }

    pub(super) fn spare_statuses(&self, now: Instant) -> Vec<SpareStatus> {
        let spares = self.spares.iter().filter(|s| s.open());
        spares
            .map(|s| SpareStatus {
                pid: s.child.pid,
                generation: s.child.generation,
                state: s.warmth.as_str().to_owned(),
                uptime_secs: s.child.uptime(now).as_secs_f64(),
            })
            .collect()
    }

    /// The generations of the spares and of the processes still stopping after a takeover.
    pub(super) fn standby_generations(&self) -> impl Iterator<Item = u64> + '_ {
        self.spares.iter().map(|s| s.child.generation).chain(self.retiring.iter().map(|c| c.generation))
    }

    /// The resident memory of the spares' process groups (they count towards `--max-memory`).
    pub(super) fn spares_rss(&self) -> u64 {
        self.spares.iter().map(|s| crate::process::procfs::group_rss_bytes(s.child.pid)).sum()
    }
}

/// The next line of any spare that is still open, with the spare's index.
pub(super) async fn next_spare_frame(spares: &mut [Spare]) -> (usize, io::Result<Option<Frame>>) {
    poll_fn(|cx| {
        for (index, spare) in spares.iter_mut().enumerate().filter(|(_, s)| s.open()) {
            // Reading a line is cancel-safe: a future dropped while pending loses nothing.
            let next = pin!(spare.stdout.next());
            if let Poll::Ready(frame) = next.poll(cx) {
                return Poll::Ready((index, frame));
            }
        }
        Poll::Pending
    })
    .await
}
