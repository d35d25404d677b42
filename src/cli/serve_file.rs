//! `serve`'s file: the daemon's settings at the top, a `[defaults]` table with options for every
//! server, and one `[servers.NAME]` table per server (`command = [...]`, an `env` table, and any
//! per-server option under its long name). Each part becomes command-line flags, checked with
//! the flag's own parser, so every error names the file, the line and the key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use serde::Deserialize;

use super::config_file::{table_flags, Keys, Source, Table};

const DEFAULTS: &str = "defaults";
const SERVERS: &str = "servers";

/// The headings of `serve --help` whose options are per server.
const SERVER_HEADINGS: [Option<&str>; 2] = [Some("Server options"), Some("Sharing options")];

/// The file, as flags.
#[derive(Debug)]
pub struct ServeFile {
    /// The daemon's own options (the top-level keys).
    pub daemon_flags: Vec<OsString>,
    /// In the file's order of names.
    pub servers: Vec<ServerEntry>,
}

#[derive(Debug)]
pub struct ServerEntry {
    pub name: String,
    /// `FILE:LINE` of its table, for messages.
    pub at: String,
    /// `[defaults]`'s flags, then its own.
    pub flags: Vec<OsString>,
    pub command: Vec<OsString>,
}

/// Where a top-level key is written: on a line before the first table header.
fn top_key_offset(text: &str, key: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            break;
        }
        let rest = trimmed.strip_prefix(key).or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")));
        if rest.is_some_and(|r| r.trim_start().starts_with('=')) {
            return offset;
        }
        offset += line.len();
    }
    0
}

/// The line of `[servers.NAME]` (or, for an inline table, of its first key).
fn header_line(source: &Source, name: &str, table: &Table) -> usize {
    let header = format!("[servers.{name}]");
    match source.text.lines().position(|l| l.trim() == header) {
        Some(i) => i + 1,
        None => table.values().map(|v| source.line(v.span())).min().unwrap_or(1),
    }
}

/// The keys of `[defaults]` (without `command` and `env`) and of `[servers.NAME]`.
fn server_keys(command_and_env: bool) -> Keys<'static> {
    Keys {
        subcommand: "serve",
        options: Keys::options_of("serve", &SERVER_HEADINGS),
        command_and_env,
        nested: if command_and_env { &[] } else { &["env"] },
        hint: "use the per-server options of `mcpvisor serve`, like max-restarts or share, plus `command` and `env`",
    }
}

/// The nested tables, read a second time with their keys' positions.
#[derive(Deserialize)]
struct Nested {
    #[serde(default)]
    defaults: Table,
    #[serde(default)]
    servers: BTreeMap<String, Table>,
}

impl ServeFile {
    pub fn read(path: &Path) -> Result<ServeFile, String> {
        let source = Source::read(path)?;
        let nested: Nested = source.parse()?;
        // The top level is read without positions (toml cannot keep them for a value that is a
        // table of tables, as `servers` is); the daemon's keys are found in the text instead.
        let top: toml::Table = source.parse()?;
        let top: Table = top
            .into_iter()
            .filter(|(key, _)| key != DEFAULTS && key != SERVERS)
            .map(|(key, value)| {
                let at = top_key_offset(&source.text, &key);
                (key, toml::Spanned::new(at..at, value))
            })
            .collect();
        let daemon_keys = Keys {
            subcommand: "serve",
            options: Keys::options_of("serve", &[Some("Daemon options"), None]),
            command_and_env: false,
            nested: &[DEFAULTS, SERVERS],
            hint: "at the top: daemon options like max-starting or log-level; servers go in [servers.NAME] tables",
        };
        let (daemon_flags, _) = table_flags(&source, top, &daemon_keys)?;
        let (mut defaults, _) = table_flags(&source, nested.defaults.clone(), &server_keys(false))?;
        // `[defaults.env]` applies to every server too.
        if let Some(env) = nested.defaults.get("env") {
            let only_env = Table::from([("env".to_owned(), env.clone())]);
            defaults.extend(table_flags(&source, only_env, &server_keys(true))?.0);
        }
        if nested.servers.is_empty() {
            return Err(format!("{}: no servers: add a [servers.NAME] table with a `command`", source.file));
        }
        let mut servers = Vec::new();
        for (name, table) in nested.servers {
            let at = format!("{}:{}", source.file, header_line(&source, &name, &table));
            if crate::control::discovery::sanitize(&name) != name {
                return Err(format!("{at}: server name `{name}`: use letters, digits, `-`, `_` and `.` only"));
            }
            let (own, command) = table_flags(&source, table, &server_keys(true))?;
            if command.is_empty() {
                return Err(format!("{at}: [servers.{name}] has no `command = [...]`"));
            }
            let mut flags = defaults.clone();
            flags.extend(own);
            servers.push(ServerEntry { name, at, flags, command });
        }
        Ok(ServeFile { daemon_flags, servers })
    }
}
