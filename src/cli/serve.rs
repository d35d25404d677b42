//! The options of `mcpvisor serve`, and how they (and its `--config` file) become a
//! [`DaemonConfig`]: with a file, every server's options are the file's top-level daemon keys,
//! then its `[defaults]`, then its own table, then the command line, later ones winning; without
//! one, the single server after `--` takes the command line's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use super::serve_file::ServeFile;
use super::server::{LogOptions, ServerOptions};
use super::{Cli, Command};
use crate::config::serve::{DaemonConfig, HttpConfig, ServerConfig, Share, Sharing, SocketGroup, StartMode};
use crate::config::units::parse_duration;

/// How long a lazy shared server stays up without clients, unless `idle-timeout` says otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The servers to supervise, from a TOML file (see `man mcpvisor-serve`); options on the
    /// command line override the file's, for every server.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// With a command after `--`: the server's name (default: derived from the command).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    #[command(flatten, next_help_heading = "Daemon options")]
    pub daemon: DaemonOptions,

    #[command(flatten)]
    pub log: LogOptions,

    #[command(flatten, next_help_heading = "Sharing options")]
    pub sharing: SharingOptions,

    #[command(flatten, next_help_heading = "Server options")]
    pub server: ServerOptions,

    /// A single server's command and its arguments, after `--` (instead of --config).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct DaemonOptions {
    /// Directory of the daemon's sockets (default: where `run` puts its control sockets).
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Serve /metrics, /healthz and /readyz for every server over HTTP on this address (a bare
    /// port binds 127.0.0.1).
    #[arg(long, value_name = "ADDR", value_parser = super::parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// How many servers may be starting at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_starting: u32,

    /// Where each server's restart history is kept, so that the restart limit holds across
    /// restarts of the daemon (default: $STATE_DIRECTORY under systemd, else
    /// $XDG_STATE_HOME/mcpvisor or ~/.local/state/mcpvisor).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Write the daemon's log to DIR/mcpvisor.log and each server's to DIR/NAME.log, rotated by
    /// --log-max-size and --log-max-files (default: stderr, or the journal under systemd).
    #[arg(long, value_name = "DIR", conflicts_with = "log_file")]
    pub log_dir: Option<PathBuf>,

    /// Also admit members of this group (a name or a gid) to the daemon's sockets: they become
    /// 0660 in a 0750 directory of that group (a system-wide daemon). By default only the
    /// daemon's own user (and root) may connect.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Serve every server over Streamable HTTP at http://ADDR/mcp/NAME (a bare port binds
    /// 127.0.0.1), with /healthz, /readyz and /metrics on the same listener.
    #[arg(long, value_name = "ADDR", value_parser = super::parse_addr)]
    pub http: Option<std::net::SocketAddr>,

    /// End an HTTP session after this long without requests or open streams.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,

    /// Also accept HTTP requests from a browser page of this origin (repeatable; `*`: any);
    /// loopback origins are always accepted.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,

    /// Also accept HTTP requests for this Host name (repeatable): needed when --http binds an
    /// address other clients reach by name; loopback names and the bound address always pass.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,

    /// Require `Authorization: Bearer TOKEN` on HTTP requests, TOKEN being one of the lines of
    /// this file (blank lines and lines starting with # are skipped). Tokens are never logged.
    #[arg(long, value_name = "PATH")]
    pub http_token_file: Option<PathBuf>,

    /// Tokens (one per line, as --http-token-file) that may also restart and stop servers from
    /// the status page at `/`; without it the page is read-only.
    #[arg(long, value_name = "PATH")]
    pub http_admin_token_file: Option<PathBuf>,

    /// Open HTTP sessions allowed per server; beyond it, initialize gets 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_sessions: usize,

    /// Open HTTP event streams allowed per server; beyond it, a GET stream gets 503 and a POST
    /// is answered as JSON.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_streams: usize,

    /// Name this replica in the HTTP session ids it mints (`NAME.` then 128 random bits), so
    /// that a load balancer in front of several daemons can send each session's requests to the
    /// replica that holds it (letters, digits, `-` and `_`; a Kubernetes pod name fits).
    #[arg(long, value_name = "NAME", value_parser = parse_replica)]
    pub replica: Option<String>,

    /// Serve HTTPS: the certificate chain (PEM) for --http; with --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SharingOptions {
    /// per-client: each client connection gets a server process of its own; shared: one
    /// process serves every client.
    #[arg(long, value_name = "MODE", default_value = "per-client")]
    pub share: Share,

    /// lazy: start the server when its first client connects; eager: when the daemon starts
    /// (shared servers only).
    #[arg(long, value_name = "MODE", default_value = "lazy")]
    pub start: StartMode,

    /// Stop a shared server that has had no client for this long (0: never; default 10m for lazy
    /// servers, never for eager ones).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Refuse connections beyond this many clients at once, with an error (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_clients: usize,
}

