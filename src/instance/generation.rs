//! The server's generations: starting one, rebuilding the client's session on it, stopping it,
//! and what follows its end: answering or re-sending what it owed, then a restart with backoff,
//! the Failed state, or the instance's end. The decisions are the [`Lifecycle`]'s; this file
//! carries them out.
//!
//! A crash is handled in two steps. When it is *detected* (stdout closed and no exit soon after,
//! liveness failure, over `--max-memory`, or a refused rebuild) in-flight requests are answered at
//! once and the stop sequence starts. When the process has *exited* and its stdout has been
//! drained (up to 250 ms, so responses written just before death still reach the client), the
//! restart policy decides. For an ordinary exit the two coincide, and the error carries the exit
//! status.
//!
//! [`Lifecycle`]: crate::lifecycle::Lifecycle

use std::io;
use std::time::Instant;

use super::{Instance, Outcome, MEMORY_CHECK};
use crate::lifecycle::{Cause, Due, Ended, Phase, Scheduled, StopReason};
use crate::port::ClientInput;
use crate::process::child::SpawnArgs;
use crate::process::{Child, ChildExit, ExitInfo, Pipes, SpawnError};
use crate::protocol::errors::{CrashReport, LimitReport, OwnError};
use crate::protocol::jsonrpc;
use crate::protocol::method::MethodClass;
use crate::relay::inflight::{ClientRequest, OwnPurpose};
use crate::relay::queue::Queued;

/// How many stderr lines go into error `data`.
const ERROR_STDERR_LINES: usize = 10;

impl<I: ClientInput> Instance<I> {
    pub(super) fn start_first(&mut self) -> Result<(), SpawnError> {
        let child = self.spawn_child()?;
        self.life.started(child, Phase::Ready);
        Ok(())
    }

    /// Takes a process started ahead of the client as the first generation.
    pub(super) fn adopt_first(&mut self, child: Child, pipes: Pipes) {
        self.life.adopt_generation(child.generation);
        tracing::info!(generation = child.generation, pid = child.pid, "server taken from the pool");
        self.use_pipes(pipes);
        self.life.started(child, Phase::Ready);
    }

    fn spawn_child(&mut self) -> Result<Child, SpawnError> {
        let generation = self.life.next_generation();
        let (child, pipes) = self.spawn_process(generation)?;
        tracing::info!(generation, pid = child.pid, command = %self.cfg.spec.display(), "server started");
        self.use_pipes(pipes);
        Ok(child)
    }

    /// Starts a process of the server as generation `generation` (the current one, or a spare),
    /// reporting its exit to this instance.
    pub(super) fn spawn_process(&self, generation: u64) -> Result<(Child, Pipes), SpawnError> {
        let args = SpawnArgs {
            generation,
            max_message: self.cfg.max_message_size,
            timings: self.cfg.stop,
            tail: self.tail.clone(),
            exits: self.exits_tx.clone(),
            scope: &self.scope,
        };
        Child::spawn(&self.cfg.spec, args)
    }

    /// The pipes of a new current generation; its checks start over.
    pub(super) fn use_pipes(&mut self, pipes: Pipes) {
        self.child_in = Some(pipes.stdin);
        self.child_out = Some(pipes.stdout);
        let now = Instant::now();
        self.liveness.restart(now);
        self.memory_check_at = self.cfg.max_memory.map(|_| now + MEMORY_CHECK);
    }

    /// Starts a new server after a crash (`counted` against the limit) or a requested restart,
    /// and rebuilds the session on it.
    pub(super) fn restart_child(&mut self, counted: bool) {
        if self.promote_spare(counted) {
            return;
        }
        if counted {
            self.life.record_restart(Instant::now());
        }
        self.metrics.restarts += 1;
        match self.spawn_child() {
            Ok(child) => {
                let replay = self.session.needs_handshake_replay();
                let phase = if replay {
                    let id = self.own.issue(OwnPurpose::ReplayInitialize, &self.client_reqs);
                    let deadline = Instant::now() + self.cfg.rebuild_timeout();
                    if let Some(line) = self.session.replay_initialize(&id) {
                        if let Some(stdin) = &mut self.child_in {
                            stdin.send(line);
                        }
                    }
                    Phase::Rebuilding { deadline }
                } else {
                    Phase::Ready
                };
                self.life.started(child, phase);
                if !replay {
                    self.become_ready(self.session.has_started());
                }
            }
            Err(e) => {
                tracing::error!("cannot restart the server: {e}");
                let ended = self.life.spawn_failed(e.to_string());
                self.after_child_gone(ended);
            }
        }
    }

