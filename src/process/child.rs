//! One generation of a supervised server: a running process, its pipes, and the watcher task
//! that owns every signal sent to it.
//!
//! The watcher learns of the exit from the [`Reaper`](super::Reaper) and has it reap the
//! process. The stop sequence (MCP's, for stdio) runs in the watcher too: the instance closes
//! stdin (by dropping the stdin outbox), then asks for a stop; after `grace` the group gets
//! SIGTERM (and SIGCONT, in case it was stopped), after `kill_after` more SIGKILL.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tracing::Instrument;

use super::reaper::{signal_group, Reaper, Scope};
use super::spawn::{self, SpawnError};
use super::stderr::{self, SharedTail};
use super::ExitInfo;
use crate::config::{ChildSpec, StopTimings};
use crate::io::pipe::enlarge as enlarge_pipe;
use crate::io::Outbox;
use crate::protocol::framing::FramedReader;

/// How long an exit report waits for the child's stderr to reach its end.
const STDERR_SETTLE: Duration = Duration::from_millis(100);

/// Reported by the watcher once the child has exited and been reaped.
#[derive(Debug)]
pub struct ChildExit {
    pub generation: u64,
    pub exit: ExitInfo,
}

#[derive(Debug, Clone, Copy)]
enum StopCmd {
    /// Run the stop sequence (stdin has been closed already).
    Graceful,
    /// SIGKILL the group now.
    Kill,
}

/// A running child process.
pub struct Child {
    pub pid: u32,
    pub generation: u64,
    pub started: Instant,
    ctl: mpsc::UnboundedSender<StopCmd>,
    stderr_task: JoinHandle<()>,
    reaper: Reaper,
}

/// The child's stdin (dropping it closes the pipe) and stdout.
pub struct Pipes {
    pub stdin: Outbox,
    pub stdout: FramedReader<pipe::Receiver>,
}

/// What [`Child::spawn`] needs besides the command.
pub struct SpawnArgs<'a> {
    pub generation: u64,
    pub max_message: usize,
    pub timings: StopTimings,
    pub tail: SharedTail,
    pub exits: mpsc::UnboundedSender<ChildExit>,
    pub scope: &'a Scope,
}

impl Child {
    /// Starts generation `args.generation` of the server. Must be called inside the runtime.
    pub fn spawn(spec: &ChildSpec, args: SpawnArgs<'_>) -> Result<(Child, Pipes), SpawnError> {
        let SpawnArgs { generation, max_message, timings, tail, exits, scope } = args;
        let mut cmd = spawn::command(spec);
        let (mut std_child, exited) = scope.spawn(&mut cmd, generation).map_err(|e| SpawnError::new(spec, e))?;
        let pid = std_child.id();
        let pipes = (std_child.stdin.take(), std_child.stdout.take(), std_child.stderr.take());
        let reaper = scope.reaper().clone();
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let (stderr_done_tx, stderr_done) = oneshot::channel();
        // The tasks log on behalf of whoever spawned them (a daemon names its server in a span).
        tokio::spawn(
            watch(Watched {
                pid: Pid::from_raw(pid as i32),
                generation,
                timings,
                exited,
                ctl: ctl_rx,
                exits,
                reaper: reaper.clone(),
                stderr_done,
            })
            .in_current_span(),
        );

        let other = |e: std::io::Error| SpawnError::Other { program: spec.display(), source: e };
        let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
            let _ = ctl.send(StopCmd::Kill);
            return Err(other(std::io::Error::other("child pipes missing")));
        };
        let (stdin, stdout) = (OwnedFd::from(stdin), OwnedFd::from(stdout));
        enlarge_pipe(&stdin);
        enlarge_pipe(&stdout);
        let stdin = pipe::Sender::from_owned_fd(stdin).map_err(other)?;
        let stdout = pipe::Receiver::from_owned_fd(stdout).map_err(other)?;
        let stderr = pipe::Receiver::from_owned_fd(OwnedFd::from(stderr)).map_err(other)?;
        let (stdin, _) = Outbox::spawn(stdin);
        let stderr_task = tokio::spawn(stderr::drain(stderr, generation, tail, stderr_done_tx).in_current_span());
        let child = Child { pid, generation, started: Instant::now(), ctl, stderr_task, reaper };
        Ok((child, Pipes { stdin, stdout: FramedReader::new(stdout, max_message) }))
    }

    /// Starts the stop sequence; the caller closes stdin first by dropping it.
    pub fn stop(&mut self) {
        let _ = self.ctl.send(StopCmd::Graceful);
    }

    /// Skips the waits: SIGKILL the process group now.
    pub fn kill(&mut self) {
        let _ = self.ctl.send(StopCmd::Kill);
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stderr_task.abort();
        // A child dropped before it was reaped must not outlive mcpvisor (the watcher task may
        // never run again if the runtime is shutting down).
        self.reaper.kill_unreaped(self.pid);
    }
}