impl SharingOptions {
    fn sharing(&self) -> Result<Sharing, String> {
        if self.share == Share::PerClient && self.start == StartMode::Eager {
            return Err("start = \"eager\" needs share = \"shared\" (a per-client server starts one process per client connection)".into());
        }
        let idle_timeout = match (self.idle_timeout, self.start) {
            (Some(d), _) if d.is_zero() => None,
            (Some(d), _) => Some(d),
            (None, StartMode::Lazy) => Some(DEFAULT_IDLE_TIMEOUT),
            (None, StartMode::Eager) => None,
        };
        Ok(Sharing {
            share: self.share,
            start: self.start,
            idle_timeout,
            max_clients: (self.max_clients > 0).then_some(self.max_clients),
        })
    }
}

/// The group `socket-group` names: a group name, or a gid (as chgrp takes it).
fn socket_group(name: &str) -> Result<SocketGroup, String> {
    let gid = match name.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => group.gid.as_raw(),
            Ok(None) => return Err(format!("socket-group `{name}`: no such group; create it or drop the option")),
            Err(e) => return Err(format!("socket-group `{name}`: cannot look it up: {e}")),
        },
    };
    Ok(SocketGroup { name: name.to_owned(), gid })
}

/// Where restart histories go when `state-dir` is not given: systemd's `StateDirectory=`, else
/// the XDG state directory (`None`: nowhere to keep them; they then live as long as the daemon).
fn default_state_dir() -> Option<PathBuf> {
    let env = |key| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(dirs) = env("STATE_DIRECTORY") {
        // systemd lists one directory per StateDirectory= entry, separated by colons.
        let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
        return Some(PathBuf::from(first));
    }
    env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .map(|base| base.join("mcpvisor"))
}

impl ServeArgs {
    fn server_config(&self, name: String, fingerprint: Vec<String>) -> Result<ServerConfig, String> {
        let instance = self.server.instance_config(&self.command)?;
        let sharing = self.sharing.sharing()?;
        Ok(ServerConfig { name, instance, sharing, fingerprint })
    }

    /// The daemon's settings and servers. `argv` is the whole command line (it is parsed again
    /// for each server of the file, with the file's options in front).
    pub fn daemon_config(&self, argv: &[OsString]) -> Result<(DaemonConfig, ServeArgs), String> {
        let Some(path) = &self.config else {
            if self.command.is_empty() {
                return Err("give the servers in a file (--config FILE) or one server command after `--`".into());
            }
            let name = match &self.name {
                Some(n) => crate::control::discovery::sanitize(n),
                None => crate::control::discovery::default_name(&self.command[0], &self.command[1..]),
            };
            let fingerprint = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            let server = self.server_config(name, fingerprint)?;
            return Ok((self.daemon(vec![server])?, self.reparse(argv, &[], &[])?));
        };
        if !self.command.is_empty() {
            return Err("give either --config FILE or a server command after `--`, not both".into());
        }
        if self.name.is_some() {
            return Err(
                "--name names the single server of `serve -- COMMAND`; in a file the table names the server".into()
            );
        }
        let file = ServeFile::read(path)?;
        // The daemon's own options: the file's top-level keys, then the command line.
        let top = self.reparse(argv, &file.daemon_flags, &[])?;
        let mut servers = Vec::new();
        for entry in file.servers {
            let mut flags = file.daemon_flags.clone();
            flags.extend(entry.flags.iter().cloned());
            let args = self.reparse(argv, &flags, &entry.command)?;
            let fingerprint =
                entry.flags.iter().chain(&entry.command).map(|a| a.to_string_lossy().into_owned()).collect();
            let server =
                args.server_config(entry.name.clone(), fingerprint).map_err(|e| format!("{}: {e}", entry.at))?;
            servers.push(server);
        }
        Ok((top.daemon(servers)?, top))
    }

    fn daemon(&self, servers: Vec<ServerConfig>) -> Result<DaemonConfig, String> {
        let socket_group = self.daemon.socket_group.as_deref().map(socket_group).transpose()?;
        // Checked here, not by clap: each key of the file is checked on its own.
        if self.daemon.tls_cert.is_some() != self.daemon.tls_key.is_some() {
            return Err("tls-cert and tls-key go together: give both, or neither".into());
        }
        Ok(DaemonConfig {
            socket_dir: self.daemon.runtime_dir.clone(),
            metrics_addr: self.daemon.metrics_addr,
            max_starting: self.daemon.max_starting as usize,
            state_dir: self.daemon.state_dir.clone().or_else(default_state_dir),
            log_dir: self.daemon.log_dir.clone(),
            socket_group,
            http: self.daemon.http.map(|addr| HttpConfig {
                addr,
                session_idle: self.daemon.session_idle_timeout,
                allowed_origins: self.daemon.allowed_origins.clone(),
                allowed_hosts: self.daemon.allowed_hosts.clone(),
                token_file: self.daemon.http_token_file.clone(),
                admin_token_file: self.daemon.http_admin_token_file.clone(),
                max_sessions: self.daemon.max_sessions,
                max_streams: self.daemon.max_streams,
                tls: self.daemon.tls_cert.clone().zip(self.daemon.tls_key.clone()),
                replica: self.daemon.replica.clone(),
            }),
            servers,
        })
    }