    /// The server can take client traffic: send the queue, and tell the client that a rebuilt
    /// server's lists may differ.
    pub(super) fn become_ready(&mut self, rebuilt: bool) {
        self.life.rebuilt();
        if self.life.restart_pending() {
            return;
        }
        self.flush_queue();
        if rebuilt {
            for note in self.session.list_changed_notifications() {
                self.send_to_client(note);
            }
        }
    }

    pub(super) fn on_child_exit(&mut self, exit: ChildExit) {
        if self.on_standby_exit(&exit) {
            return;
        }
        let Some(unexpected) = self.life.on_exit(Instant::now(), exit.generation, exit.exit) else { return };
        if unexpected {
            tracing::warn!(generation = exit.generation, "server exited unexpectedly: {}", exit.exit);
        } else {
            tracing::info!(generation = exit.generation, "server stopped: {}", exit.exit);
        }
        self.child_in = None;
    }

    pub(super) fn on_child_stdout_closed(&mut self, err: Option<io::Error>) {
        self.child_out = None;
        if let Some(e) = err {
            tracing::warn!("reading the server's stdout failed: {e}");
        }
        if self.life.is_up() {
            tracing::debug!(generation = self.life.generation(), "server closed its stdout");
            self.life.on_stdout_closed(Instant::now());
        }
    }

    /// Acts on the lifecycle's timers.
    pub(super) fn on_due(&mut self, now: Instant) {
        match self.life.due(now) {
            Some(Due::StdoutClosed) => {
                tracing::warn!(
                    generation = self.life.generation(),
                    "server closed its stdout but keeps running; stopping it"
                );
                self.crash(Cause::StdoutClosed);
            }
            Some(Due::RebuildTimedOut) => {
                tracing::warn!("the new server did not answer the replayed initialize in time");
                self.crash(Cause::RebuildFailed("no answer to the replayed initialize".into()));
            }
            Some(Due::Restart { after_failed }) => {
                if after_failed {
                    tracing::info!("a restart slot is free again: trying one restart");
                }
                self.restart_child(true);
            }
            None => {}
        }
    }

    /// The server is no longer usable: answer what it owed, then stop it (a warm spare takes
    /// over at once, without waiting for it to exit).
    pub(super) fn crash(&mut self, cause: Cause) {
        self.settle_inflight(&cause, None);
        self.stop_child(StopReason::Crashed(cause));
        self.hand_over_to_spare();
    }

    /// Closes the server's stdin and starts its stop sequence.
    pub(super) fn stop_child(&mut self, why: StopReason) {
        if self.life.is_up() {
            self.child_in = None;
        }
        self.life.stop(why);
    }

    /// The generation is over (exited and drained, or never started).
    pub(super) fn after_child_gone(&mut self, ended: Ended) {
        let Ended { why, exit, uptime } = ended;
        let now = Instant::now();
        self.own.clear();
        // Orphans of the spares and of the processes still stopping are theirs to keep.
        let keep: Vec<u64> = self.standby_generations().collect();
        self.sweep_orphans(&keep);
        self.life.record_end(now, &why);
        if let StopReason::Crashed(cause) = &why {
            *self.metrics.crashes.entry(cause.metric_label(exit)).or_default() += 1;
        }
        self.liveness.stop();
        if self.life.shutting_down() || self.client.eof {
            self.settle_for_exit(&OwnError::ServerStopped);
            self.outcome.get_or_insert(Outcome::Stopped);
            return;
        }
        match why {
            StopReason::Shutdown => {
                self.outcome.get_or_insert(Outcome::Stopped);
            }
            StopReason::Restart => {
                self.settle_inflight(&Cause::Exited, exit);
                tracing::info!("starting a new server (requested restart)");
                self.restart_child(false);
            }
            StopReason::Crashed(cause) => {
                // Requests still owed are answered now (for an exit, after stdout was drained).
                self.settle_inflight(&cause, exit);
                match self.life.schedule_restart(now, uptime) {
                    // A warm spare needs no backoff: it is already started.
                    Scheduled::RestartAfter(_) if self.promote_spare(true) => {}
                    Scheduled::RestartAfter(delay) => {
                        tracing::info!("restarting the server in {}", crate::config::units::format_duration(delay));
                    }
                    Scheduled::Failed { until, give_up } => {
                        self.metrics.restart_limit_hits += 1;
                        let policy = &self.cfg.policy;
                        tracing::error!(
                            "server crashed {} times within {}: restart limit reached; {}",
                            policy.max_restarts,
                            crate::config::units::format_duration(policy.window),
                            if give_up {
                                "exiting (--on-failure exit)".to_owned()
                            } else {
                                format!(
                                    "next attempt in {}",
                                    crate::config::units::format_duration(until.saturating_duration_since(now))
                                )
                            }
                        );
                        if give_up {
                            self.settle_for_exit(&OwnError::GaveUp);
                            self.outcome = Some(Outcome::GaveUp);
                        } else {
                            let error = self.restart_limit_error(until);
                            let queued = self.queue.take_all();
                            self.refuse_queued(queued, &error);
                        }
                    }
                }
            }
        }
    }

