//! `mcpvisor serve`: a daemon that supervises a set of MCP servers for many clients. Each
//! configured server gets an endpoint that `mcpvisor connect NAME` bridges a client's stdio to,
//! and a control socket that `mcpvisor status`, `restart`, `stop`, `logs` and `metrics` use as
//! they use a `run` instance's.
//!
//! The daemon owns what exists once per process (logging, the runtime, the reaper, signals,
//! sd_notify) and the set of servers ([`server`]; a shared server's clients go through a hub,
//! `shared.rs`). SIGTERM/SIGINT drain every server's clients
//! and stop the daemon; a second one skips the waits.

pub mod server;
mod shared;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::signals::{self, SignalEvent, Signals};
use crate::cli::ServeArgs;
use crate::config::serve::DaemonConfig;
use crate::control::discovery;
use crate::control::protocol::{Command as ControlCommand, Response};
use crate::control::server::ControlTarget;
use crate::exit;
use crate::observe::status::{State, Status};
use crate::process::Reaper;
use server::{Server, ServerHandle};

pub fn run(args: ServeArgs, argv: &[OsString]) -> u8 {
    let (config, top) = match args.daemon_config(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpvisor: {e}");
            return exit::USAGE;
        }
    };

    let _log_guard = match super::logging::init(top.log.log_level, top.log.log_format, top.log.log_file.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("mcpvisor: {e}; check the path or drop --log-file");
            return exit::USAGE;
        }
    };
    super::runtime::block_on(daemon(config))
}

async fn daemon(config: DaemonConfig) -> u8 {
    let reaper = match Reaper::start(true) {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot watch for child processes: {e}")),
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot set up signal handling: {e}")),
    };
    if let Err(e) = signals::install_last_resort(reaper.clone()) {
        tracing::warn!("no last resort for a second SIGTERM: {e}");
    }
    let dir = match socket_dir(&config) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let starting = Arc::new(Semaphore::new(config.max_starting));
    let mut servers = Vec::new();
    for cfg in config.servers {
        let name = cfg.name.clone();
        match Server::start(cfg, &dir, reaper.clone(), starting.clone()) {
            Ok(server) => servers.push(server),
            Err(e) => return fail(format!("cannot serve `{name}`: {e}")),
        }
    }
    let _http = match config.metrics_addr {
        Some(addr) => {
            let target = DaemonTarget(Arc::new(servers.iter().map(Server::handle).collect()));
            match crate::http::HttpServer::bind(addr, target).await {
                Ok(server) => {
                    tracing::info!(addr = %server.addr, "metrics endpoint ready");
                    Some(server)
                }
                Err(e) => return fail(format!("cannot serve metrics on {addr}: {e}")),
            }
        }
        None => None,
    };
    let names: Vec<&str> = servers.iter().map(Server::name).collect();
    tracing::info!(servers = ?names, dir = %dir.display(), "mcpvisor serve ready");
    let mut notifier = super::notify::Notifier::from_env();
    notifier.daemon_ready(servers.len());

    // Drain on the first SIGTERM/SIGINT; skip the waits on the second.
    let mut stopping = false;
    loop {
        let all_stopped = async {
            for server in &servers {
                server.stopped().await;
            }
        };
        tokio::select! {
            _ = all_stopped, if stopping => break,
            event = signals.recv() => match event {
                SignalEvent::Terminate(signal) => {
                    if stopping {
                        tracing::warn!("{signal} again: skipping the waits");
                    } else {
                        tracing::info!("{signal}: draining every server and shutting down");
                        notifier.daemon_stopping();
                    }
                    stopping = true;
                    for server in &servers {
                        server.shutdown(signal).await;
                    }
                }
                SignalEvent::Hangup => tracing::warn!("SIGHUP: reloading the file is not supported yet; nothing changed"),
            },
        }
    }
    drop(servers);
    let swept = reaper.sweep_all();
    if !swept.is_empty() {
        tracing::warn!(killed = ?swept, "killed processes left behind by the servers");
    }
    tracing::info!("mcpvisor serve stopped");
    exit::OK
}

/// The whole daemon, as its HTTP endpoint sees it: `/metrics` for every server, `/healthz`,
/// and `/readyz` (ready when every server is).
#[derive(Clone)]
struct DaemonTarget(Arc<Vec<ServerHandle>>);

impl ControlTarget for DaemonTarget {
    async fn answer(&self, command: ControlCommand) -> Response {
        match command {
            ControlCommand::Status => {
                let mut status = Status { name: "mcpvisor-serve".into(), state: State::Idle, ..Status::default() };
                for server in self.0.iter() {
                    let s = server.status().await;
                    if s.state.severity() > status.state.severity() {
                        status.state = s.state;
                    }
                    status.clients += s.clients;
                    status.processes.extend(s.processes);
                }
                Response { status: Some(Box::new(status)), ..Response::ok() }
            }
            ControlCommand::Metrics => {
                let mut parts = Vec::new();
                for server in self.0.iter() {
                    parts.push((server.counters().await, server.status().await));
                }
                let refs: Vec<_> = parts.iter().map(|(m, s)| (m, s)).collect();
                Response { metrics: Some(crate::observe::metrics::render_many(&refs)), ..Response::ok() }
            }
            _ => Response::error("the daemon's commands go to its servers: `mcpvisor restart NAME`"),
        }
    }
}

/// Where the daemon's sockets go: `--runtime-dir`, or the usual per-user directory.
fn socket_dir(config: &DaemonConfig) -> Result<PathBuf, String> {
    match &config.socket_dir {
        Some(dir) => {
            discovery::ensure_private_dir(dir).map_err(|e| e.to_string())?;
            Ok(dir.clone())
        }
        None => discovery::socket_dir().map_err(|e| e.to_string()),
    }
}

fn fail(message: String) -> u8 {
    tracing::error!("{message}");
    eprintln!("mcpvisor: {message}");
    exit::FAILURE
}
