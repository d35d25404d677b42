//! Options in TOML files. `run --config FILE` takes every `mcpvisor run` option, the server
//! command included; `serve`'s file (see [`super::serve_file`]) is read with the same pieces.
//!
//! Keys are the long option names (`max-restarts = 5`, `ping-interval = "15s"`, `no-retry = true`),
//! plus `command = ["npx", "-y", "@modelcontextprotocol/server-everything"]` and an `[env]` table.
//! The file is turned into command-line flags that go *before* the real ones, so options given on
//! the command line override the file (the `run` command lets a later flag override an earlier
//! one; `--env` entries from both apply). Each value is checked with the same parser as its flag,
//! and every error names the key and the file line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::{CommandFactory, Parser};

use super::Cli;

/// Keys that are not flags of their own.
const COMMAND_KEY: &str = "command";
const ENV_KEY: &str = "env";

/// A TOML table whose keys keep their positions, for error messages with lines.
pub type Table = BTreeMap<String, toml::Spanned<toml::Value>>;

/// A file's text, and its name for messages.
pub struct Source {
    pub file: String,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {file}: {e}"))?;
        Ok(Source { file, text })
    }

    /// Deserializes the whole file (as `T`), with the TOML error on one line.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        toml::from_str(&self.text)
            .map_err(|e| format!("{}: {}", self.file, e.to_string().lines().collect::<Vec<_>>().join(" ")))
    }

    /// The line a span starts on.
    pub fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())].matches('\n').count() + 1
    }
}

/// What a table may hold.
pub struct Keys<'a> {
    /// The subcommand whose parser checks each value (`run`, `serve`).
    pub subcommand: &'a str,
    /// The option names allowed as keys.
    pub options: Vec<String>,
    /// Whether `command = [...]` and an `env` table are allowed.
    pub command_and_env: bool,
    /// Nested tables the caller reads itself (skipped here).
    pub nested: &'a [&'a str],
    /// Said after "unknown key": which keys are allowed.
    pub hint: &'a str,
}

impl Keys<'_> {
    /// The long options of `subcommand`, those under `heading` (`None`: every one), but `config`.
    pub fn options_of(subcommand: &str, headings: &[Option<&str>]) -> Vec<String> {
        let Some(cmd) = Cli::command().find_subcommand(subcommand).cloned() else { return Vec::new() };
        cmd.get_arguments()
            .filter(|a| headings.is_empty() || headings.contains(&a.get_help_heading()))
            .filter_map(|a| a.get_long().map(str::to_owned))
            .filter(|l| l != "config" && l != "help")
            .collect()
    }
}

