//! mcpvisor's own logs (and the server's stderr, which is logged line by line).
//!
//! Logs never go to stdout, which carries only protocol messages. They go, in this order of
//! preference:
//! - with `serve --log-dir DIR`: to a file per server plus the daemon's own ([`routes`]);
//! - with `--log-file PATH`: to that file;
//! - when stderr is the systemd journal (`JOURNAL_STREAM` names it): to the journal as native
//!   records, so that a server's lines carry `SERVER=NAME` (and `CLIENT=N`) fields to filter on;
//! - otherwise to stderr.
//!
//! Files rotate by size ([`rotate`]; `--log-max-size`, `--log-max-files`). Lines reach files and
//! stderr through a writer thread, so that a slow log sink never stalls the relay; under extreme
//! pressure lines are dropped rather than block. The queue holds [`QUEUED_LINES`] lines:
//! tracing-appender's default (128 000) allocates and touches about 4 MiB up front, half of
//! mcpvisor's idle memory, and a thousand lines are enough to ride out a slow sink.

mod rotate;
mod routes;

use std::io::IsTerminal;
use std::path::Path;

use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::cli::server::LogOptions;
use crate::config::LogFormat;
pub use rotate::Rotation;
pub use routes::SERVER_SPAN;

/// Log lines that may wait for the writer thread before new ones are dropped.
pub const QUEUED_LINES: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot open log {what} {path}: {source}")]
pub struct LogFileError {
    what: &'static str,
    path: String,
    source: std::io::Error,
}

/// Where the log goes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// A file per server in this directory, and `mcpvisor.log`.
    Dir(&'a Path),
    File(&'a Path),
    Journal,
    Stderr,
}

impl<'a> Destination<'a> {
    /// The destination the options ask for (`dir`: `serve`'s log directory).
    pub fn of(options: &'a LogOptions, dir: Option<&'a Path>) -> Destination<'a> {
        match (dir, options.log_file.as_deref()) {
            (Some(dir), _) => Destination::Dir(dir),
            (None, Some(file)) => Destination::File(file),
            (None, None) if stderr_is_journal() => Destination::Journal,
            (None, None) => Destination::Stderr,
        }
    }
}

/// Keeps the log's writer alive; drop it at exit, after the last line, so queued lines are
/// written.
pub enum LogGuard {
    Appender(WorkerGuard),
    Routed(routes::RoutedGuard),
    Journal,
}

/// Installs the global subscriber as the command line says (`dir`: `serve`'s log directory). A
/// log that cannot be opened is a usage error, explained on stderr, and its exit status returned.
pub fn start(options: &LogOptions, dir: Option<&Path>) -> Result<LogGuard, u8> {
    let rotation = Rotation { max_size: options.log_max_size, max_files: options.log_max_files };
    let destination = Destination::of(options, dir);
    init(options.log_level, options.log_format, destination, rotation).map_err(|e| {
        eprintln!("mcpvisor: {e}; check the path or choose another place for the log");
        crate::exit::USAGE
    })
}

/// The subscriber every destination builds on: [`routes::RouteLayer`] finds each event's server
/// (only a log directory needs it).
type Base = Layered<Option<routes::RouteLayer>, Registry>;
type Output = Box<dyn Layer<Base> + Send + Sync>;

/// Installs the global subscriber.
pub fn init(
    level: tracing::Level,
    format: LogFormat,
    destination: Destination<'_>,
    rotation: Rotation,
) -> Result<LogGuard, LogFileError> {
    let mut route = None;
    let (output, guard): (Output, LogGuard) = match destination {
        Destination::Dir(dir) => {
            let (writer, guard) = routes::start(dir.to_owned(), rotation).map_err(|source| LogFileError {
                what: "directory",
                path: dir.display().to_string(),
                source,
            })?;
            route = Some(routes::RouteLayer);
            (formatted(writer, format, false), LogGuard::Routed(guard))
        }
        Destination::File(path) => {
            let file = rotate::RotatingFile::open(path, rotation).map_err(|source| LogFileError {
                what: "file",
                path: path.display().to_string(),
                source,
            })?;
            let (writer, guard) = non_blocking(file);
            (formatted(writer, format, false), LogGuard::Appender(guard))
        }
        Destination::Journal => match tracing_journald::layer() {
            // Fields go unprefixed, so a server's lines carry SERVER=NAME.
            Ok(layer) => {
                (layer.with_field_prefix(None).with_syslog_identifier("mcpvisor".into()).boxed(), LogGuard::Journal)
            }
            Err(_) => stderr_output(format),
        },
        Destination::Stderr => stderr_output(format),
    };
    let _ = Registry::default().with(route).with(output).with(LevelFilter::from_level(level)).try_init();
    Ok(guard)
}

fn stderr_output(format: LogFormat) -> (Output, LogGuard) {
    let (writer, guard) = non_blocking(std::io::stderr());
    (formatted(writer, format, std::io::stderr().is_terminal()), LogGuard::Appender(guard))
}

fn formatted<W>(writer: W, format: LogFormat, ansi: bool) -> Output
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    }
}

fn non_blocking<W: std::io::Write + Send + 'static>(
    sink: W,
) -> (tracing_appender::non_blocking::NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default().buffered_lines_limit(QUEUED_LINES).lossy(true).finish(sink)
}

/// Whether stderr is connected to the systemd journal: systemd then sets `JOURNAL_STREAM` to
/// `DEVICE:INODE` of that stream (a child that inherited the variable but not the stream must
/// not take it for its own).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else { return false };
    names_stream(&value.to_string_lossy(), stderr.dev(), stderr.ino())
}

fn names_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(names_stream("2049:123456", 2049, 123456));
        assert!(!names_stream("2049:123456", 2049, 123457));
        assert!(!names_stream("garbage", 2049, 123456));
        assert!(!names_stream("", 0, 0));
    }
}
