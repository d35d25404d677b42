//! The `mcpvisor` binary: parse the command line, set up logging, run the chosen subcommand and
//! turn the outcome into an exit status. Nothing but protocol messages is ever written to stdout.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use std::error::Error as _;

use mcpvisor::cli::{Cli, Command, RunArgs};
use mcpvisor::commands;
use mcpvisor::config::RunConfig;
use mcpvisor::control::{Command as ControlCommand, Control};
use mcpvisor::supervisor::{exit_code, Supervisor};

fn main() -> ExitCode {
    mcpvisor::alloc::tune();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let cli = match with_config_file(cli) {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let code = match cli.command {
        Command::Run(args) => run(*args),
        Command::Status { name, json } => commands::status(name.as_deref(), json),
        Command::Restart { name } => commands::simple(&name, ControlCommand::Restart),
        Command::Stop { name } => commands::simple(&name, ControlCommand::Stop),
        Command::Logs { name, lines } => commands::logs(&name, lines),
        Command::Metrics { name } => commands::metrics(name.as_deref()),
        Command::Connect { socket } => mcpvisor::connect::run(&socket),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "mcpvisor", &mut std::io::stdout());
            0
        }
        Command::Man { subcommand } => man_page(subcommand.as_deref()),
    };
    ExitCode::from(code)
}

/// Re-reads `run`'s arguments with the `--config` file's options in front of them.
fn with_config_file(cli: Cli) -> Result<Cli, u8> {
    let Command::Run(args) = &cli.command else { return Ok(cli) };
    let Some(path) = &args.config else { return Ok(cli) };
    let (flags, command) = mcpvisor::config_file::flags_from_file(path).map_err(|e| {
        eprintln!("mcpvisor: {e}");
        exit_code::USAGE
    })?;
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let merged = mcpvisor::config_file::merge(&raw, flags, command);
    Cli::try_parse_from(merged).map_err(|e| {
        let _ = usage_error(e);
        exit_code::USAGE
    })
}

/// Renders the top-level page or a subcommand's (named `mcpvisor-SUB`).
fn man_page(subcommand: Option<&str>) -> u8 {
    let top = Cli::command();
    let cmd = match subcommand {
        None => top,
        Some(sub) => match top.find_subcommand(sub) {
            Some(c) => c.clone().name(format!("mcpvisor-{sub}")).version(env!("CARGO_PKG_VERSION")),
            None => {
                eprintln!("mcpvisor: no subcommand `{sub}`; see `mcpvisor --help`");
                return exit_code::USAGE;
            }
        },
    };
    match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("mcpvisor: {e}");
            exit_code::INTERNAL
        }
    }
}

/// Help and version go to stdout as usual; errors become one line on stderr and status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                exit_code::USAGE
            } else {
                0
            });
        }
        _ => {}
    }
    let rendered = e.render().to_string();
    let mut first = rendered.lines().next().unwrap_or("invalid usage").trim_start_matches("error: ").to_owned();
    // clap quotes the rejected value; for --env that may be a secret, so the value is left out.
    if let (ErrorKind::ValueValidation, Some(ContextValue::String(arg))) = (e.kind(), e.get(ContextKind::InvalidArg)) {
        if arg.starts_with("--env") {
            let why = match e.source() {
                Some(source) => source.to_string(),
                None => "expected KEY=VALUE".to_owned(),
            };
            first = format!("invalid value for '{arg}': {why}");
        }
    }
    let hint = if matches!(e.kind(), ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument)
        && std::env::args().nth(1).as_deref() == Some("run")
        && !std::env::args().any(|a| a == "--")
    {
        "; put the server command after `--`, e.g. `mcpvisor run -- npx -y @modelcontextprotocol/server-everything`"
    } else {
        "; see `mcpvisor --help`"
    };
    eprintln!("mcpvisor: {first}{hint}");
    ExitCode::from(exit_code::USAGE)
}

fn run(args: RunArgs) -> u8 {
    let config = match RunConfig::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpvisor: {e}");
            return exit_code::USAGE;
        }
    };
    let _log_guard = match mcpvisor::logging::init(args.log_level, args.log_format, args.log_file.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("mcpvisor: {e}; check the path or drop --log-file");
            return exit_code::USAGE;
        }
    };
    // One thread is plenty for a relay, and avoids cross-thread hand-offs on every message.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpvisor: cannot start the async runtime: {e}");
            return exit_code::INTERNAL;
        }
    };
    runtime.block_on(async move {
        let (_stdio, input, output) = match mcpvisor::stdio::open() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mcpvisor: cannot use stdin/stdout: {e}");
                return exit_code::INTERNAL;
            }
        };
        let wanted = match &args.name {
            Some(n) => mcpvisor::instance::sanitize(n),
            None => mcpvisor::instance::default_name(&config.spec.program, &config.spec.args),
        };
        match Supervisor::start(config, input, output) {
            Ok(sup) => {
                let (tx, calls) = tokio::sync::mpsc::channel(16);
                let (name, socket) = mcpvisor::control::open(&wanted, args.control_socket.as_deref(), tx.clone());
                let http = match args.metrics_addr {
                    Some(addr) => match mcpvisor::http::HttpServer::bind(addr, tx).await {
                        Ok(server) => {
                            tracing::info!(addr = %server.addr, "metrics endpoint ready");
                            Some(server)
                        }
                        Err(e) => {
                            tracing::warn!(%addr, "cannot serve metrics: {e}");
                            None
                        }
                    },
                    None => None,
                };
                sup.with_control(name, Some(Control { calls, socket, http })).run().await
            }
            Err(e) => {
                // With logs on stderr the message below is the log; a log file gets it too.
                if args.log_file.is_some() {
                    tracing::error!("cannot start the server: {e}");
                }
                eprintln!("mcpvisor: cannot start the server: {e}");
                exit_code::SPAWN_FAILED
            }
        }
    })
}