/// The flags a table stands for, and the command it names (empty if none).
pub fn table_flags(source: &Source, table: Table, keys: &Keys<'_>) -> Result<(Vec<OsString>, Vec<OsString>), String> {
    let file = &source.file;
    let mut flags = Vec::new();
    let mut command = Vec::new();
    for (key, spanned) in table {
        if keys.nested.contains(&key.as_str()) {
            continue;
        }
        let line = source.line(spanned.span());
        let at = |msg: String| format!("{file}:{line}: `{key}`: {msg}");
        let value = spanned.into_inner();
        let mut these: Vec<String> = Vec::new();
        match key.as_str() {
            COMMAND_KEY if keys.command_and_env => {
                let items = value.as_array().ok_or_else(|| at("must be an array of strings".into()))?;
                for item in items {
                    command
                        .push(OsString::from(item.as_str().ok_or_else(|| at("must be an array of strings".into()))?));
                }
                if command.is_empty() {
                    return Err(at("must not be empty".into()));
                }
                continue;
            }
            ENV_KEY if keys.command_and_env => {
                let env = value.as_table().ok_or_else(|| at("must be a table of KEY = \"VALUE\"".into()))?;
                for (k, v) in env {
                    let v = scalar(v).ok_or_else(|| at(format!("value of {k} must be a string")))?;
                    these.extend(["--env".to_owned(), format!("{k}={v}")]);
                }
            }
            k if keys.options.iter().any(|n| n == k) => match &value {
                toml::Value::Boolean(true) => these.push(format!("--{k}")),
                toml::Value::Boolean(false) => {}
                // A list is the option repeated (allowed-origin = ["a", "b"]).
                toml::Value::Array(items) => {
                    for item in items {
                        let item = scalar(item).ok_or_else(|| at("must be a list of strings".into()))?;
                        these.extend([format!("--{k}"), item]);
                    }
                }
                v => these
                    .extend([format!("--{k}"), scalar(v).ok_or_else(|| at("must be a string or a number".into()))?]),
            },
            _ => return Err(format!("{file}:{line}: unknown key `{key}` ({})", keys.hint)),
        }
        // Check the value with the flag's own parser, so the error can point at the file.
        let mut probe = vec!["mcpvisor".to_owned(), keys.subcommand.to_owned()];
        probe.extend(these.iter().cloned());
        probe.extend(["--".to_owned(), "x".to_owned()]);
        if let Err(e) = Cli::try_parse_from(&probe) {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid value").trim_start_matches("error: ");
            return Err(at(first.to_owned()));
        }
        flags.extend(these.into_iter().map(OsString::from));
    }
    Ok((flags, command))
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// The flags a `run --config` file stands for, and its server command if it has one.
pub fn flags_from_file(path: &Path) -> Result<(Vec<OsString>, Vec<OsString>), String> {
    let source = Source::read(path)?;
    let table: Table = source.parse()?;
    let keys = Keys {
        subcommand: "run",
        options: Keys::options_of("run", &[]),
        command_and_env: true,
        nested: &[],
        hint: "use the long options of `mcpvisor run`, like max-restarts, plus `command` and `[env]`",
    };
    table_flags(&source, table, &keys)
}

/// The `run` argument list with the file's flags first; the file's command is used when the
/// command line has none.
pub fn merge(raw: &[OsString], file_flags: Vec<OsString>, file_command: Vec<OsString>) -> Vec<OsString> {
    let mut merged: Vec<OsString> = raw.iter().take(2).cloned().collect();
    merged.extend(file_flags);
    merged.extend(raw.iter().skip(2).cloned());
    let has_command = raw.iter().position(|a| a == "--").is_some_and(|i| i + 1 < raw.len());
    if !has_command && !file_command.is_empty() {
        if !raw.iter().any(|a| a == "--") {
            merged.push("--".into());
        }
        merged.extend(file_command);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcpvisor.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn file_values_become_flags_and_the_command_line_wins() {
        let (_d, path) = write(
            "max-restarts = 3\nping-interval = \"5s\"\nno-retry = true\ncommand = [\"srv\", \"a\"]\n[env]\nK = \"v\"\n",
        );
        let (flags, command) = flags_from_file(&path).expect("parse");
        assert_eq!(command, vec![OsString::from("srv"), OsString::from("a")]);
        let raw: Vec<OsString> =
            ["mcpvisor", "run", "--config", "f", "--max-restarts", "7"].map(OsString::from).to_vec();
        let merged = merge(&raw, flags, command);
        let cli = Cli::try_parse_from(&merged).expect("merged parses");
        let crate::cli::Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.server.max_restarts, 7, "the command line overrides the file");
        assert_eq!(args.server.ping_interval, std::time::Duration::from_secs(5));
        assert!(args.server.no_retry);
        assert_eq!(args.server.env, vec![crate::config::EnvVar::new("K", "v")]);
        assert_eq!(args.command, vec![OsString::from("srv"), OsString::from("a")]);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let (_d, path) = write("# comment\nmax-restarts = 3\nping-intervall = \"5s\"\n");
        let e = flags_from_file(&path).unwrap_err();
        assert!(e.contains(":3: unknown key `ping-intervall`"), "{e}");
        let (_d, path) = write("\n\nping-interval = \"soon\"\n");
        let e = flags_from_file(&path).unwrap_err();
        assert!(e.contains(":3: `ping-interval`:") && e.contains("soon"), "{e}");
        let (_d, path) = write("max-restarts = \n");
        assert!(flags_from_file(&path).unwrap_err().contains("mcpvisor.toml"));
        let (_d, path) = write("command = \"npx\"\n");
        assert!(flags_from_file(&path).unwrap_err().contains("array of strings"));
    }
}
