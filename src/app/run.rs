//! `mcpvisor run`: one process, one supervised server, one client on stdin/stdout.
//!
//! This is where the process-wide parts are set up around the single instance: logging, the
//! runtime, the reaper (subreaper and orphan sweep), signals (and the last resort for a second
//! one), the control socket, the optional HTTP endpoint and systemd notifications.

use crate::cli::RunArgs;
use crate::control::discovery;
use crate::exit;
use crate::instance::{Instance, Outcome, Services};
use crate::process::Reaper;

use super::notify::Notifier;
use super::signals::{self, Signals};

pub fn run(args: RunArgs) -> u8 {
    let config = match args.instance_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpvisor: {e}");
            return exit::USAGE;
        }
    };
    let _log_guard = match super::logging::start(&args.log, None) {
        Ok(g) => g,
        Err(code) => return code,
    };
    super::runtime::block_on(async move {
        let reaper = match Reaper::start(true) {
            Ok(r) => r,
            Err(e) => return internal_error(format!("cannot watch for child processes: {e}")),
        };
        let signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => return internal_error(format!("cannot set up signal handling: {e}")),
        };
        if let Err(e) = signals::install_last_resort(reaper.clone()) {
            tracing::warn!("no last resort for a second SIGTERM: {e}");
        }
        let (_stdio, port) = match crate::port::stdio::port(config.max_message_size) {
            Ok(p) => p,
            Err(e) => return internal_error(format!("cannot use stdin/stdout: {e}")),
        };
        let wanted = match &args.name {
            Some(n) => discovery::sanitize(n),
            None => discovery::default_name(&config.spec.program, &config.spec.args),
        };
        let window = config.policy.window;
        let services = Services::alone(reaper.scope());
        let (mut instance, handle) = match Instance::start(config, wanted.clone(), port, services) {
            Ok(started) => started,
            Err(crate::instance::StartFailed { error: e, .. }) => {
                // With logs on stderr the message below is the log; a log file gets it too.
                if args.log.log_file.is_some() {
                    tracing::error!("cannot start the server: {e}");
                }
                eprintln!("mcpvisor: cannot start the server: {e}");
                return exit::UNAVAILABLE;
            }
        };
        // Named once the server has started, so that a server that cannot start leaves nothing.
        let (name, _control) = crate::control::server::open(&wanted, args.control_socket.as_deref(), handle.clone());
        instance.set_name(name);
        let _http = match args.metrics_addr {
            Some(addr) => match crate::http::HttpServer::bind(addr, handle.clone()).await {
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
        let notifier = Notifier::from_env();
        if notifier.enabled() {
            let summary = instance.watch_summary();
            tokio::spawn(notifier.report(summary, handle.clone(), window));
        }
        let forwarding = tokio::spawn(signals.forward(handle));
        crate::resident::drop_startup_pages_soon();
        let outcome = instance.run().await;
        forwarding.abort();
        // Whatever is still parented to mcpvisor (escaped descendants of its servers) must not
        // outlive it.
        let swept = reaper.sweep_all();
        if !swept.is_empty() {
            tracing::warn!(killed = ?swept, "killed processes left behind by the server");
        }
        match outcome {
            Outcome::Stopped => exit::OK,
            Outcome::GaveUp => exit::RESTART_LIMIT,
        }
    })
}

fn internal_error(message: String) -> u8 {
    eprintln!("mcpvisor: {message}");
    exit::FAILURE
}
