//! The process's reaper: everything about child processes that exists once per process, shared
//! by every instance it hosts.
//!
//! - mcpvisor is a child subreaper: a descendant whose parent dies (a daemon that double-forked,
//!   or one that called setsid to leave its server's process group) is re-parented to mcpvisor
//!   instead of init, so it can still be found and stopped.
//! - One task listens for SIGCHLD. For each registered server (a process-group leader an instance
//!   started) it checks `waitid(WNOWAIT)` and tells that server's watcher, which kills what is
//!   left of the group while the unreaped leader still pins the group id, then reaps it through
//!   [`Reaper::reap`]. Registration, that kill and the reaping happen under one lock, so no
//!   group id is ever signalled after its leader was reaped (when it could have been reused).
//! - Orphans that die are reaped too (when adopting), so they do not pile up as zombies.
//! - Every server a [`Scope`] (one per instance) starts carries `MCPVISOR_SCOPE` in its
//!   environment, which its descendants inherit. When a server generation ends, the instance
//!   sweeps its scope: orphans carrying its marker are killed, and nobody else's. Processes that
//!   drop the variable from their environment are only caught by the final sweep at exit.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id as WaitId, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use super::{procfs, ExitInfo};

/// The environment variable that marks a server's process tree: `MCPVISOR_PID.SCOPE.GENERATION`.
pub const SCOPE_VAR: &str = "MCPVISOR_SCOPE";

/// How many times a sweep looks again for processes re-parented by the kills of the last pass.
const SWEEP_PASSES: usize = 8;

/// The process-wide reaper. Cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    inner: Arc<Inner>,
}

struct Inner {
    leaders: Mutex<HashMap<i32, Leader>>,
    next_scope: AtomicU64,
    adopt_orphans: bool,
    me: i32,
}

struct Leader {
    /// Taken once the exit has been reported to the watcher.
    exited: Option<oneshot::Sender<ExitInfo>>,
}

