//! Options that `run` and `serve` share: those of one supervised server ([`ServerOptions`], also
//! the keys of a server's table in `serve`'s file) and those of mcpvisor's own log
//! ([`LogOptions`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::units::{parse_duration, parse_size};
use crate::config::{ChildSpec, EnvVar, InstanceConfig, LogFormat, OnFailure, PolicyConfig, StopTimings, STABLE_AFTER};

/// Where mcpvisor's own log goes.
#[derive(Debug, Args)]
pub struct LogOptions {
    /// Write mcpvisor's logs (and the server's stderr) to this file instead of stderr.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Log line format.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Least severe log level written: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = super::parse_level)]
    pub log_level: tracing::Level,

    /// Rotate a log file once it would grow past SIZE (e.g. 50MiB): NAME.log becomes NAME.log.1.
    #[arg(long, value_name = "SIZE", default_value = "50MiB", value_parser = parse_log_size)]
    pub log_max_size: u64,

    /// Log files kept per log, the current one included.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub log_max_files: u32,
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("a log file needs room for at least one line; give a size like 50MiB".into()),
        n => Ok(n as u64),
    }
}

/// How one server is run and supervised.
#[derive(Debug, Args)]
pub struct ServerOptions {
    /// Working directory for the server.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Extra environment variable for the server (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = EnvVar::parse)]
    pub env: Vec<EnvVar>,

    /// After closing the server's stdin, how long to wait before SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub stop_grace: Duration,

    /// After SIGTERM, how long to wait before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub kill_after: Duration,

    /// Largest message accepted in either direction (e.g. 64MiB, 512KiB, 1000000).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_message_size: usize,

    /// Restart the server (gracefully, counted as a crash with cause "memory") when the resident
    /// memory of its process group exceeds SIZE; checked every second.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<usize>,

    /// Limit on open files (RLIMIT_NOFILE) for the server and its children.
    #[arg(long, value_name = "N")]
    pub limit_nofile: Option<u64>,

    /// Limit on address space (RLIMIT_AS) for the server and each of its children: allocations
    /// past it fail inside the server instead of exhausting the machine.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub limit_as: Option<usize>,

    /// First restart delay; doubles with each quick crash (with jitter).
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_duration)]
    pub backoff_initial: Duration,

    /// Longest restart delay.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// Most restarts within --restart-window before the server is marked Failed.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_restarts: u32,

    /// The rolling window --max-restarts counts in.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub restart_window: Duration,

    /// What to do when the restart limit is reached: keep answering with errors until a restart
    /// slot frees (wait), or exit with status 4 (exit; for systemd's Restart=).
    #[arg(long, value_name = "ACTION", default_value = "wait")]
    pub on_failure: OnFailure,

    /// Most client messages held while the server restarts; more get an error at once.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub queue_limit: usize,

    /// At most N client requests outstanding at the server; later ones wait in mcpvisor's queue,
    /// and while that is full mcpvisor stops reading the client (backpressure). 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_inflight: usize,

    /// Do not re-send safe requests (tools/list, resources/read, ...) that were in flight at a crash;
    /// answer them with an error instead.
    #[arg(long)]
    pub no_retry: bool,

    /// Probe the server after it has been silent this long (0 disables liveness checks).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// How long a probe may go unanswered before it counts as a miss.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Misses in a row after which the server is declared hung and restarted.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub ping_failures: u32,

    /// Answer a client request with an error (and cancel it at the server) if the server has not
    /// answered within this time. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,

    /// On SIGTERM/SIGINT or client EOF, how long in-flight requests may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Keep N spare server processes started and initialized beside the active one, so that a
    /// crash, hang or restart is taken over in milliseconds instead of after a server start.
    /// Each spare costs a server's memory: not for servers that hold an exclusive lock or port.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub standby: u32,
}

impl ServerOptions {
    /// The resolved, checked settings of a server that runs `command`.
    pub fn instance_config(&self, command: &[OsString]) -> Result<InstanceConfig, String> {
        let (program, rest) = command.split_first().ok_or("no server command given after `--`")?;
        let config = InstanceConfig {
            spec: ChildSpec {
                program: program.clone(),
                args: rest.to_vec(),
                cwd: self.cwd.clone(),
                env: self.env.clone(),
                limit_nofile: self.limit_nofile,
                limit_as: self.limit_as.map(|b| b as u64),
            },
            stop: StopTimings { grace: self.stop_grace, kill_after: self.kill_after },
            max_message_size: self.max_message_size,
            max_memory: self.max_memory,
            policy: PolicyConfig {
                max_restarts: self.max_restarts,
                window: self.restart_window,
                backoff_initial: self.backoff_initial,
                backoff_max: self.backoff_max,
                stable_after: STABLE_AFTER,
            },
            on_failure: self.on_failure,
            queue_limit: self.queue_limit,
            max_inflight: (self.max_inflight > 0).then_some(self.max_inflight),
            retry: !self.no_retry,
            ping_interval: (!self.ping_interval.is_zero()).then_some(self.ping_interval),
            ping_timeout: self.ping_timeout,
            ping_failures: self.ping_failures,
            request_timeout: self.request_timeout.filter(|d| !d.is_zero()),
            drain_timeout: self.drain_timeout,
            standby: self.standby as usize,
        };
        config.check()?;
        Ok(config)
    }
}
