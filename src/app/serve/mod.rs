//! `mcpvisor serve`: a daemon that supervises a set of MCP servers for many clients. Each
//! configured server gets an endpoint that `mcpvisor connect NAME` bridges a client's stdio to,
//! and a control socket that `mcpvisor status`, `restart`, `stop`, `logs` and `metrics` use as
//! they use a `run` instance's.
//!
//! The daemon owns what exists once per process (logging, the runtime, the reaper, signals,
//! sd_notify, its own control socket `serve-PID.daemon` for `mcpvisor reload`) and the set of
//! servers ([`server`]; a shared server's clients go through a hub, `shared.rs`; a reload's
//! changes are worked out in [`daemon`]). SIGTERM/SIGINT drain every server's clients and stop the
//! daemon, a second one skips the waits; SIGHUP reloads the file.

mod daemon;
mod pool;
pub mod server;
mod shared;
mod state;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::signals::{self, SignalEvent, Signals};
use crate::cli::ServeArgs;
use crate::config::serve::DaemonConfig;
use crate::control::access::Access;
use crate::control::discovery;
use crate::control::server::ControlServer;
use crate::exit;
use crate::front::checks::Allow;
use crate::front::{Front, FrontConfig};
use crate::process::Reaper;
use daemon::{Daemon, DaemonTarget};
use server::Common;
use state::StateDir;

/// The extension of a daemon's own control socket.
pub const DAEMON_EXTENSION: &str = "daemon";

pub fn run(args: ServeArgs, argv: &[OsString]) -> u8 {
    let (config, top) = match args.daemon_config(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpvisor: {e}");
            return exit::USAGE;
        }
    };
    let _log_guard = match super::logging::start(&top.log, config.log_dir.as_deref()) {
        Ok(g) => g,
        Err(code) => return code,
    };
    super::runtime::block_on(serve(config, argv.to_vec()))
}

async fn serve(config: DaemonConfig, argv: Vec<OsString>) -> u8 {
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
    let access = Access { group: config.socket_group.as_ref().map(|g| g.gid) };
    let dir = match socket_dir(&config, access) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let state = config.state_dir.as_deref().and_then(|path| match StateDir::open(path) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(dir = %path.display(), "no state directory; restart limits start afresh when the daemon restarts: {e}");
            None
        }
    });
    let common = Common {
        dir: dir.clone(),
        access,
        reaper: reaper.clone(),
        starting: Arc::new(Semaphore::new(config.max_starting)),
        state,
    };
    // The HTTP front takes bodies as large as the most generous server does.
    let max_body = config.servers.iter().map(|s| s.instance.max_message_size).max().unwrap_or(64 << 20);
    let mut daemon = match Daemon::start(config.servers, common, argv) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let (reloads, mut reload_requests) = mpsc::channel::<oneshot::Sender<Result<String, String>>>(4);
    let target = DaemonTarget::new(daemon.handles(), reloads);
    let _http = match config.metrics_addr {
        Some(addr) => match crate::http::HttpServer::bind(addr, target.clone()).await {
            Ok(server) => {
                tracing::info!(addr = %server.addr, "metrics endpoint ready");
                Some(server)
            }
            Err(e) => return fail(format!("cannot serve metrics on {addr}: {e}")),
        },
        None => None,
    };
    let front = match &config.http {
        Some(http) => {
            let mut files = Vec::new();
            for file in [&http.token_file, &http.admin_token_file] {
                match file.as_deref().map(read_tokens).transpose() {
                    Ok(tokens) => files.push(tokens.unwrap_or_default()),
                    Err(e) => return fail(e),
                }
            }
            let admin_tokens = files.pop().unwrap_or_default();
            let front = FrontConfig {
                tokens: files.pop().unwrap_or_default(),
                admin_tokens,
                max_sessions: http.max_sessions,
                max_streams: http.max_streams,
                tls: http.tls.clone(),
                replica: http.replica.clone(),
                addr: http.addr,
                allow: Allow { hosts: http.allowed_hosts.clone(), origins: http.allowed_origins.clone() },
                max_body,
                session_idle: http.session_idle,
            };
            match Front::bind(front, target.clone()).await {
                Ok(front) => {
                    let scheme = if http.tls.is_some() { "https" } else { "http" };
                    tracing::info!(addr = %front.addr, "HTTP front ready: {scheme}://{}/mcp/NAME", front.addr);
                    Some(front)
                }
                Err(e) => return fail(format!("cannot serve HTTP on {}: {e}", http.addr)),
            }
        }
        None => None,
    };
    let socket = dir.join(format!("serve-{}.{DAEMON_EXTENSION}", std::process::id()));
    let _control = match ControlServer::bind(&socket, target.clone(), access) {
        Ok(control) => Some(control),
        Err(e) => {
            tracing::warn!(socket = %socket.display(), "no daemon control socket (`mcpvisor reload` will not reach it): {e}");
            None
        }
    };
    daemon.started().await;
    tracing::info!(servers = ?daemon.names(), dir = %dir.display(), "mcpvisor serve ready");
    let mut notifier = super::notify::Notifier::from_env();
    notifier.daemon_ready(daemon.names().len());
    notifier.daemon_status(&daemon.summary().await);
    // The daemon's own loop feeds the watchdog (a stuck loop stops it); STATUS follows along.
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
    crate::resident::drop_startup_pages_soon();

    // Drain on the first SIGTERM/SIGINT; skip the waits on the second.
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = daemon.stopped(), if stopping => break,
            event = signals.recv() => match event {
                SignalEvent::Terminate(signal) => {
                    if stopping {
                        tracing::warn!("{signal} again: skipping the waits");
                    } else {
                        tracing::info!("{signal}: draining every server and shutting down");
                        notifier.daemon_stopping();
                        if let Some(front) = &front {
                            front.close();
                        }
                    }
                    stopping = true;
                    daemon.shutdown(signal).await;
                }
                SignalEvent::Hangup if !stopping => {
                    let _ = reload(&mut daemon, &target, &mut notifier, "SIGHUP").await;
                }
                SignalEvent::Hangup => {}
            },
            Some(_) = super::notify::tick(&mut watchdog) => {
                notifier.daemon_watchdog();
                if !stopping {
                    notifier.daemon_status(&daemon.summary().await);
                }
            }
            Some(reply) = reload_requests.recv() => {
                let result = if stopping {
                    Err("the daemon is stopping".to_owned())
                } else {
                    reload(&mut daemon, &target, &mut notifier, "mcpvisor reload").await
                };
                let _ = reply.send(result);
            }
        }
    }
    drop(daemon);
    let swept = reaper.sweep_all();
    if !swept.is_empty() {
        tracing::warn!(killed = ?swept, "killed processes left behind by the servers");
    }
    tracing::info!("mcpvisor serve stopped");
    exit::OK
}

