//! The daemon's set of servers, and how a reload changes it: the file is read again (with the
//! same command line); a file with an error is rejected whole and nothing changes. Then, by
//! name: an added server starts (as its start mode says), a removed one loses its sockets at once
//! and drains; a changed one takes its new settings, and each of its processes restarts
//! gracefully under them, its clients' sessions rebuilt (a change of `share` replaces the
//! server, disconnecting its clients); an unchanged one is not touched. The daemon's own
//! settings (runtime-dir, metrics-addr, max-starting, logging) are only read at start.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Parser;
use tokio::sync::{mpsc, oneshot};

use super::server::{Common, Server, ServerHandle};
use crate::cli::{Cli, Command};
use crate::config::serve::ServerConfig;
use crate::control::protocol::{Command as ControlCommand, Response};
use crate::control::server::ControlTarget;
use crate::front::{AttachError, Backends};
use crate::observe::status::{State, Status};
use crate::port::any::AnyInput;
use crate::port::ClientPort;

pub struct Daemon {
    servers: BTreeMap<String, Server>,
    /// Servers a reload removed, until their processes have stopped.
    retiring: Vec<Server>,
    common: Common,
    /// The command line, read again on reload.
    argv: Vec<OsString>,
}

impl Daemon {
    pub fn start(configs: Vec<ServerConfig>, common: Common, argv: Vec<OsString>) -> Result<Daemon, String> {
        let mut daemon = Daemon { servers: BTreeMap::new(), retiring: Vec::new(), common, argv };
        for cfg in configs {
            daemon.add(cfg)?;
        }
        Ok(daemon)
    }

    fn add(&mut self, cfg: ServerConfig) -> Result<(), String> {
        let name = cfg.name.clone();
        let server = Server::start(cfg, &self.common).map_err(|e| format!("cannot serve `{name}`: {e}"))?;
        self.servers.insert(name, server);
        Ok(())
    }

    /// Resolves once every eager server's process has been started.
    pub async fn started(&self) {
        for server in self.servers.values() {
            server.started().await;
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.servers.keys().map(String::as_str).collect()
    }

    pub fn handles(&self) -> Vec<ServerHandle> {
        self.servers.values().map(Server::handle).collect()
    }

    /// Re-reads the file and applies the differences; says what changed.
    pub async fn reload(&mut self) -> Result<String, String> {
        let Command::Serve(args) = Cli::try_parse_from(&self.argv).map_err(|e| e.to_string())?.command else {
            return Err("not a serve command line".into());
        };
        let (config, _) = args.daemon_config(&self.argv)?;
        let mut wanted: BTreeMap<String, ServerConfig> =
            config.servers.into_iter().map(|s| (s.name.clone(), s)).collect();
        let (mut added, mut removed, mut changed, mut unchanged) = (0, 0, 0, 0);
        let gone: Vec<String> = self.servers.keys().filter(|n| !wanted.contains_key(*n)).cloned().collect();
        for name in gone {
            tracing::info!(server = name, "removed from the file: draining and stopping it");
            self.retire(&name).await;
            removed += 1;
        }
        for (name, cfg) in std::mem::take(&mut wanted) {
            match self.servers.get(&name) {
                None => {
                    self.add(cfg)?;
                    tracing::info!(server = name, "added");
                    added += 1;
                }
                Some(server) if server.config().fingerprint == cfg.fingerprint => unchanged += 1,
                Some(server) if server.config().sharing.share != cfg.sharing.share => {
                    tracing::info!(server = name, "its sharing changed: replacing it");
                    self.retire(&name).await;
                    self.add(cfg)?;
                    changed += 1;
                }
                Some(server) => {
                    let restarted = server.update(cfg).await;
                    tracing::info!(
                        server = name,
                        restarted,
                        "changed: restarting its processes under the new settings"
                    );
                    changed += 1;
                }
            }
        }
        Ok(format!("{added} added, {removed} removed, {changed} changed, {unchanged} unchanged"))
    }

    /// Takes server `name` out of service: its sockets go, its processes drain and stop.
    async fn retire(&mut self, name: &str) {
        if let Some(mut server) = self.servers.remove(name) {
            server.retire().await;
            self.retiring.push(server);
        }
    }

    /// A line for systemd's STATUS: how many servers are in which state, and the clients.
    pub async fn summary(&self) -> String {
        let (mut ready, mut idle, mut failed, mut other, mut clients) = (0, 0, 0, 0, 0);
        for server in self.servers.values() {
            let status = server.handle().status().await;
            clients += status.clients;
            match status.state {
                State::Ready => ready += 1,
                State::Idle => idle += 1,
                State::Failed => failed += 1,
                _ => other += 1,
            }
        }
        format!(
            "{} servers: {ready} ready, {idle} idle, {failed} failed, {other} starting or restarting; {clients} clients",
            self.servers.len()
        )
    }

    /// Asks every server to drain and stop.
    pub async fn shutdown(&self, signal: &'static str) {
        for server in self.servers.values().chain(&self.retiring) {
            server.shutdown(signal).await;
        }
    }

    /// Waits until every server's processes have stopped.
    pub async fn stopped(&self) {
        for server in self.servers.values().chain(&self.retiring) {
            server.stopped().await;
        }
    }
}

/// The whole daemon, as its HTTP endpoint and its control socket see it: `/metrics` for every
/// server, `/healthz`, `/readyz` (ready when every eager server has a ready process), and `reload`.
#[derive(Clone)]
pub struct DaemonTarget {
    servers: Arc<Mutex<Vec<ServerHandle>>>,
    reloads: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
}

impl DaemonTarget {
    pub fn new(servers: Vec<ServerHandle>, reloads: mpsc::Sender<oneshot::Sender<Result<String, String>>>) -> Self {
        DaemonTarget { servers: Arc::new(Mutex::new(servers)), reloads }
    }

