//! One generation of the supervised server process.
//!
//! [`Child::spawn`] starts the command in a process group of its own (so the whole tree can be
//! signalled: `npx` → `sh` → `node`, `uv run` → `python`), with CLOEXEC pipes for stdin, stdout
//! and stderr, and without systemd's per-service variables (`NOTIFY_SOCKET`, `WATCHDOG_*`,
//! `LISTEN_*`), which belong to mcpvisor and would confuse a server that understands them.
//!
//! A watcher task per child owns every signal sent to it. It learns of the exit from SIGCHLD
//! with `waitid(WNOWAIT)`, which leaves the leader a zombie: its pid, which is also the group id,
//! cannot be reused yet, so killing the group's leftovers is safe. Only then is the zombie
//! reaped and the exit reported. No pid is ever signalled after it was reaped.
//!
//! The stop sequence (MCP's for stdio) runs in the watcher too: the supervisor closes stdin (by
//! dropping the stdin outbox), then asks for a stop; after `grace` the group gets SIGTERM (and
//! SIGCONT, in case it was stopped), after `kill_after` more SIGKILL.
//!
//! stderr is drained line by line into the log and into a bounded tail kept for error reports.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id as WaitId, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use crate::cli::EnvVar;
use crate::framing::{Frame, FramedReader};
use crate::procfs;
use crate::writer::Outbox;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<EnvVar>,
    /// `--limit-nofile`: RLIMIT_NOFILE (soft and hard) for the server.
    pub limit_nofile: Option<u64>,
    /// `--limit-as`: RLIMIT_AS (soft and hard), in bytes.
    pub limit_as: Option<u64>,
}

impl ChildSpec {
    /// The command line for messages.
    pub fn display(&self) -> String {
        std::iter::once(&self.program).chain(&self.args).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    }
}

/// Timings of the stop sequence.
#[derive(Debug, Clone, Copy)]
pub struct StopTimings {
    pub grace: Duration,
    pub kill_after: Duration,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    Code(i32),
    Signal { signal: Signal, core_dumped: bool },
}

impl ExitInfo {
    fn from_status(status: WaitStatus) -> Option<ExitInfo> {
        match status {
            WaitStatus::Exited(_, code) => Some(ExitInfo::Code(code)),
            WaitStatus::Signaled(_, signal, core_dumped) => Some(ExitInfo::Signal { signal, core_dumped }),
            _ => None,
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        match self {
            ExitInfo::Code(code) => serde_json::json!({ "code": code }),
            ExitInfo::Signal { signal, core_dumped } => {
                serde_json::json!({ "signal": signal.as_str(), "core_dumped": core_dumped })
            }
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(code) => write!(f, "exit code {code}"),
            ExitInfo::Signal { signal, core_dumped: true } => write!(f, "killed by {} (core dumped)", signal.as_str()),
            ExitInfo::Signal { signal, .. } => write!(f, "killed by {}", signal.as_str()),
        }
    }
}

/// The command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("command not found: `{program}` (check the name, install it, or give an absolute path)")]
    NotFound { program: String },
    #[error("permission denied running `{program}` (is it executable?)")]
    PermissionDenied { program: String },
    #[error("working directory `{dir}` is not usable: {source}")]
    Cwd { dir: String, source: std::io::Error },
    #[error("cannot start `{program}`: {source}")]
    Other { program: String, source: std::io::Error },
}

impl SpawnError {
    fn new(spec: &ChildSpec, source: std::io::Error) -> SpawnError {
        let program = spec.program.to_string_lossy().into_owned();
        if let Some(dir) = &spec.cwd {
            if !dir.is_dir() {
                return SpawnError::Cwd { dir: dir.display().to_string(), source };
            }
        }
        match source.kind() {
            std::io::ErrorKind::NotFound => SpawnError::NotFound { program },
            std::io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied { program },
            _ => SpawnError::Other { program, source },
        }
    }
}

/// Reported by the watcher once the child has exited and been reaped.
#[derive(Debug)]
pub struct ChildExit {
    pub generation: u64,
    pub exit: ExitInfo,
}

/// The last lines a child wrote to stderr, and how many it wrote in all.
#[derive(Debug, Default)]
pub struct StderrTail {
    lines: VecDeque<String>,
    total: u64,
}

const STDERR_TAIL_LINES: usize = 100;
/// stderr lines longer than this are cut in the log.
const STDERR_MAX_LINE: usize = 16 * 1024;

