//! systemd integration through `sd_notify` (the sd-notify crate).
//!
//! With `NOTIFY_SOCKET` set (a `Type=notify` unit), mcpvisor reports:
//! - `READY=1` once the server is up and, if a client had already sent `initialize`, answered it;
//! - `STATUS=…`, a one-line summary, whenever it changes;
//! - `STOPPING=1` when it starts draining;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, from the supervisor loop itself and only while the
//!   server is not Failed, so that a stuck loop or a server that keeps crashing stops the pings and
//!   systemd's `WatchdogSec=` acts.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. The variables are never passed to the server.

use std::time::Duration;

use sd_notify::NotifyState;

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

    pub fn ready(&mut self) {
        if self.enabled && !self.ready_sent {
            self.ready_sent = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    pub fn status(&mut self, line: &str) {
        if self.enabled && line != self.last_status {
            self.last_status = line.to_owned();
            self.send(&[NotifyState::Status(line)]);
        }
    }

    pub fn stopping(&mut self) {
        if self.enabled && !self.stopping_sent {
            self.stopping_sent = true;
            self.send(&[NotifyState::Stopping]);
        }
    }

    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}