/// Reloads the file (asked for `by`), logs what happened, and lets the HTTP endpoint, the
/// daemon's socket and systemd see the new set of servers.
async fn reload(
    daemon: &mut Daemon,
    target: &DaemonTarget,
    notifier: &mut super::notify::Notifier,
    by: &str,
) -> Result<String, String> {
    let result = daemon.reload().await;
    match &result {
        Ok(summary) => tracing::info!("{by}: reloaded: {summary}"),
        Err(e) => tracing::error!("{by}: the file was not reloaded: {e}"),
    }
    target.set_servers(daemon.handles());
    notifier.daemon_status(&daemon.summary().await);
    result
}

/// Where the daemon's sockets go: `--runtime-dir`, or the usual per-user directory (under
/// systemd, its `RuntimeDirectory=`).
fn socket_dir(config: &DaemonConfig, access: Access) -> Result<PathBuf, String> {
    match &config.socket_dir {
        Some(dir) => {
            discovery::ensure_dir(dir, access).map_err(|e| e.to_string())?;
            Ok(dir.clone())
        }
        None if access == Access::PRIVATE => discovery::socket_dir().map_err(|e| e.to_string()),
        None => {
            let dir = discovery::candidate_dirs().into_iter().next().unwrap_or_else(|| discovery::SYSTEM_DIR.into());
            discovery::ensure_dir(&dir, access).map_err(|e| e.to_string())?;
            Ok(dir)
        }
    }
}

/// The bearer tokens of `--http-token-file`: one per line; blank lines and `#` comments skipped.
fn read_tokens(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the HTTP token file {}: {e}", path.display()))?;
    let tokens: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    if tokens.is_empty() {
        return Err(format!("the HTTP token file {} has no token; put one per line", path.display()));
    }
    Ok(tokens)
}

fn fail(message: String) -> u8 {
    tracing::error!("{message}");
    eprintln!("mcpvisor: {message}");
    exit::FAILURE
}