impl StderrTail {
    fn push(&mut self, line: String) {
        if self.lines.len() == STDERR_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.total += 1;
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n)).cloned().collect()
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

pub type SharedTail = Arc<Mutex<StderrTail>>;

/// Reads the last `n` stderr lines from a shared tail.
pub fn tail_lines(tail: &SharedTail, n: usize) -> Vec<String> {
    tail.lock().map(|t| t.last(n)).unwrap_or_default()
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
    /// Whether the watcher has reaped the child; guards the kill in `Drop`.
    reaped: Arc<Mutex<bool>>,
}

impl Child {
    /// Starts a child and returns it with its stdin (dropping it closes the pipe) and its stdout.
    /// Must be called inside the runtime.
    pub fn spawn(
        spec: &ChildSpec,
        generation: u64,
        max_message: usize,
        timings: StopTimings,
        tail: SharedTail,
        exits: mpsc::UnboundedSender<ChildExit>,
    ) -> Result<(Child, Outbox, FramedReader<pipe::Receiver>), SpawnError> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") || k.starts_with("LISTEN_") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(spec.env.iter().map(|var| (&var.key, &var.value)));
        let limits: Vec<(Resource, u64)> =
            [(Resource::RLIMIT_NOFILE, spec.limit_nofile), (Resource::RLIMIT_AS, spec.limit_as)]
                .into_iter()
                .filter_map(|(resource, limit)| Some((resource, limit?)))
                .collect();
        if !limits.is_empty() {
            // SAFETY: the closure runs in the forked child before exec, where only
            // async-signal-safe calls are allowed; setrlimit is a plain system call that neither
            // allocates nor takes locks (the list was built before the fork). std offers no safe
            // way to set a limit for the child only.
            unsafe {
                cmd.pre_exec(move || {
                    for (resource, limit) in &limits {
                        setrlimit(*resource, *limit, *limit).map_err(std::io::Error::from)?;
                    }
                    Ok(())
                });
            }
        }

        // Listen for SIGCHLD before the child exists, so an instant exit cannot be missed.
        let sigchld = signal(SignalKind::child()).map_err(|e| SpawnError::new(spec, e))?;
        let mut std_child = cmd.spawn().map_err(|e| SpawnError::new(spec, e))?;
        let pid = std_child.id();
        let pipes = (std_child.stdin.take(), std_child.stdout.take(), std_child.stderr.take());
        let reaped = Arc::new(Mutex::new(false));
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let (stderr_done_tx, stderr_done) = oneshot::channel();
        tokio::spawn(watch(Watched {
            pid: Pid::from_raw(pid as i32),
            generation,
            timings,
            sigchld,
            ctl: ctl_rx,
            exits,
            reaped: reaped.clone(),
            stderr_done,
        }));

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
        let (stdin, _) = Outbox::spawn(stdin, move |e| {
            tracing::debug!(generation, "writing to the child's stdin failed: {e}");
        });
        let stderr_task = tokio::spawn(drain_stderr(stderr, generation, tail, stderr_done_tx));
        let child = Child { pid, generation, started: Instant::now(), ctl, stderr_task, reaped };
        Ok((child, stdin, FramedReader::new(stdout, max_message)))
    }

    /// Starts the stop sequence; the caller closes stdin first by dropping it.
    pub fn stop(&mut self) {
        let _ = self.ctl.send(StopCmd::Graceful);
    }

    /// Skips the waits: SIGKILL the process group now.
    pub fn kill(&mut self) {
        let _ = self.ctl.send(StopCmd::Kill);
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stderr_task.abort();
        // A child dropped before it was reaped must not outlive mcpvisor (the watcher task may
        // never run again if the runtime is shutting down).
        if let Ok(reaped) = self.reaped.lock() {
            if !*reaped {
                let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            }
        }
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
    sigchld: tokio::signal::unix::Signal,
    ctl: mpsc::UnboundedReceiver<StopCmd>,
    exits: mpsc::UnboundedSender<ChildExit>,
    reaped: Arc<Mutex<bool>>,
    /// Fires when the stderr drain reaches the end of the pipe.
    stderr_done: oneshot::Receiver<()>,
}

