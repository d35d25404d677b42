//! The options of `mcpvisor run`: where its control socket and logs go, the per-server options
//! it shares with `serve` ([`ServerOptions`]), and the server command.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use super::server::{LogOptions, ServerOptions};
use crate::config::InstanceConfig;

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
    #[arg(long, value_name = "ADDR", value_parser = super::parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub log: LogOptions,

    #[command(flatten, next_help_heading = "Server options")]
    pub server: ServerOptions,

    /// The server command and its arguments, after `--`.
    #[arg(last = true, required_unless_present = "config", value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// The resolved, checked settings of the supervised server.
    pub fn instance_config(&self) -> Result<InstanceConfig, String> {
        self.server.instance_config(&self.command)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use crate::config::EnvVar;
    use clap::Parser;
    use std::time::Duration;

    fn config(args: &[&str]) -> Result<InstanceConfig, String> {
        let mut argv = vec!["mcpvisor", "run"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--", "server", "arg"]);
        let Command::Run(run) = Cli::try_parse_from(argv).expect("parse").command else { panic!("not run") };
        run.instance_config()
    }

    #[test]
    fn defaults() {
        let c = config(&[]).expect("config");
        assert_eq!(c.spec.program, "server");
        assert_eq!(c.ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.policy.max_restarts, 10);
        assert_eq!(c.policy.window, Duration::from_secs(3600));
        assert_eq!(c.max_message_size, 64 << 20);
        assert!(c.retry);
        assert_eq!(c.request_timeout, None);
    }

    #[test]
    fn zero_ping_interval_disables_liveness() {
        assert_eq!(config(&["--ping-interval", "0"]).expect("config").ping_interval, None);
    }

    #[test]
    fn inconsistent_values_are_refused() {
        assert!(config(&["--backoff-initial", "10s", "--backoff-max", "1s"]).is_err());
        assert!(config(&["--restart-window", "0"]).is_err());
        assert!(config(&["--ping-timeout", "0"]).is_err());
    }

    #[test]
    fn run_requires_the_command_after_double_dash() {
        assert!(Cli::try_parse_from(["mcpvisor", "run", "server"]).is_err());
        assert!(Cli::try_parse_from(["mcpvisor", "run"]).is_err());
        let cli = Cli::try_parse_from(["mcpvisor", "run", "--env", "A=b=c", "--", "server", "--flag"]).expect("parse");
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.command, vec![OsString::from("server"), OsString::from("--flag")]);
        assert_eq!(args.server.env, vec![EnvVar::new("A", "b=c")]);
        assert_eq!(format!("{:?}", args.server.env), "[A=<redacted>]");
    }
}
