//! A log file per server (`serve --log-dir DIR`): what happens inside a server's span (its
//! clients, its processes, their stderr) goes to `DIR/NAME.log`, everything else to
//! `DIR/mcpvisor.log`. Each file rotates by size ([`RotatingFile`]).
//!
//! How an event finds its file: [`RouteLayer`] remembers the server name of each `server` span
//! and, for each event, puts the name of the server it happens in (if any) in a thread-local
//! just before the formatting layer asks [`RoutedWriter`] for a writer on the same thread. (The
//! formatting layer's writer is not told which span an event is in.) The formatted line then goes
//! over a bounded channel to one writer thread that owns the files, so a slow disk never stalls
//! the relay: when the channel is full, lines are dropped and counted, and the count is written
//! to the daemon's log as soon as it can be.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::rotate::{RotatingFile, Rotation};

/// The span whose `server` field routes the events inside it.
pub const SERVER_SPAN: &str = "server";
/// The file of everything that is not a server's.
const DAEMON_LOG: &str = "mcpvisor";

/// A server's name, kept in its span.
#[derive(Clone)]
struct Route(Arc<str>);

thread_local! {
    /// The route of the event being logged on this thread.
    static CURRENT: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Finds each event's server; must sit below the formatting layer (be added first).
pub struct RouteLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for RouteLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SERVER_SPAN {
            return;
        }
        let mut visitor = ServerField(None);
        attrs.record(&mut visitor);
        if let (Some(name), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(Route(name.into()));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let route = ctx
            .event_scope(event)
            .and_then(|mut scope| scope.find_map(|span| span.extensions().get::<Route>().map(|r| r.0.clone())));
        CURRENT.with(|current| *current.borrow_mut() = route);
    }
}

struct ServerField(Option<String>);

impl Visit for ServerField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "server" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "server" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

/// Lines waiting for the writer thread before new ones are dropped.
const QUEUED_LINES: usize = super::QUEUED_LINES;

type Line = (Option<Arc<str>>, Vec<u8>);

/// What the writer thread is sent.
enum Msg {
    Line(Line),
    /// Write what came before, then stop. (The global subscriber keeps writers, so the channel
    /// itself never closes.)
    Stop,
}

/// The formatting layer's writer: hands each line, with its route, to the writer thread.
#[derive(Clone)]
pub struct RoutedWriter {
    lines: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Keeps the writer thread; dropping it writes what is queued and waits for the thread.
pub struct RoutedGuard {
    writer: Option<RoutedWriter>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RoutedGuard {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.lines.send(Msg::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread for `dir`. The returned writer goes to the formatting layer; the
/// guard must live until exit.
pub fn start(dir: PathBuf, rotation: Rotation) -> io::Result<(RoutedWriter, RoutedGuard)> {
    std::fs::create_dir_all(&dir)?;
    // The daemon's own file is opened now, so that an unusable directory is an error at start.
    let daemon = RotatingFile::open(&dir.join(format!("{DAEMON_LOG}.log")), rotation)?;
    let (lines, queue) = sync_channel(QUEUED_LINES);
    let writer = RoutedWriter { lines, dropped: Arc::default() };
    let files = Files { dir, rotation, daemon, servers: HashMap::new() };
    let dropped = writer.dropped.clone();
    let thread = std::thread::Builder::new().name("mcpvisor-log".into()).spawn(move || files.run(queue, &dropped))?;
    Ok((writer.clone(), RoutedGuard { writer: Some(writer), thread: Some(thread) }))
}

/// One line being formatted.
pub struct LineWriter {
    writer: RoutedWriter,
    route: Option<Arc<str>>,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for RoutedWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        let route = CURRENT.with(|current| current.borrow().clone());
        LineWriter { writer: self.clone(), route, buf: Vec::new() }
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = (self.route.take(), std::mem::take(&mut self.buf));
        if let Err(TrySendError::Full(_)) = self.writer.lines.try_send(Msg::Line(line)) {
            self.writer.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread's files.
struct Files {
    dir: PathBuf,
    rotation: Rotation,
    daemon: RotatingFile,
    servers: HashMap<Arc<str>, RotatingFile>,
}

impl Files {
    fn run(mut self, queue: Receiver<Msg>, dropped: &AtomicU64) {
        let mut failed = false;
        let mut stop = false;
        while let Ok(mut msg) = queue.recv() {
            // Write what is queued, then flush once the queue is empty.
            loop {
                let line = match msg {
                    Msg::Line(line) => line,
                    Msg::Stop => {
                        stop = true;
                        break;
                    }
                };
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let note = format!("mcpvisor: {lost} log lines were dropped: the log could not keep up\n");
                    let _ = self.daemon.write_all(note.as_bytes());
                }
                if let Err(e) = self.write(line) {
                    if !failed {
                        eprintln!("mcpvisor: cannot write the log in {}: {e}", self.dir.display());
                    }
                    failed = true;
                }
                match queue.try_recv() {
                    Ok(next) => msg = next,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let _ = self.daemon.flush();
            for file in self.servers.values_mut() {
                let _ = file.flush();
            }
            if stop {
                return;
            }
        }
    }

    fn write(&mut self, (route, bytes): Line) -> io::Result<()> {
        let Some(server) = route else { return self.daemon.write_all(&bytes) };
        let file = match self.servers.get_mut(&server) {
            Some(file) => file,
            None => {
                let path = self.dir.join(format!("{server}.log"));
                let file = RotatingFile::open(&path, self.rotation)?;
                self.servers.entry(server).or_insert(file)
            }
        };
        file.write_all(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_inside_a_server_span_go_to_its_file_and_the_rest_to_the_daemons() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rotation = Rotation { max_size: 1 << 20, max_files: 2 };
        let (writer, guard) = start(dir.path().to_owned(), rotation).expect("start");
        // The subscriber outlives the guard, as the global one does.
        let subscriber = tracing_subscriber::registry()
            .with(RouteLayer)
            .with(tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false));
        let subscriber = std::sync::Arc::new(subscriber);
        tracing::subscriber::with_default(subscriber.clone(), || {
            tracing::info!("daemon starting");
            let span = tracing::info_span!(SERVER_SPAN, server = "time");
            span.in_scope(|| {
                tracing::info_span!("client", client = 3).in_scope(|| tracing::info!("client connected"));
                tracing::warn!("stray stdout");
            });
            tracing::info_span!(SERVER_SPAN, server = %"everything").in_scope(|| tracing::info!("crashed"));
        });
        drop(guard);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        let (daemon, time, everything) = (read("mcpvisor.log"), read("time.log"), read("everything.log"));
        assert!(daemon.contains("daemon starting") && !daemon.contains("client connected"), "{daemon}");
        assert!(time.contains("client connected") && time.contains("stray stdout"), "{time}");
        assert!(!time.contains("crashed") && everything.contains("crashed"), "{everything}");
    }
}