async fn watch(watched: Watched) {
    let Watched { pid, generation, timings, mut sigchld, mut ctl, exits, reaped, stderr_done } = watched;
    let mut phase = Phase::Running;
    let mut ctl_open = true;
    let exit = loop {
        if let Some(exit) = exited(pid) {
            break exit;
        }
        let deadline = match phase {
            Phase::Grace(t) | Phase::Terminated(t) => Some(t),
            Phase::Running | Phase::Killed => None,
        };
        tokio::select! {
            _ = sigchld.recv() => {}
            cmd = ctl.recv(), if ctl_open => {
                let cmd = cmd.unwrap_or_else(|| {
                    // The supervisor let go of this child: nobody will ever talk to it.
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
    {
        let mut reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
        // The leader is a zombie, so the group id is still ours: clean up what it left behind.
        signal_group(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        *reaped = true;
    }
    // The last stderr lines (a panic message, say) explain the exit: let the drain reach the end
    // of the pipe before the exit is reported, unless an escaped process still holds it open.
    let _ = tokio::time::timeout(STDERR_SETTLE, stderr_done).await;
    let _ = exits.send(ChildExit { generation, exit });
}

/// The child's exit, observed without reaping it.
fn exited(pid: Pid) -> Option<ExitInfo> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(WaitId::Pid(pid), flags) {
        Ok(status) => ExitInfo::from_status(status),
        // ECHILD: already reaped by someone else; nothing more will ever be learned.
        Err(nix::errno::Errno::ECHILD) => Some(ExitInfo::Code(-1)),
        Err(_) => None,
    }
}

fn signal_group(pid: Pid, signal: Signal) {
    match killpg(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid = pid.as_raw(), "cannot send {} to the process group: {e}", signal.as_str()),
    }
}

/// Makes mcpvisor the reaper of its servers' orphans: a descendant whose parent dies (a daemon that
/// double-forked, or one that called setsid to leave the server's process group and session) is
/// re-parented to mcpvisor instead of init, so [`kill_orphans`] can find it. Best effort.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!("cannot become a child subreaper: {e}; escaped grandchildren will go to init");
    }
}

/// Kills and reaps mcpvisor's children other than a running server: descendants of a server that
/// is gone, which left its process group (so the group kill missed them) and were re-parented to
/// mcpvisor. Called when no server is running. Returns their pids.
pub fn kill_orphans() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    for orphan in procfs::processes().into_iter().filter(|p| p.ppid == me) {
        let pid = Pid::from_raw(orphan.pid);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        killed.push(orphan.pid);
    }
    killed
}

/// The resident memory, in bytes, of the processes in process group `pgid` (a server and the
/// descendants that stayed in its group).
pub fn group_rss_bytes(pgid: u32) -> u64 {
    procfs::processes().into_iter().filter(|p| p.pgrp == pgid as i32).map(|p| procfs::resident_bytes(p.pid)).sum()
}

/// Capacity asked for the child's stdin and stdout pipes: a whole large message fits, so it is
/// handed to the kernel in one write (its buffer freed at once, not held in mcpvisor's memory) and
/// the child reads or writes it without a context switch per 64 KiB. 1 MiB is the default
/// unprivileged maximum (/proc/sys/fs/pipe-max-size).
pub const PIPE_CAPACITY: i32 = 1024 * 1024;

/// Best effort: past the per-user pipe memory limit the kernel refuses, and the default 64 KiB
/// pipe still works.
pub fn enlarge_pipe(fd: &impl std::os::fd::AsFd) {
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY)) {
        tracing::debug!("cannot enlarge a pipe to {PIPE_CAPACITY} bytes: {e}");
    }
}

/// How long an exit report waits for the child's stderr to reach its end.
const STDERR_SETTLE: Duration = Duration::from_millis(100);

async fn drain_stderr(stderr: pipe::Receiver, generation: u64, tail: SharedTail, done: oneshot::Sender<()>) {
    let mut lines = FramedReader::new(stderr, STDERR_MAX_LINE);
    while let Ok(Some(frame)) = lines.next().await {
        let line = match frame {
            Frame::Line(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Frame::Oversized { len, head } => {
                format!("{}… [{len} bytes, cut]", String::from_utf8_lossy(&head[..head.len().min(1024)]))
            }
        };
        tracing::info!(target: "mcpvisor::child", generation, "stderr: {line}");
        if let Ok(mut tail) = tail.lock() {
            tail.push(line);
        }
    }
    let _ = done.send(());
}
