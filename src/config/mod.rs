//! The settings of one supervised server, resolved and checked, and the small value types they
//! are made of. Nothing here knows where a setting came from (the command line, a `--config`
//! file, later a daemon's file): `cli` turns its input into these types, and the process,
//! lifecycle and instance modules read them.

pub mod serve;
pub mod units;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// How long a child counts as having started well: a crash after this resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// An environment variable for the server. Values are often secrets (API keys), so `Debug` shows
/// the key only, and nothing in mcpvisor prints a value: logs, `status` and metrics name keys.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub key: OsString,
    pub value: OsString,
}

impl EnvVar {
    pub fn new(key: impl Into<OsString>, value: impl Into<OsString>) -> EnvVar {
        EnvVar { key: key.into(), value: value.into() }
    }

    /// Parses `KEY=VALUE`. Errors never repeat the text: it may be a secret that lost its `KEY=`.
    pub fn parse(s: &str) -> Result<EnvVar, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(EnvVar::new(k, v)),
            Some(_) => Err("the variable name before `=` is empty".into()),
            None => Err("expected KEY=VALUE (no `=` found; the value is not shown)".into()),
        }
    }
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=<redacted>", self.key.to_string_lossy())
    }
}

/// What to do when the restart limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    /// Answer with errors until a restart slot frees.
    Wait,
    /// Stop the instance (`run` exits with status 4, for systemd's `Restart=`).
    Exit,
}

/// The format of mcpvisor's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

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
        self.argv().join(" ")
    }

    /// The program and its arguments, as text.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program).chain(&self.args).map(|a| a.to_string_lossy().into_owned()).collect()
    }
}

/// Timings of the stop sequence.
#[derive(Debug, Clone, Copy)]
pub struct StopTimings {
    /// After closing the server's stdin, how long to wait before SIGTERM.
    pub grace: Duration,
    /// After SIGTERM, how long to wait before SIGKILL.
    pub kill_after: Duration,
}

/// The restart policy's settings.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
}

/// Everything one supervised server needs.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub spec: ChildSpec,
    pub stop: StopTimings,
    pub max_message_size: usize,
    /// `--max-memory`: resident bytes of the server's process group that trigger a restart.
    pub max_memory: Option<usize>,
    pub policy: PolicyConfig,
    pub on_failure: OnFailure,
    pub queue_limit: usize,
    /// Most client requests outstanding at the child (`--max-inflight`); `None`: no limit.
    pub max_inflight: Option<usize>,
    pub retry: bool,
    /// `None` when liveness checks are off.
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    pub ping_failures: u32,
    pub request_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    /// Spare processes kept started beside the active one (`--standby`).
    pub standby: usize,
}

impl InstanceConfig {
    /// Checks what the types alone cannot: a non-empty command and consistent values.
    pub fn check(&self) -> Result<(), String> {
        if self.spec.program.is_empty() {
            return Err("the server command is empty".into());
        }
        if self.ping_interval.is_some() && self.ping_timeout.is_zero() {
            return Err("--ping-timeout must be greater than zero".into());
        }
        if self.policy.backoff_max < self.policy.backoff_initial {
            return Err("--backoff-max must not be smaller than --backoff-initial".into());
        }
        if self.policy.window.is_zero() {
            return Err("--restart-window must be greater than zero".into());
        }
        Ok(())
    }

    /// How long a restarted server may take to answer the replayed `initialize`.
    pub fn rebuild_timeout(&self) -> Duration {
        (self.ping_timeout * self.ping_failures).max(Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_parse_and_hide_their_values() {
        assert_eq!(EnvVar::parse("A=b=c"), Ok(EnvVar::new("A", "b=c")));
        assert!(EnvVar::parse("=x").is_err());
        assert!(!EnvVar::parse("secret").unwrap_err().contains("secret"));
        assert_eq!(format!("{:?}", EnvVar::new("TOKEN", "hunter2")), "TOKEN=<redacted>");
    }
}