    /// Answers or re-queues client requests the server was working on, and cancels the requests
    /// the server had sent to the client.
    fn settle_inflight(&mut self, cause: &Cause, exit: Option<ExitInfo>) {
        let mut requeue = Vec::new();
        // The same error for every request the server took down with it.
        let mut error: Option<OwnError> = None;
        for (id, req) in self.client_reqs.take_sent() {
            match (&req.line, self.may_resend(req.class)) {
                (Some(line), true) => {
                    tracing::info!(%id, method = &*req.method, "request will be re-sent to the new server");
                    requeue.push(Queued::request(line.clone(), id.clone(), req.seq));
                    self.client_reqs.insert(id, ClientRequest { sent: false, ..req });
                }
                _ => {
                    let error = match &error {
                        Some(e) => e.clone(),
                        None => error.insert(self.crash_error(cause, exit)).clone(),
                    };
                    self.reply_error(Some(&id), &error);
                }
            }
        }
        self.queue.requeue_front(requeue);
        for (id, req) in std::mem::take(&mut self.server_reqs) {
            tracing::debug!(%id, method = &*req.method, "cancelling the server's request to the client: the server is gone");
            self.send_to_client(jsonrpc::cancelled(&id, "the MCP server restarted"));
            self.orphaned_server_reqs.insert(id);
        }
        self.own.clear();
    }

    fn crash_error(&mut self, cause: &Cause, exit: Option<ExitInfo>) -> OwnError {
        OwnError::Crashed(Box::new(CrashReport {
            what: cause.describe(exit),
            cause: cause.key(),
            exit: exit.map(ExitInfo::to_json),
            stderr: self.tail.last(ERROR_STDERR_LINES),
            restarts_in_window: self.life.policy().restarts_in_window(Instant::now()),
            generation: self.life.generation(),
        }))
    }

    /// The error for requests that arrive while the server is Failed (until `until`).
    pub(super) fn restart_limit_error(&mut self, until: Instant) -> OwnError {
        let now = Instant::now();
        let last_exit = self.life.last_exit();
        let last_failure = match (self.life.last_spawn_error(), last_exit) {
            (Some(e), _) => e.to_owned(),
            (None, Some(exit)) => exit.to_string(),
            (None, None) => "unknown".to_owned(),
        };
        OwnError::RestartLimit(Box::new(LimitReport {
            restarts_in_window: self.life.policy().restarts_in_window(now),
            window: self.cfg.policy.window,
            max_restarts: self.cfg.policy.max_restarts,
            last_failure,
            last_exit: last_exit.map(ExitInfo::to_json),
            spawn_error: self.life.last_spawn_error().map(str::to_owned),
            stderr: self.tail.last(ERROR_STDERR_LINES),
            retry_in: until.saturating_duration_since(now),
        }))
    }

    /// Answers every pending client request before the instance ends. An open stateless-era
    /// subscription of a client that left needs no answer.
    pub(super) fn settle_for_exit(&mut self, error: &OwnError) {
        self.queue.take_all();
        for (id, req) in self.client_reqs.take_all() {
            if req.class == MethodClass::Listen && self.client.eof {
                continue;
            }
            self.reply_error(Some(&id), error);
        }
    }

    /// Kills what this instance's servers left behind outside their process groups (other than
    /// the processes of generation `keep`, still running). Other instances' are never touched.
    pub(super) fn sweep_orphans(&mut self, keep: &[u64]) {
        let killed = self.scope.sweep(keep);
        if !killed.is_empty() {
            tracing::warn!(
                generation = self.life.generation(),
                ?killed,
                "killed processes the server left behind outside its process group"
            );
        }
    }

    /// At the instance's end: a server still running (a forced exit skipped its stop) is killed
    /// with its group, then whatever escaped the group is swept.
    pub(super) fn end_generation_processes(&mut self) {
        drop(self.life.abandon());
        self.sweep_orphans(&[]);
    }
}
