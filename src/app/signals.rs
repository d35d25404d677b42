//! Signals, which exist once per process: SIGTERM and SIGINT drain and stop the hosted
//! instance (a second one skips the waits), SIGHUP restarts its server gracefully. They reach
//! the instance as calls on its handle, like any other request.
//!
//! A second SIGTERM/SIGINT also has a last resort that does not depend on the event loop: a
//! thread outside the runtime ([`install_last_resort`]) that, if the process is still there a
//! few seconds after it, SIGKILLs every server's process group and exits.
//!
//! SIGPIPE needs nothing here: the Rust runtime ignores it, so a closed stdout is an EPIPE error
//! that the relay handles, never a silent death.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::instance::{Command, InstanceHandle};
use crate::process::Reaper;

/// How long after a second SIGTERM/SIGINT the event loop has to finish by itself.
pub const LAST_RESORT_AFTER: Duration = Duration::from_secs(3);

/// Test hook: with `MCPVISOR_FAULT=stall-on-signal`, handling SIGTERM/SIGINT blocks the event
/// loop's thread, to prove that a second signal still ends the process.
const FAULT_VAR: &str = "MCPVISOR_FAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: drain and exit (a second one skips the waits).
    Terminate(&'static str),
    /// SIGHUP: restart the server gracefully.
    Hangup,
}

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe.
    pub async fn recv(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Terminate("SIGTERM"),
            _ = self.int.recv() => SignalEvent::Terminate("SIGINT"),
            _ = self.hup.recv() => SignalEvent::Hangup,
        }
    }

    /// Hands every signal to the instance, for as long as it runs.
    pub async fn forward(mut self, instance: InstanceHandle) {
        let stall = std::env::var(FAULT_VAR).is_ok_and(|v| v == "stall-on-signal");
        loop {
            let command = match self.recv().await {
                SignalEvent::Terminate(signal) => {
                    if stall {
                        tracing::warn!("{FAULT_VAR}=stall-on-signal: blocking the event loop");
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                    Command::Terminate { signal }
                }
                SignalEvent::Hangup => Command::Restart { why: "SIGHUP", clear_failed: false },
            };
            if let Err(e) = instance.call(command).await {
                tracing::debug!("a signal could not be handed to the instance: {e}");
            }
        }
    }
}

/// Starts the thread that ends mcpvisor when a second SIGTERM/SIGINT is not handled within
/// [`LAST_RESORT_AFTER`] (an event loop that is stuck): every server's process group gets SIGKILL,
/// what escaped the groups is swept, and the process exits with status 1.
pub fn install_last_resort(reaper: Reaper) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new().name("mcpvisor-last-resort".into()).spawn(move || {
        if signals.forever().nth(1).is_none() {
            return;
        }
        std::thread::sleep(LAST_RESORT_AFTER);
        let groups = reaper.kill_all();
        let swept = reaper.sweep_all();
        let message = format!(
            "the event loop did not stop within {}s of a second signal: killed {groups} server process group(s) and {} other process(es); exiting",
            LAST_RESORT_AFTER.as_secs(),
            swept.len()
        );
        tracing::error!("{message}");
        eprintln!("mcpvisor: {message}");
        // Give the log writer thread a moment to write the line above.
        std::thread::sleep(Duration::from_millis(50));
        std::process::exit(i32::from(crate::exit::FAILURE));
    })?;
    Ok(())
}
