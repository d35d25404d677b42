//! The `mcpvisor` binary: parse the command line and hand it to the chosen application. Nothing
//! but protocol messages is ever written to stdout by `run`.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use mcpvisor::app::{commands, connect, install, run, serve};
use mcpvisor::cli::usage::{self, Usage};
use mcpvisor::cli::{config_file, Cli, Command};
use mcpvisor::control::Command as ControlCommand;
use mcpvisor::exit;

fn main() -> ExitCode {
    mcpvisor::alloc::tune();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(&e, &argv)),
    };
    let cli = match with_config_file(cli, &argv) {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let code = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Serve(args) => serve::run(*args, &argv),
        Command::Status { name, json } => commands::status(name.as_deref(), json),
        Command::Restart { name } => commands::simple(&name, ControlCommand::Restart),
        Command::Stop { name } => commands::simple(&name, ControlCommand::Stop),
        Command::Logs { name, lines } => commands::logs(&name, lines),
        Command::Metrics { name } => commands::metrics(name.as_deref()),
        Command::Reload => commands::reload(),
        Command::Connect { target } => connect::run(&target),
        Command::InstallInto { dir } => install::run(&dir),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "mcpvisor", &mut std::io::stdout());
            exit::OK
        }
        Command::Man { subcommand } => man_page(subcommand.as_deref()),
    };
    ExitCode::from(code)
}

/// Re-reads `run`'s arguments with the `--config` file's options in front of them. A problem
/// with the file is one line that names the file line; the status to exit with is returned.
fn with_config_file(cli: Cli, argv: &[OsString]) -> Result<Cli, u8> {
    let Command::Run(args) = &cli.command else { return Ok(cli) };
    let Some(path) = &args.config else { return Ok(cli) };
    let (flags, command) = config_file::flags_from_file(path).map_err(|e| {
        eprintln!("mcpvisor: {e}");
        exit::USAGE
    })?;
    let merged = config_file::merge(argv, flags, command);
    Cli::try_parse_from(&merged).map_err(|e| usage_error(&e, &merged))
}

/// Prints a usage error as one line (or help and version as clap does); returns the status.
fn usage_error(e: &clap::Error, argv: &[OsString]) -> u8 {
    match usage::explain(e, argv) {
        Usage::Print(code) => {
            let _ = e.print();
            code
        }
        Usage::Error(line) => {
            eprintln!("mcpvisor: {line}");
            exit::USAGE
        }
    }
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
                return exit::USAGE;
            }
        },
    };
    match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("mcpvisor: {e}");
            exit::FAILURE
        }
    }
}
