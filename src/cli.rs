//! The command-line surface (clap derive). Durations and sizes are parsed here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "mcpvisor", version, about = "A process supervisor for MCP stdio servers", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an MCP stdio server under supervision, relaying JSON-RPC on stdin/stdout.
    ///
    /// Put `mcpvisor run -- COMMAND ARGS...` in your MCP client's config in place of the server
    /// command. Only protocol messages are written to stdout; logs go to stderr or --log-file.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Show running instances (one line each), or one instance in full.
    ///
    /// Exit status: 0 all ready, 1 any not ready (degraded or failed), 3 no instance reachable.
    Status {
        /// The instance to show in full.
        name: Option<String>,
        /// Print the stable JSON form (see docs/control-protocol.md).
        #[arg(long)]
        json: bool,
    },
    /// Restart an instance's server gracefully (also clears the Failed state).
    Restart { name: String },
    /// Drain an instance and make it exit.
    Stop { name: String },
    /// Print the last lines an instance's server wrote to stderr.
    Logs {
        name: String,
        #[arg(short = 'n', long = "lines", default_value_t = 50)]
        lines: usize,
    },
    /// Print Prometheus metrics of one instance, or of all.
    Metrics { name: Option<String> },
    /// Bridge stdin/stdout to a Unix socket, e.g. a socket-activated mcpvisor service, so that a
    /// stdio-only MCP client can use it as its server command.
    Connect { socket: PathBuf },
    /// Print a shell completion script (e.g. `mcpvisor completions bash > /etc/bash_completion.d/mcpvisor`).
    Completions { shell: clap_complete::Shell },
    /// Print a man page (roff): `mcpvisor man > mcpvisor.1`, `mcpvisor man run > mcpvisor-run.1`.
    #[command(hide = true)]
    Man {
        /// The subcommand whose page to print.
        subcommand: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read options (and the server command) from a TOML file; command-line options override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Instance name for `mcpvisor status` and metrics (default: derived from the server
    /// command; a suffix is added if a live instance already has it).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Control socket path (default: NAME.sock in $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/mcpvisor,
    /// /run/user/UID/mcpvisor or /tmp/mcpvisor-UID).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Serve /metrics, /healthz and /readyz over HTTP on this address (a bare port binds
    /// 127.0.0.1).
    #[arg(long, value_name = "ADDR", value_parser = crate::http::parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Working directory for the server.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Extra environment variable for the server (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
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

    /// Write mcpvisor's logs (and the server's stderr) to this file instead of stderr.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Log line format.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Least severe log level written: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: tracing::Level,

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

    /// The server command and its arguments, after `--`.
    #[arg(last = true, required_unless_present = "config", value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFailure {
    Wait,
    Exit,
}

/// Parses `250ms`, `30s`, `1h`, `1m30s`, or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.chars().all(|c| c == '0') && !s.is_empty() {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 250ms, 30s, 5m, 1h)"))
}

/// Parses a byte size: `1048576`, `512K`, `512KiB`, `64M`, `64MiB`, `1G`, `10MB` (powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("`{s}` is not a size (write e.g. 64MiB, 512KiB or 1000000)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("unknown size unit in `{s}` (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    let size = n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))?;
    if size == 0 {
        return Err("the size must be greater than zero".into());
    }
    Ok(size)
}

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
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=<redacted>", self.key.to_string_lossy())
    }
}

fn parse_env(s: &str) -> Result<EnvVar, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(EnvVar::new(k, v)),
        // The text is not repeated: it may be a secret that lost its `KEY=`.
        Some(_) => Err("the variable name before `=` is empty".into()),
        None => Err("expected KEY=VALUE (no `=` found; the value is not shown)".into()),
    }
}

fn parse_level(s: &str) -> Result<tracing::Level, String> {
    s.parse().map_err(|_| format!("`{s}` is not a log level (error, warn, info, debug, trace)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn run_requires_the_command_after_double_dash() {
        assert!(Cli::try_parse_from(["mcpvisor", "run", "server"]).is_err());
        assert!(Cli::try_parse_from(["mcpvisor", "run"]).is_err());
        let cli = Cli::try_parse_from(["mcpvisor", "run", "--env", "A=b=c", "--", "server", "--flag"]).expect("parse");
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.command, vec![OsString::from("server"), OsString::from("--flag")]);
        assert_eq!(args.env, vec![EnvVar::new("A", "b=c")]);
        assert_eq!(format!("{:?}", args.env), "[A=<redacted>]");
    }
}
