//! The pool of a per-client server with `standby = N`: processes started ahead of their clients,
//! so that a new connection gets one that is already up and its `initialize` is answered in
//! milliseconds instead of after the server's start time.
//!
//! A pooled process is started as generation 1 of a reaper scope of its own, and the client that
//! takes it gets an instance in that scope ([`Instance::adopt`]), exactly as if the instance had
//! started it; nothing of the client's session is sent to it before the client sends it. The
//! pool's keeper task tops it up after each take, and replaces a pooled process that dies under
//! the spares' own restart limit ([`Standby`]), turning the pool off for a server whose pooled
//! processes keep dying at start. The daemon's stop closes the pool: pooled processes get EOF on
//! stdin and the stop sequence.
//!
//! [`Instance::adopt`]: crate::instance::Instance::adopt

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio::time::sleep_until;

use super::server::Shared;
use crate::config::serve::ServerConfig;
use crate::instance::Started;
use crate::lifecycle::standby::Standby;
use crate::observe::status::SpareStatus;
use crate::process::child::SpawnArgs;
use crate::process::{Child, ChildExit, Scope};

/// A pooled process that lives at least this long counts as started well (one that dies
/// sooner is a failure at start, which can turn the pool off).
const STARTED_WELL: Duration = Duration::from_secs(1);

/// A process waiting for its client, with the scope it was started in.
pub(crate) struct Pooled {
    pub scope: Scope,
    pub started: Started,
}

/// The pooled processes of one server; the keeper task fills it.
#[derive(Default)]
pub(crate) struct Pool {
    ready: Mutex<Vec<Pooled>>,
    /// A process was taken, the settings changed, or the pool was closed.
    changed: Notify,
    closed: Mutex<bool>,
    /// Why the pool was turned off, if it was.
    off: Mutex<Option<String>>,
    /// Processes of the pool in their stop sequence.
    stopping: AtomicUsize,
    stopped: Notify,
}

impl Pool {
    fn ready(&self) -> MutexGuard<'_, Vec<Pooled>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A started process for a new client, if one is waiting.
    pub fn take(&self) -> Option<Pooled> {
        let taken = self.ready().pop();
        if taken.is_some() {
            self.changed.notify_one();
        }
        taken
    }

    /// The settings changed: processes started under the old ones are replaced.
    pub fn flush(self: &Arc<Self>) {
        let old: Vec<Pooled> = std::mem::take(&mut *self.ready());
        old.into_iter().for_each(|p| stop(self, p));
        self.changed.notify_one();
    }

    /// Stops the pooled processes; none are started any more.
    pub fn close(self: &Arc<Self>) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.flush();
    }

    /// Resolves once no pooled process is left running.
    pub async fn stopped(&self) {
        loop {
            let notified = self.stopped.notified();
            if self.stopping.load(Ordering::Relaxed) == 0 && self.ready().is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn statuses(&self, now: Instant) -> Vec<SpareStatus> {
        let ready = self.ready();
        ready
            .iter()
            .map(|p| SpareStatus {
                pid: p.started.child.pid,
                generation: p.started.child.generation,
                state: "pooled".into(),
                uptime_secs: p.started.child.uptime(now).as_secs_f64(),
            })
            .collect()
    }

    pub fn off_because(&self) -> Option<String> {
        self.off.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Closes a pooled process's stdin and starts its stop sequence, holding it until it has exited
/// (dropping a child that still runs would SIGKILL it at once).
fn stop(pool: &Arc<Pool>, pooled: Pooled) {
    let Pooled { scope, started: Started { mut child, pipes, exits: (_, mut exits) } } = pooled;
    drop(pipes);
    child.stop();
    pool.stopping.fetch_add(1, Ordering::Relaxed);
    let pool = pool.clone();
    tokio::spawn(async move {
        let _ = exits.recv().await;
        drop(child);
        scope.sweep(&[]);
        pool.stopping.fetch_sub(1, Ordering::Relaxed);
        pool.stopped.notify_waiters();
    });
}

/// Keeps `shared`'s pool at its size until the pool is closed.
pub(super) async fn keep(shared: Arc<Shared>, pool: Arc<Pool>) {
    let mut settings = shared.cfg();
    let mut standby = Standby::new(settings.pool_size(), settings.instance.policy.clone());
    loop {
        if pool.is_closed() {
            return;
        }
        let cfg = shared.cfg();
        if !Arc::ptr_eq(&cfg, &settings) {
            // New settings (a reload): a pool that was turned off is tried again.
            standby.reconfigure(cfg.pool_size(), cfg.instance.policy.clone());
            *pool.off.lock().unwrap_or_else(PoisonError::into_inner) = None;
            settings = cfg.clone();
        }
        let size = cfg.pool_size();
        let now = Instant::now();
        let extra: Vec<Pooled> = {
            let mut ready = pool.ready();
            let keep = ready.len().min(size);
            ready.drain(keep..).collect()
        };
        extra.into_iter().for_each(|p| stop(&pool, p));
        let have = pool.ready().len();
        for _ in 0..standby.to_start(now, have, true) {
            standby.starting(now);
            match spawn(&shared, &cfg) {
                Ok(pooled) => {
                    tracing::info!(pid = pooled.started.child.pid, "pool: a process started for the next client");
                    pool.ready().push(pooled);
                }
                Err(e) => died(&pool, &mut standby, Duration::ZERO, &e),
            }
        }
        let deadline = standby.next_deadline(pool.ready().len());
        let changed = pool.changed.notified();
        tokio::select! {
            (pooled, exit) = next_exit(&pool) => {
                let uptime = pooled.started.child.uptime(Instant::now());
                tracing::warn!(pid = pooled.started.child.pid, "pool: a waiting process exited: {}", exit.exit);
                died(&pool, &mut standby, uptime, &exit.exit.to_string());
            }
            _ = changed => {}
            _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {}
        }
    }
}

fn died(pool: &Pool, standby: &mut Standby, uptime: Duration, what: &str) {
    if let Some(off) = standby.died(Instant::now(), uptime, uptime >= STARTED_WELL, what) {
        tracing::warn!("pool: {off}");
        *pool.off.lock().unwrap_or_else(PoisonError::into_inner) = Some(off);
    }
}

fn spawn(shared: &Shared, cfg: &ServerConfig) -> Result<Pooled, String> {
    let scope = shared.reaper.scope();
    let (tx, rx) = mpsc::unbounded_channel();
    let instance = &cfg.instance;
    let args = SpawnArgs {
        generation: 1,
        max_message: instance.max_message_size,
        timings: instance.stop,
        tail: shared.tail.clone(),
        exits: tx.clone(),
        scope: &scope,
    };
    let (child, pipes) = Child::spawn(&instance.spec, args).map_err(|e| e.to_string())?;
    Ok(Pooled { scope, started: Started { child, pipes, exits: (tx, rx) } })
}

/// The next pooled process to exit, taken out of the pool.
async fn next_exit(pool: &Pool) -> (Pooled, ChildExit) {
    poll_fn(|cx| {
        let mut ready = pool.ready();
        for index in 0..ready.len() {
            if let Poll::Ready(Some(exit)) = ready[index].started.exits.1.poll_recv(cx) {
                return Poll::Ready((ready.remove(index), exit));
            }
        }
        Poll::Pending
    })
    .await
}
