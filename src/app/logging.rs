//! mcpvisor's own logs (and the server's stderr, which is logged line by line).
//!
//! Logs never go to stdout, which carries only protocol messages. They go to stderr or to
//! `--log-file`, through a non-blocking writer thread so that a slow log sink never stalls the
//! relay (under extreme pressure lines are dropped rather than blocking).
//!
//! The writer's queue holds [`QUEUED_LINES`] lines. tracing-appender's default (128 000) allocates
//! and touches about 4 MiB up front, half of mcpvisor's idle memory; a thousand lines are enough
//! to ride out a slow log sink; lines beyond that are dropped rather than stall the relay.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt;

use crate::cli::server::LogOptions;
use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}: {source}")]
pub struct LogFileError {
    path: String,
    source: std::io::Error,
}

/// Installs the global subscriber as the command line says; a log file that cannot be opened is
/// a usage error, explained on stderr, and its exit status is returned.
pub fn start(options: &LogOptions) -> Result<WorkerGuard, u8> {
    init(options.log_level, options.log_format, options.log_file.as_deref()).map_err(|e| {
        eprintln!("mcpvisor: {e}; check the path or drop --log-file");
        crate::exit::USAGE
    })
}

/// Installs the global subscriber; keep the guard alive until exit so buffered lines are flushed.
pub fn init(level: tracing::Level, format: LogFormat, file: Option<&Path>) -> Result<WorkerGuard, LogFileError> {
    let (writer, guard, ansi) = match file {
        Some(path) => {
            let err = |source| LogFileError { path: path.display().to_string(), source };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
            let (w, g) = non_blocking(file);
            (w, g, false)
        }
        None => {
            let (w, g) = non_blocking(std::io::stderr());
            (w, g, std::io::stderr().is_terminal())
        }
    };
    let builder = fmt().with_writer(writer).with_max_level(level).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(guard)
}

/// Log lines that may wait for the writer thread before new ones are dropped.
pub const QUEUED_LINES: usize = 1024;

fn non_blocking<W: std::io::Write + Send + 'static>(sink: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default().buffered_lines_limit(QUEUED_LINES).lossy(true).finish(sink)
}