impl Reaper {
    /// Becomes the subreaper and starts listening for SIGCHLD. With `adopt_orphans`, dead
    /// children that no instance started are reaped as well: use it only in a process that
    /// starts no other children it waits for itself. Must be called inside the runtime, before
    /// any server is spawned.
    pub fn start(adopt_orphans: bool) -> io::Result<Reaper> {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::debug!("cannot become a child subreaper: {e}; escaped grandchildren will go to init");
        }
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            inner: Arc::new(Inner {
                leaders: Mutex::new(HashMap::new()),
                next_scope: AtomicU64::new(0),
                adopt_orphans,
                me: std::process::id() as i32,
            }),
        };
        let task = reaper.clone();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                task.check();
            }
        });
        Ok(reaper)
    }

    /// A scope for one instance's servers.
    pub fn scope(&self) -> Scope {
        Scope { reaper: self.clone(), id: self.inner.next_scope.fetch_add(1, Ordering::Relaxed) + 1 }
    }

    fn leaders(&self) -> MutexGuard<'_, HashMap<i32, Leader>> {
        // Every change under this lock is a single insert or remove: a poisoned lock is still sound.
        self.inner.leaders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports exited servers to their watchers, and reaps dead orphans.
    fn check(&self) {
        let mut leaders = self.leaders();
        for (pid, leader) in leaders.iter_mut() {
            if leader.exited.is_some() {
                if let Some(exit) = exited(Pid::from_raw(*pid)) {
                    if let Some(tx) = leader.exited.take() {
                        let _ = tx.send(exit);
                    }
                }
            }
        }
        if self.inner.adopt_orphans {
            for p in procfs::child_processes(self.inner.me) {
                if p.is_zombie() && !leaders.contains_key(&p.pid) {
                    let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
                }
            }
        }
    }

    /// Kills what is left of an exited server's process group and reaps the server. Called by
    /// its watcher once the exit was reported.
    pub fn reap(&self, pid: u32) {
        let pid = Pid::from_raw(pid as i32);
        let mut leaders = self.leaders();
        // The leader is a zombie, so the group id is still its own.
        signal_group(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        leaders.remove(&pid.as_raw());
    }

    /// SIGKILLs a server's group unless it was reaped already (a server dropped while running).
    pub fn kill_unreaped(&self, pid: u32) {
        let leaders = self.leaders();
        if leaders.contains_key(&(pid as i32)) {
            signal_group(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }

    /// SIGKILLs every server's process group that is not reaped yet; returns how many. For an exit
    /// that cannot wait for the instances to stop their servers.
    pub fn kill_all(&self) -> usize {
        let leaders = self.leaders();
        for pid in leaders.keys() {
            signal_group(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        leaders.len()
    }

    /// Kills and reaps every child that is not a registered server: at exit, nothing mcpvisor
    /// adopted may outlive it. Returns their pids.
    pub fn sweep_all(&self) -> Vec<i32> {
        self.sweep(|_| true)
    }

    fn sweep(&self, mut wanted: impl FnMut(i32) -> bool) -> Vec<i32> {
        let leaders = self.leaders();
        let mut killed = Vec::new();
        for _ in 0..SWEEP_PASSES {
            let orphans: Vec<i32> = procfs::child_processes(self.inner.me)
                .into_iter()
                .filter(|p| p.ppid == self.inner.me && !leaders.contains_key(&p.pid) && wanted(p.pid))
                .map(|p| p.pid)
                .collect();
            if orphans.is_empty() {
                break;
            }
            for pid in orphans {
                let pid = Pid::from_raw(pid);
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                killed.push(pid.as_raw());
            }
        }
        killed
    }
}

/// One instance's share of the reaper: the servers it starts are marked as its own.
pub struct Scope {
    reaper: Reaper,
    id: u64,
}

impl Scope {
    fn marker(&self, generation: u64) -> String {
        format!("{}.{}.{generation}", self.reaper.inner.me, self.id)
    }

    /// Spawns `cmd` as generation `generation` of this scope's server and registers it; the
    /// receiver fires when it has exited (it is then still unreaped: see [`Reaper::reap`]).
    pub fn spawn(
        &self,
        cmd: &mut Command,
        generation: u64,
    ) -> io::Result<(std::process::Child, oneshot::Receiver<ExitInfo>)> {
        cmd.env(SCOPE_VAR, self.marker(generation));
        let (tx, rx) = oneshot::channel();
        // Spawned under the lock, so the SIGCHLD task cannot see the new child unregistered.
        let mut leaders = self.reaper.leaders();
        let child = cmd.spawn()?;
        leaders.insert(child.id() as i32, Leader { exited: Some(tx) });
        Ok((child, rx))
    }

    /// Kills and reaps the orphans of this scope's servers (other than those of the generations
    /// in `keep`, whose processes still run). Returns their pids.
    pub fn sweep(&self, keep: &[u64]) -> Vec<i32> {
        let prefix = format!("{}.{}.", self.reaper.inner.me, self.id);
        self.reaper.sweep(|pid| {
            let Some(marker) = procfs::environ_var(pid, SCOPE_VAR) else { return false };
            let Some(generation) = marker.strip_prefix(&prefix) else { return false };
            !generation.parse().is_ok_and(|g: u64| keep.contains(&g))
        })
    }

    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }
}

/// A server's exit, observed without reaping it.
fn exited(pid: Pid) -> Option<ExitInfo> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(WaitId::Pid(pid), flags) {
        Ok(status) => ExitInfo::from_status(status),
        // ECHILD: already reaped by someone else; nothing more will ever be learned.
        Err(nix::errno::Errno::ECHILD) => Some(ExitInfo::Code(-1)),
        Err(_) => None,
    }
}

/// Signals a process group; one that is already gone is not an error.
pub fn signal_group(pid: Pid, signal: Signal) {
    match killpg(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid = pid.as_raw(), "cannot send {} to the process group: {e}", signal.as_str()),
    }
}
