//! The listening side of the control socket. Who may connect is [`Access`]'s to say (by
//! default: 0600 inside a 0700 directory, and only our own user or root). Each connection is served by
//! its own task, which hands the request to the instance through its handle: the instance's
//! loop answers from the state it owns.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::access::Access;
use super::discovery;
use super::protocol::{parse_request, Command, Request, Response, IO_TIMEOUT, MAX_REQUEST};
use crate::instance::InstanceHandle;

/// What a control socket controls: an instance (`run`), or a daemon's server and its processes.
pub trait ControlTarget: Clone + Send + Sync + 'static {
    fn answer(&self, command: Command) -> impl std::future::Future<Output = Response> + Send;
}

impl ControlTarget for InstanceHandle {
    async fn answer(&self, command: Command) -> Response {
        match command.to_instance() {
            Some(command) => Response::from_reply(self.call(command).await),
            None => Response::error("this is a `mcpvisor run` instance; reload is for `mcpvisor serve` daemons"),
        }
    }
}

/// Names an instance and opens its control socket. Never fatal: without a socket mcpvisor
/// still relays and supervises, so a problem here is logged and the name is still returned.
pub fn open<T: ControlTarget>(
    wanted: &str,
    explicit_path: Option<&Path>,
    target: T,
) -> (String, Option<ControlServer>) {
    match claim(wanted, explicit_path) {
        Ok((name, path)) => bind_named(wanted, name, &path, target, Access::PRIVATE),
        Err(e) => {
            tracing::warn!("no control socket: {e}");
            (wanted.to_owned(), None)
        }
    }
}

fn bind_named<T: ControlTarget>(
    wanted: &str,
    name: String,
    path: &Path,
    target: T,
    access: Access,
) -> (String, Option<ControlServer>) {
    if name != wanted {
        tracing::warn!("an instance named {wanted} is already running; this one is {name}");
    }
    match ControlServer::bind(path, target, access) {
        Ok(server) => {
            tracing::info!(name, socket = %path.display(), "control socket ready");
            (name, Some(server))
        }
        Err(e) => {
            tracing::warn!(socket = %path.display(), "cannot open the control socket: {e}");
            (name, None)
        }
    }
}

/// As [`open`], in directory `dir` (a daemon's, for one of its servers) under its `access`.
pub fn open_in<T: ControlTarget>(
    dir: &Path,
    wanted: &str,
    target: T,
    access: Access,
) -> (String, Option<ControlServer>) {
    match discovery::claim(dir, wanted) {
        Ok((name, path)) => bind_named(wanted, name, &path, target, access),
        Err(e) => {
            tracing::warn!("no control socket: {e}");
            (wanted.to_owned(), None)
        }
    }
}

/// The name and socket path this instance gets.
fn claim(wanted: &str, explicit_path: Option<&Path>) -> Result<(String, PathBuf), String> {
    match explicit_path {
        Some(path) if discovery::is_live(path) => {
            Err(format!("another instance answers on {}; running without one", path.display()))
        }
        Some(path) => {
            if discovery::is_stale(path) {
                let _ = std::fs::remove_file(path);
            }
            Ok((wanted.to_owned(), path.to_owned()))
        }
        None => {
            let dir = discovery::socket_dir().map_err(|e| e.to_string())?;
            discovery::claim(&dir, wanted).map_err(|e| e.to_string())
        }
    }
}

/// The listening socket; removes its file when dropped.
pub struct ControlServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlServer {
    /// Binds `path` and serves it to the peers `access` admits. Must run inside the runtime.
    pub fn bind<T: ControlTarget>(path: &Path, target: T, access: Access) -> io::Result<ControlServer> {
        let listener = UnixListener::bind(path)?;
        access.secure_socket(path)?;
        let task = tokio::spawn(accept_loop(listener, target, access));
        Ok(ControlServer { path: path.to_owned(), task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

async fn accept_loop<T: ControlTarget>(listener: UnixListener, target: T, access: Access) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !access.admits(&stream, "control") {
            continue;
        }
        tokio::spawn(serve(stream, target.clone()));
    }
}

async fn serve<T: ControlTarget>(stream: UnixStream, target: T) {
    let (read, mut write) = stream.into_split();
    let response = match tokio::time::timeout(IO_TIMEOUT, read_request(read)).await {
        Err(_) => Response::error(format!("no complete request within {}s", IO_TIMEOUT.as_secs())),
        // Connected and closed without a word: `mcpvisor status` checking that the socket is live.
        Ok(Ok(None)) => return,
        Ok(Err(msg)) => Response::error(msg),
        Ok(Ok(Some(request))) => target.answer(request.command).await,
    };
    if !response.ok {
        tracing::warn!("control request failed: {}", response.error.as_deref().unwrap_or(""));
    }
    let mut line = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"v\":1,\"ok\":false}".to_vec());
    line.push(b'\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, write.write_all(&line)).await;
}

/// The request, or `None` if the peer closed the connection without sending anything.
async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<Option<Request>, String> {
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST + 1));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await.map_err(|e| format!("reading the request failed: {e}"))?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() as u64 > MAX_REQUEST {
        return Err(format!("request larger than {MAX_REQUEST} bytes"));
    }
    parse_request(&line).map(Some)
}
