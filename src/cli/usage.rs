//! Command-line errors as users see them: one line on stderr that says what is wrong and what to
//! do, never a multi-line clap report, and never a rejected `--env` value (it may be a secret).

use std::error::Error as _;
use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// What to do with a clap error.
#[derive(Debug, PartialEq, Eq)]
pub enum Usage {
    /// Help or version: clap prints it to stdout; exit with this status.
    Print(u8),
    /// A usage error: print `mcpvisor: LINE` on stderr and exit with status 2.
    Error(String),
}

/// Turns a clap error for the command line `args` (the program name first) into one line.
pub fn explain(e: &clap::Error, args: &[OsString]) -> Usage {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => return Usage::Print(crate::exit::OK),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => return Usage::Print(crate::exit::USAGE),
        _ => {}
    }
    let rendered = e.render().to_string();
    let mut lines = rendered.lines();
    let mut first = lines.next().unwrap_or("invalid usage").trim_start_matches("error: ").trim_end().to_owned();
    // A sentence ending in ':' continues on the indented lines below it (the missing arguments).
    if first.ends_with(':') {
        let items: Vec<&str> =
            lines.take_while(|l| l.starts_with("  ")).map(str::trim).filter(|l| !l.is_empty()).collect();
        first = format!("{} {}", first, items.join(", "));
    }
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
    let is_run = args.get(1).is_some_and(|a| a == "run");
    let hint = if matches!(e.kind(), ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument)
        && is_run
        && !args.iter().any(|a| a == "--")
    {
        "; put the server command after `--`, e.g. `mcpvisor run -- npx -y @modelcontextprotocol/server-everything`"
    } else {
        "; see `mcpvisor --help`"
    };
    Usage::Error(format!("{first}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn explain_args(args: &[&str]) -> Usage {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        let e = super::super::Cli::try_parse_from(&argv).expect_err("a usage error");
        explain(&e, &argv)
    }

    #[test]
    fn a_missing_command_is_named_in_a_complete_sentence() {
        let Usage::Error(line) = explain_args(&["mcpvisor", "run"]) else { panic!("not an error") };
        assert!(line.starts_with("the following required arguments were not provided: <COMMAND>"), "{line}");
        assert!(!line.contains(":;"), "{line}");
        assert!(line.ends_with("e.g. `mcpvisor run -- npx -y @modelcontextprotocol/server-everything`"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn env_values_are_never_repeated() {
        let Usage::Error(line) = explain_args(&["mcpvisor", "run", "--env", "sk-secret", "--", "x"]) else {
            panic!("not an error")
        };
        assert!(!line.contains("sk-secret"), "{line}");
        assert!(line.contains("--env"), "{line}");
    }

    #[test]
    fn help_is_printed_not_an_error() {
        assert_eq!(explain_args(&["mcpvisor", "--help"]), Usage::Print(0));
        let Usage::Error(line) = explain_args(&["mcpvisor", "frobnicate"]) else { panic!("not an error") };
        assert!(line.ends_with("see `mcpvisor --help`"), "{line}");
    }
}
