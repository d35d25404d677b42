//! Server processes: starting one ([`spawn`]), watching and stopping a running one ([`child`]),
//! draining its stderr ([`stderr`]), reading `/proc` ([`procfs`]), and the process-wide
//! [`reaper`] that every instance registers its servers with.

pub mod child;
pub mod procfs;
pub mod reaper;
pub mod spawn;
pub mod stderr;

use std::fmt;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

pub use child::{Child, ChildExit, Pipes};
pub use reaper::{Reaper, Scope};
pub use spawn::SpawnError;
pub use stderr::SharedTail;

/// How a process ended.
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
