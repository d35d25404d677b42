//! systemd integration through `sd_notify` (the sd-notify crate), once per process.
//!
//! With `NOTIFY_SOCKET` set (a `Type=notify` unit), mcpvisor reports:
//! - `READY=1` as soon as the server is up and no client handshake is in progress (before any
//!   client message: a unit whose client connects late must still be reported started);
//! - `STATUS=…`, a one-line summary, whenever it changes;
//! - `STOPPING=1` when it starts draining;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, only when the instance's own loop answers a health
//!   call in time and its server is not Failed, so that a stuck loop or a server that keeps
//!   crashing stops the pings and systemd's `WatchdogSec=` acts.
//!
//! Without `NOTIFY_SOCKET` nothing is sent. The variables are never passed to the server.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::config::units::format_duration;
use crate::instance::{Command, InstanceHandle, Reply, Summary};
use crate::observe::status::State;

pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    ready_sent: bool,
    stopping_sent: bool,
    last_status: String,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let pid_ok = std::env::var("WATCHDOG_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && enabled && pid_ok)
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier { enabled, watchdog, ready_sent: false, stopping_sent: false, last_status: String::new() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often to send `WATCHDOG=1` (half the configured timeout), if systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::debug!("sd_notify failed: {e}");
        }
    }

    fn ready(&mut self) {
        if self.enabled && !self.ready_sent {
            self.ready_sent = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    fn status(&mut self, line: &str) {
        if self.enabled && line != self.last_status {
            self.last_status = line.to_owned();
            self.send(&[NotifyState::Status(line)]);
        }
    }

    fn stopping(&mut self) {
        if self.enabled && !self.stopping_sent {
            self.stopping_sent = true;
            self.send(&[NotifyState::Stopping]);
        }
    }

    fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// A daemon is up: its listeners are open.
    pub fn daemon_ready(&mut self, servers: usize) {
        self.ready();
        self.status(&format!("serving {servers} server(s)"));
    }

    /// A daemon's one-line summary of its servers.
    pub fn daemon_status(&mut self, line: &str) {
        self.status(line);
    }

    /// The daemon's loop is alive.
    pub fn daemon_watchdog(&self) {
        self.watchdog();
    }

    /// A daemon started draining.
    pub fn daemon_stopping(&mut self) {
        self.stopping();
        self.status("draining");
    }

    /// Reports one instance's summaries and keeps the watchdog fed, until the instance ends.
    /// `window`: its restart window, for the STATUS line.
    pub async fn report(mut self, mut summary: watch::Receiver<Summary>, instance: InstanceHandle, window: Duration) {
        let mut watchdog = self.watchdog.map(tokio::time::interval);
        loop {
            let Summary { state, pid, restarts_in_window, .. } = *summary.borrow_and_update();
            match state {
                State::Ready => self.ready(),
                State::Draining => self.stopping(),
                _ => {}
            }
            let pid = pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            self.status(&format!(
                "{}: server pid {pid}, {restarts_in_window} restarts in the last {}",
                state.as_str(),
                format_duration(window)
            ));
            tokio::select! {
                changed = summary.changed() => if changed.is_err() { return },
                Some(every) = tick(&mut watchdog) => {
                    // The instance's loop answers itself: a stuck loop stops the pings.
                    match instance.call_within(Command::Health, every).await {
                        Ok(Reply::Health(state)) if state != State::Failed => self.watchdog(),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The next watchdog tick, with the interval's period; never, without a watchdog.
pub(crate) async fn tick(interval: &mut Option<tokio::time::Interval>) -> Option<Duration> {
    match interval {
        Some(interval) => {
            interval.tick().await;
            Some(interval.period())
        }
        None => std::future::pending().await,
    }
}
