//! How the rest of the process talks to a running instance: a [`Command`] sent over a channel,
//! answered with a [`Reply`] by the instance's own loop, so whatever it reports comes from the
//! state it owns and nothing is shared or locked. The control socket, the HTTP endpoints, the
//! signal handling and systemd's watchdog all go through an [`InstanceHandle`].

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::observe::status::{State, Status};

/// How long a caller waits for an answer by default: long enough for a loaded machine, short
/// enough that a stuck instance is noticed.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What an instance can be asked.
#[derive(Debug, Clone)]
pub enum Command {
    /// The full status snapshot.
    Status,
    /// Just the state: proof that the loop answers (systemd's watchdog, `/healthz`).
    Health,
    /// A graceful restart of the server; `clear_failed` also forgets the restart history.
    Restart { why: &'static str, clear_failed: bool },
    /// Drain in-flight requests, stop the server and end the instance.
    Stop { why: &'static str },
    /// As `Stop`, for SIGTERM/SIGINT: during a shutdown already under way it skips the waits.
    Terminate { signal: &'static str },
    /// The last `lines` lines the server wrote to stderr.
    Logs { lines: usize },
    /// The Prometheus text exposition.
    Metrics,
    /// The counters themselves, for a host that adds up several instances.
    Counters,
    /// New settings (a reloaded daemon file): the server restarts gracefully under them, and the
    /// client's session is rebuilt on the new process.
    Reconfigure(Box<crate::config::InstanceConfig>),
}

/// An instance's answer.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(Box<Status>),
    Health(State),
    /// The request was taken; what is happening now.
    Done(String),
    /// The request cannot be carried out now, and why.
    Refused(String),
    Logs(Vec<String>),
    Metrics(String),
    Counters(Box<crate::observe::metrics::Metrics>),
}

/// A command with the channel for its answer, as the instance receives it.
pub struct Call {
    pub command: Command,
    pub reply: oneshot::Sender<Reply>,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the instance has stopped")]
    Gone,
    #[error("the instance did not answer within {}s", .0.as_secs_f64())]
    Timeout(Duration),
}

/// A cheap, cloneable way to reach one instance.
#[derive(Clone)]
pub struct InstanceHandle {
    tx: mpsc::Sender<Call>,
}

impl InstanceHandle {
    /// A handle and the receiving end the instance listens on.
    pub fn channel() -> (InstanceHandle, mpsc::Receiver<Call>) {
        let (tx, rx) = mpsc::channel(16);
        (InstanceHandle { tx }, rx)
    }

    /// Asks and waits up to [`ANSWER_TIMEOUT`] for the answer.
    pub async fn call(&self, command: Command) -> Result<Reply, CallError> {
        self.call_within(command, ANSWER_TIMEOUT).await
    }

    /// Asks and waits up to `timeout` (sending included) for the answer.
    pub async fn call_within(&self, command: Command, timeout: Duration) -> Result<Reply, CallError> {
        let ask = async {
            let (reply, rx) = oneshot::channel();
            self.tx.send(Call { command, reply }).await.map_err(|_| CallError::Gone)?;
            rx.await.map_err(|_| CallError::Gone)
        };
        tokio::time::timeout(timeout, ask).await.map_err(|_| CallError::Timeout(timeout))?
    }

    /// The full status, or `None` if the instance cannot answer.
    pub async fn status(&self) -> Option<Status> {
        match self.call(Command::Status).await {
            Ok(Reply::Status(status)) => Some(*status),
            _ => None,
        }
    }
}