enum Phase {
    Running,
    Grace(Instant),
    Terminated(Instant),
    Killed,
}

/// What the watcher task owns for one child.
struct Watched {
    pid: Pid,
    generation: u64,
    timings: StopTimings,
    exited: oneshot::Receiver<ExitInfo>,
    ctl: mpsc::UnboundedReceiver<StopCmd>,
    exits: mpsc::UnboundedSender<ChildExit>,
    reaper: Reaper,
    /// Fires when the stderr drain reaches the end of the pipe.
    stderr_done: oneshot::Receiver<()>,
}

async fn watch(watched: Watched) {
    let Watched { pid, generation, timings, mut exited, mut ctl, exits, reaper, stderr_done } = watched;
    let mut phase = Phase::Running;
    let mut ctl_open = true;
    let exit = loop {
        let deadline = match phase {
            Phase::Grace(t) | Phase::Terminated(t) => Some(t),
            Phase::Running | Phase::Killed => None,
        };
        tokio::select! {
            exit = &mut exited => {
                break exit.unwrap_or_else(|_| {
                    // The reaper is gone (the runtime is shutting down): make sure of the end.
                    signal_group(pid, Signal::SIGKILL);
                    ExitInfo::Signal { signal: Signal::SIGKILL, core_dumped: false }
                });
            }
            cmd = ctl.recv(), if ctl_open => {
                let cmd = cmd.unwrap_or_else(|| {
                    // The instance let go of this child: nobody will ever talk to it.
                    ctl_open = false;
                    StopCmd::Kill
                });
                phase = match (cmd, phase) {
                    (StopCmd::Graceful, Phase::Running) => Phase::Grace(Instant::now() + timings.grace),
                    (StopCmd::Graceful, p) => p,
                    (StopCmd::Kill, _) => {
                        signal_group(pid, Signal::SIGKILL);
                        Phase::Killed
                    }
                };
            }
            _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                phase = match phase {
                    Phase::Grace(_) => {
                        tracing::info!(generation, pid = pid.as_raw(), "child still running after stdin was closed; sending SIGTERM");
                        signal_group(pid, Signal::SIGTERM);
                        signal_group(pid, Signal::SIGCONT);
                        Phase::Terminated(Instant::now() + timings.kill_after)
                    }
                    _ => {
                        tracing::warn!(generation, pid = pid.as_raw(), "child ignored SIGTERM; sending SIGKILL");
                        signal_group(pid, Signal::SIGKILL);
                        Phase::Killed
                    }
                };
            }
        }
    };
    reaper.reap(pid.as_raw() as u32);
    // The last stderr lines (a panic message, say) explain the exit: let the drain reach the end
    // of the pipe before the exit is reported, unless an escaped process still holds it open.
    let _ = tokio::time::timeout(STDERR_SETTLE, stderr_done).await;
    let _ = exits.send(ChildExit { generation, exit });
}
