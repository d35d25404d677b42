//! The server's states and why it leaves them, as types: one enum for where the current
//! generation is, one for why a generation ends. The text forms (status JSON, metric labels,
//! error messages) are derived here, in one place.

use std::time::{Duration, Instant};

use crate::observe::status::ExitCause;
use crate::process::ExitInfo;

/// What a lifecycle needs from a server process: a way to stop it and when it started.
/// [`crate::process::Child`] in mcpvisor; a stand-in in tests.
pub trait ChildControl {
    /// Starts the stop sequence (the caller has closed stdin).
    fn stop(&mut self);
    /// SIGKILLs the process group now.
    fn kill(&mut self);
    fn started(&self) -> Instant;
    fn pid(&self) -> u32;
}

impl ChildControl for crate::process::Child {
    fn stop(&mut self) {
        crate::process::Child::stop(self);
    }

    fn kill(&mut self) {
        crate::process::Child::kill(self);
    }

    fn started(&self) -> Instant {
        self.started
    }

    fn pid(&self) -> u32 {
        self.pid
    }
}

/// Why a server generation was given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// It exited (or was killed by a signal) on its own.
    Exited,
    /// It closed its stdout and kept running.
    StdoutClosed,
    /// It left too many liveness probes unanswered.
    Hung,
    /// It did not accept the replayed `initialize`.
    RebuildFailed(String),
    /// Its command could not be started again.
    SpawnFailed(String),
    /// Its process group was over `--max-memory`.
    Memory { rss: u64, limit: u64 },
}

impl Cause {
    /// The cause as `status` reports it (`last_exit.cause`).
    pub fn kind(&self) -> ExitCause {
        match self {
            Cause::Exited => ExitCause::Exited,
            Cause::StdoutClosed => ExitCause::StdoutClosed,
            Cause::Hung => ExitCause::Hung,
            Cause::RebuildFailed(_) => ExitCause::RebuildFailed,
            Cause::SpawnFailed(_) => ExitCause::SpawnFailed,
            Cause::Memory { .. } => ExitCause::Memory,
        }
    }

    /// The cause's name, as crash errors carry it (`data.cause`).
    pub fn key(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The `cause` label of `mcpvisor_crashes_total`: the key, with exits split by how they ended.
    pub fn metric_label(&self, exit: Option<ExitInfo>) -> &'static str {
        match (self, exit) {
            (Cause::Exited, Some(ExitInfo::Signal { .. })) => "signal",
            (Cause::Exited, _) => "exit_code",
            (other, _) => other.key(),
        }
    }

    /// What happened, as the end of "MCP server …" in a crash error.
    pub fn describe(&self, exit: Option<ExitInfo>) -> String {
        match (self, exit) {
            (Cause::Hung, _) => "stopped answering (hung)".to_owned(),
            (Cause::StdoutClosed, _) => "closed its stdout".to_owned(),
            (Cause::RebuildFailed(detail), _) => format!("could not be re-initialized ({detail})"),
            (Cause::SpawnFailed(detail), _) => format!("could not be started ({detail})"),
            (Cause::Memory { rss, limit }, _) => format!(
                "used {} MiB of memory, over the limit of {} MiB (mcpvisor --max-memory)",
                rss >> 20,
                limit >> 20
            ),
            (Cause::Exited, Some(exit)) => format!("crashed ({exit})"),
            (Cause::Exited, None) => "crashed".to_owned(),
        }
    }
}

/// Why a generation is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Crashed(Cause),
    /// A requested restart (SIGHUP, `mcpvisor restart`): not counted against the limit.
    Restart,
    Shutdown,
}

/// Where a running generation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the answer to the replayed `initialize` until the deadline; client traffic
    /// is queued.
    Rebuilding {
        deadline: Instant,
    },
    Ready,
}

/// The current generation, if any.
#[derive(Debug)]
pub enum ChildState<C> {
    Up {
        child: C,
        phase: Phase,
    },
    /// Being stopped, or exited and its stdout still being drained (until `drain_until`).
    Stopping {
        child: C,
        why: StopReason,
        exit: Option<ExitInfo>,
        drain_until: Option<Instant>,
    },
    /// Waiting before the next restart.
    Backoff {
        until: Instant,
    },
    /// The restart limit is reached; one restart is tried once a slot frees at `until`.
    Failed {
        until: Instant,
    },
    /// No server, and none coming (before the first start, or while exiting).
    Gone,
}

impl<C> ChildState<C> {
    /// For logs.
    pub fn name(&self) -> &'static str {
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

/// A generation that has ended: what [`super::Lifecycle::stop_finished`] hands back.
#[derive(Debug)]
pub struct Ended {
    pub why: StopReason,
    pub exit: Option<ExitInfo>,
    pub uptime: Duration,
}

/// How the last generation ended, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    Crashed(Cause),
    /// Stopped on purpose (a requested restart, or shutdown).
    Stopped,
}

impl EndCause {
    pub fn kind(&self) -> ExitCause {
        match self {
            EndCause::Crashed(cause) => cause.kind(),
            EndCause::Stopped => ExitCause::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn causes_have_one_key_label_and_description_each() {
        let killed = Some(ExitInfo::Signal { signal: Signal::SIGKILL, core_dumped: false });
        assert_eq!(Cause::Exited.metric_label(killed), "signal");
        assert_eq!(Cause::Exited.metric_label(Some(ExitInfo::Code(1))), "exit_code");
        let spawn = Cause::SpawnFailed("command not found".into());
        assert_eq!((spawn.key(), spawn.metric_label(None)), ("spawn_failed", "spawn_failed"));
        assert_eq!(Cause::Exited.describe(killed), "crashed (killed by SIGKILL)");
        let memory = Cause::Memory { rss: 300 << 20, limit: 256 << 20 };
        assert!(memory.describe(None).starts_with("used 300 MiB of memory, over the limit of 256 MiB"));
        for cause in [Cause::Exited, Cause::StdoutClosed, Cause::Hung, spawn, memory, Cause::RebuildFailed("x".into())]
        {
            assert!(crate::observe::metrics::CRASH_CAUSES.contains(&cause.metric_label(None)), "{cause:?}");
        }
        assert_eq!(EndCause::Stopped.kind().as_str(), "stopped");
    }
}
