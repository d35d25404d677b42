//! Calls from the host (the control socket, HTTP, signals, systemd's watchdog), and the two
//! requests that change the instance's course: a graceful restart and a shutdown.

use std::time::Instant;

use super::{Command, Instance, Outcome, Reply};
use crate::lifecycle::{RestartStep, ShutdownStep};
use crate::port::ClientInput;
use crate::protocol::errors::OwnError;

impl<I: ClientInput> Instance<I> {
    pub(super) fn on_call(&mut self, command: Command) -> Reply {
        match command {
            Command::Status => Reply::Status(Box::new(self.status())),
            Command::Health => Reply::Health(self.life.public_state(self.session.handshake_in_progress())),
            Command::Restart { why, clear_failed } => self.request_restart(why, clear_failed),
            Command::Stop { why } => {
                tracing::info!("{why}: draining and shutting down");
                self.begin_shutdown(why);
                Reply::Done("draining and stopping".into())
            }
            Command::Terminate { signal } => {
                if self.life.shutting_down() {
                    tracing::warn!("{signal} again: skipping the waits");
                    self.force_exit();
                } else {
                    tracing::info!("{signal}: draining and shutting down");
                    self.begin_shutdown(signal);
                }
                Reply::Done("stopping".into())
            }
            Command::Logs { lines } => Reply::Logs(self.tail.last(lines)),
            Command::Metrics => {
                let status = self.status();
                Reply::Metrics(crate::observe::metrics::render(&self.metrics, &status))
            }
            Command::Counters => Reply::Counters(Box::new(self.metrics.clone())),
            Command::Reconfigure(cfg) => self.reconfigure(*cfg),
        }
    }

    fn request_restart(&mut self, why: &'static str, clear_failed: bool) -> Reply {
        if clear_failed && self.life.failed_until().is_some() && !self.life.shutting_down() {
            tracing::info!("{why}: clearing the Failed state");
        }
        match self.life.request_restart(Instant::now(), clear_failed) {
            RestartStep::Refused => return Reply::Refused("mcpvisor is shutting down".into()),
            RestartStep::Scheduled => {
                tracing::info!("{why}: restarting the server gracefully (in-flight requests first)")
            }
            RestartStep::StartNow => {
                tracing::info!("{why}: starting the server now");
                self.restart_child(false);
            }
            RestartStep::AlreadyUnderWay => tracing::info!("{why}: a restart is already under way"),
        }
        Reply::Done("restarting the server".into())
    }

    fn reconfigure(&mut self, cfg: crate::config::InstanceConfig) -> Reply {
        self.life.reconfigure(cfg.policy.clone(), cfg.on_failure, cfg.drain_timeout);
        // Spares run the old settings: new ones are started after the restart.
        self.stop_spares(false);
        self.standby.reconfigure(cfg.standby, cfg.policy.clone());
        self.liveness.reconfigure(cfg.ping_interval, cfg.ping_timeout, cfg.ping_failures);
        self.queue.set_limits(cfg.queue_limit, cfg.max_inflight);
        self.cfg = cfg;
        self.request_restart("the configuration changed", false)
    }

    /// Starts a shutdown: new requests are refused, in-flight ones may finish (unless the client
    /// is gone), then the server is stopped and the instance ends.
    pub(super) fn begin_shutdown(&mut self, why: &str) {
        if self.life.shutting_down() {
            return;
        }
        tracing::debug!("shutdown: {why}");
        self.stop_spares(false);
        // Queued messages never reached the server: answer them now.
        let queued = self.queue.take_all();
        self.refuse_queued(queued, &OwnError::NotDelivered);
        match self.life.request_shutdown(Instant::now(), self.client.gone) {
            ShutdownStep::AlreadyUnderWay | ShutdownStep::Draining => {}
            ShutdownStep::StopNow => self.stop_for_shutdown(),
            ShutdownStep::Done => {
                self.settle_for_exit(&OwnError::ShuttingDown);
                self.outcome.get_or_insert(Outcome::Stopped);
            }
        }
    }

    /// The drain is over (or skipped): what is still owed gets an error, and the server is
    /// stopped.
    pub(super) fn stop_for_shutdown(&mut self) {
        let pending = self.client_reqs.awaiting_child();
        if pending > 0 {
            tracing::warn!(pending, "drain timeout: answering unfinished requests with an error");
        }
        self.stop_server_for_exit(&OwnError::ServerStopped, false);
    }

    /// A second SIGTERM: every request gets its answer now, and the server's group SIGKILL.
    fn force_exit(&mut self) {
        self.stop_spares(true);
        self.stop_server_for_exit(&OwnError::ShuttingDown, true);
    }

    /// Answers what is still owed with `error` and stops the server (skipping every wait with
    /// `force`); with no server left to stop, the instance ends.
    fn stop_server_for_exit(&mut self, error: &OwnError, force: bool) {
        self.settle_for_exit(error);
        let was_up = self.life.is_up();
        let stopping = if force { self.life.force() } else { self.life.stop_for_shutdown() };
        if !stopping {
            self.outcome.get_or_insert(Outcome::Stopped);
        } else if was_up {
            self.child_in = None;
        }
    }
}