    pub fn set_servers(&self, servers: Vec<ServerHandle>) {
        *self.servers.lock().unwrap_or_else(PoisonError::into_inner) = servers;
    }

    fn servers(&self) -> Vec<ServerHandle> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl DaemonTarget {
    /// Server `name` (`None`: the only one).
    fn find(&self, name: Option<&str>) -> Result<ServerHandle, AttachError> {
        let servers = self.servers();
        let server = match name {
            Some(name) => servers.into_iter().find(|s| s.name() == name),
            None if servers.len() == 1 => servers.into_iter().next(),
            None => None,
        };
        server.ok_or(AttachError::Unknown)
    }
}

impl Backends for DaemonTarget {
    type Server = ServerHandle;

    fn servers(&self) -> Vec<(String, ServerHandle)> {
        DaemonTarget::servers(self).into_iter().map(|s| (s.name().to_owned(), s)).collect()
    }
    fn attach(&self, name: Option<&str>, port: ClientPort<AnyInput>) -> Result<String, AttachError> {
        let server = self.find(name)?;
        match server.attach(port) {
            Ok(_) => Ok(server.name().to_owned()),
            Err(refused) => Err(AttachError::Refused(refused.error)),
        }
    }

    fn attach_stateless(&self, name: Option<&str>, port: ClientPort<AnyInput>) -> Result<String, AttachError> {
        let server = self.find(name)?;
        match server.attach_stateless(port) {
            Ok(_) => Ok(server.name().to_owned()),
            Err(refused) => Err(AttachError::Refused(refused.error)),
        }
    }
}

impl ControlTarget for DaemonTarget {
    async fn answer(&self, command: ControlCommand) -> Response {
        match command {
            ControlCommand::Status => {
                let mut status = Status { name: "mcpvisor-serve".into(), ..Status::default() };
                let mut states = Vec::new();
                let mut ready = true;
                for server in self.servers() {
                    let s = server.status().await;
                    ready &= !server.is_eager() || s.state == State::Ready;
                    states.push(s.state);
                    status.clients += s.clients;
                    status.processes.extend(s.processes);
                }
                status.state = State::worst(states);
                status.ready = Some(ready);
                Response { status: Some(Box::new(status)), ..Response::ok() }
            }
            ControlCommand::Metrics => {
                let mut parts = Vec::new();
                for server in self.servers() {
                    parts.push((server.counters().await, server.status().await));
                }
                let refs: Vec<_> = parts.iter().map(|(m, s)| (m, s)).collect();
                Response { metrics: Some(crate::observe::metrics::render_many(&refs)), ..Response::ok() }
            }
            ControlCommand::Reload => {
                let (reply, result) = oneshot::channel();
                if self.reloads.send(reply).await.is_err() {
                    return Response::error("the daemon is stopping");
                }
                match result.await {
                    Ok(Ok(summary)) => Response { message: Some(summary), ..Response::ok() },
                    Ok(Err(e)) => Response::error(e),
                    Err(_) => Response::error("the daemon is stopping"),
                }
            }
            _ => Response::error("the daemon's other commands go to its servers: `mcpvisor restart NAME`"),
        }
    }
}