    /// `serve`'s arguments with `flags` in front of the command line's and `command` after `--`.
    fn reparse(&self, argv: &[OsString], flags: &[OsString], command: &[OsString]) -> Result<ServeArgs, String> {
        let mut merged: Vec<OsString> = argv.iter().take(2).cloned().collect();
        merged.extend(flags.iter().cloned());
        merged.extend(argv.iter().skip(2).cloned());
        if !command.is_empty() {
            merged.push("--".into());
            merged.extend(command.iter().cloned());
        }
        match Cli::try_parse_from(&merged) {
            Ok(Cli { command: Command::Serve(args) }) => Ok(*args),
            Ok(_) => Err("not a serve command".into()),
            Err(e) => Err(e
                .render()
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid options")
                .trim_start_matches("error: ")
                .to_owned()),
        }
    }
}

/// `--replica`: a name a session id can start with and a balancer can match on.
fn parse_replica(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match ok {
        true => Ok(s.to_owned()),
        false => Err(format!("`{s}`: use 1 to 63 letters, digits, `-` or `_` (a pod name fits)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(file: &str, cli: &[&str]) -> Result<DaemonConfig, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("servers.toml");
        std::fs::write(&path, file).expect("write");
        let mut argv: Vec<OsString> = ["mcpvisor", "serve", "--config"].map(OsString::from).to_vec();
        argv.push(path.into_os_string());
        argv.extend(cli.iter().map(OsString::from));
        let Command::Serve(args) = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?.command else {
            return Err("not serve".into());
        };
        args.daemon_config(&argv).map(|(config, _)| config)
    }

    #[test]
    fn defaults_then_the_servers_table_then_the_command_line() {
        let file = "max-starting = 2\n[defaults]\nmax-restarts = 3\nshare = \"shared\"\n[defaults.env]\nA = \"1\"\n\
                    [servers.a]\ncommand = [\"srv-a\", \"--x\"]\nmax-restarts = 5\n[servers.a.env]\nB = \"2\"\n\
                    [servers.b]\ncommand = [\"srv-b\"]\nshare = \"per-client\"\nmax-clients = 4\n";
        let c = config(file, &["--ping-interval", "0"]).expect("valid");
        assert_eq!(c.max_starting, 2);
        let [a, b] = &c.servers[..] else { panic!("two servers: {:?}", c.servers) };
        assert_eq!((a.name.as_str(), a.instance.spec.argv()), ("a", vec!["srv-a".to_owned(), "--x".to_owned()]));
        assert_eq!(a.instance.policy.max_restarts, 5, "the server's table overrides [defaults]");
        assert_eq!(b.instance.policy.max_restarts, 3, "[defaults] applies");
        assert_eq!((a.sharing.share, b.sharing.share), (Share::Shared, Share::PerClient));
        assert_eq!(b.sharing.max_clients, Some(4));
        assert_eq!(a.sharing.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT), "lazy servers idle out after 10m");
        let keys = |s: &ServerConfig| {
            s.instance.spec.env.iter().map(|v| v.key.to_string_lossy().into_owned()).collect::<Vec<_>>()
        };
        assert_eq!((keys(a), keys(b)), (vec!["A".to_owned(), "B".to_owned()], vec!["A".to_owned()]));
        assert!(a.instance.ping_interval.is_none() && b.instance.ping_interval.is_none(), "the command line wins");
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn inconsistent_choices_are_refused() {
        let e = config("[servers.a]\ncommand = [\"x\"]\nstart = \"eager\"\n", &[]).unwrap_err();
        assert!(e.contains("needs share = \"shared\""), "{e}");
        let e = config("[servers.a]\ncommand = [\"x\"]\n", &["--", "y"]).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = config("[servers.\"a b\"]\ncommand = [\"x\"]\n", &[]).unwrap_err();
        assert!(e.contains("letters, digits"), "{e}");
        assert!(config("log-level = \"debug\"\n", &[]).unwrap_err().contains("no servers"));
        let e = config("tls-cert = \"c.pem\"\n[servers.a]\ncommand = [\"x\"]\n", &[]).unwrap_err();
        assert!(e.contains("go together"), "{e}");
    }
}
