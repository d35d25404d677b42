//! The command-line surface (clap derive): the subcommands, their options, and the value parsers
//! they use. Turning `run`'s options into an [`InstanceConfig`](crate::config::InstanceConfig) is
//! [`RunArgs::instance_config`]; `--config FILE` is [`config_file`]; usage errors are rendered
//! by [`usage`].

pub mod config_file;
mod run;
pub mod serve;
pub mod serve_file;
pub mod server;
pub mod usage;

use clap::{Parser, Subcommand};

pub use run::RunArgs;
pub use serve::ServeArgs;

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
    /// Run a daemon that supervises the MCP servers of a file (or one server) for many clients.
    ///
    /// Clients reach a server by name with `mcpvisor connect NAME`. Each server's options are
    /// those of `mcpvisor run`, plus how clients share it.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
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
    /// Make every running `mcpvisor serve` daemon re-read its file: added servers start,
    /// removed ones drain and stop, changed ones restart gracefully, unchanged ones are left
    /// alone. A file with an error is rejected whole, and nothing changes.
    Reload,
    /// Print Prometheus metrics of one instance, or of all.
    Metrics { name: Option<String> },
    /// Bridge stdin/stdout to a server of a running `mcpvisor serve` (by NAME) or to a Unix
    /// socket (a PATH, containing `/`: e.g. a socket-activated service), so that a stdio MCP
    /// client can use it as its server command.
    ///
    /// Exit status: 3 when nothing serves NAME (the client's first request is answered with an
    /// error that says what to start) or the socket cannot be reached.
    Connect {
        /// A server's name, or a socket's path.
        #[arg(value_name = "NAME|SOCKET")]
        target: String,
    },
    /// Copy this mcpvisor binary into DIR (made if missing) as DIR/mcpvisor, for an init
    /// container that puts mcpvisor into a volume shared with a server's own image.
    InstallInto {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// Print a shell completion script (e.g. `mcpvisor completions bash > /etc/bash_completion.d/mcpvisor`).
    Completions { shell: clap_complete::Shell },
    /// Print a man page (roff): `mcpvisor man > mcpvisor.1`, `mcpvisor man run > mcpvisor-run.1`.
    #[command(hide = true)]
    Man {
        /// The subcommand whose page to print.
        subcommand: Option<String>,
    },
}

/// `--metrics-addr`: `HOST:PORT`, `[V6]:PORT`, or a bare `PORT` (loopback).
pub fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| format!("`{s}` is not an address (write 9464, 127.0.0.1:9464 or [::1]:9464)"))
}

fn parse_level(s: &str) -> Result<tracing::Level, String> {
    s.parse().map_err(|_| format!("`{s}` is not a log level (error, warn, info, debug, trace)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9464"), Ok(SocketAddr::from(([127, 0, 0, 1], 9464))));
        assert_eq!(parse_addr("0.0.0.0:80"), Ok(SocketAddr::from(([0, 0, 0, 0], 80))));
        assert!(parse_addr("[::1]:9").is_ok());
        assert!(parse_addr("localhost").is_err());
    }
}
