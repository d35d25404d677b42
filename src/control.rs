//! The control socket: how `mcpvisor status` (and other tools) talk to a running instance.
//!
//! Protocol (documented in `docs/control-protocol.md`): the client sends one JSON object on one
//! line, `{"v":1,"cmd":"status"}`, and gets one JSON object on one line back, always with `"v"`
//! and `"ok"`. Requests are capped at [`MAX_REQUEST`] bytes and [`IO_TIMEOUT`]; malformed or
//! unknown requests get `{"ok":false,"error":…}`, never a crash. The socket is 0600 inside a 0700
//! directory, and a peer whose uid is neither root nor ours is refused and logged.
//!
//! The listener runs as its own task and hands each request to the supervisor loop with a reply
//! channel, so the loop stays the only owner of the state it reports.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::status::Status;

pub const PROTOCOL_VERSION: u32 = 1;
pub const MAX_REQUEST: u64 = 64 * 1024;
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Status,
    /// Graceful restart of the server (as SIGHUP); also clears the Failed state.
    Restart,
    /// Graceful drain and exit (as SIGTERM).
    Stop,
    /// The last `lines` lines the server wrote to stderr.
    Logs {
        #[serde(default = "default_lines")]
        lines: usize,
    },
    /// Prometheus text exposition.
    Metrics,
}

fn default_lines() -> usize {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub command: Command,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Response {
    pub fn ok() -> Response {
        Response { v: PROTOCOL_VERSION, ok: true, ..Response::default() }
    }

    pub fn error(msg: impl Into<String>) -> Response {
        Response { v: PROTOCOL_VERSION, ok: false, error: Some(msg.into()), ..Response::default() }
    }
}

/// A request handed to the supervisor loop.
pub struct ControlCall {
    pub command: Command,
    pub reply: oneshot::Sender<Response>,
}

/// Where control requests come from (the socket and the HTTP endpoint), as the supervisor holds
/// them: the servers stay alive as long as this does.
pub struct Control {
    pub calls: mpsc::Receiver<ControlCall>,
    pub socket: Option<ControlServer>,
    pub http: Option<crate::http::HttpServer>,
}

/// Names this instance and opens its control socket. Never fatal: without a socket mcpvisor
/// still relays and supervises, so a problem here is logged and the name is still returned.
pub fn open(
    wanted: &str,
    explicit_path: Option<&Path>,
    calls: mpsc::Sender<ControlCall>,
) -> (String, Option<ControlServer>) {
    let claimed = match explicit_path {
        Some(path) if crate::instance::is_live(path) => {
            tracing::warn!(path = %path.display(), "another instance answers on this control socket; running without one");
            None
        }
        Some(path) => {
            if crate::instance::is_stale(path) {
                let _ = std::fs::remove_file(path);
            }
            Some((wanted.to_owned(), path.to_owned()))
        }
        None => match crate::instance::socket_dir() {
            Ok(dir) => match crate::instance::claim(&dir, wanted) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("no control socket: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::warn!("no control socket: {e}");
                None
            }
        },
    };
    let Some((name, path)) = claimed else { return (wanted.to_owned(), None) };
    if name != wanted {
        tracing::warn!("an instance named {wanted} is already running; this one is {name}");
    }
    match ControlServer::bind(&path, calls) {
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
    /// Binds `path` (mode 0600) and serves it; calls go to `calls`. Must run inside the runtime.
    pub fn bind(path: &Path, calls: mpsc::Sender<ControlCall>) -> io::Result<ControlServer> {
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let task = tokio::spawn(accept_loop(listener, calls));
        Ok(ControlServer { path: path.to_owned(), task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

async fn accept_loop(listener: UnixListener, calls: mpsc::Sender<ControlCall>) {
    let me = nix::unistd::getuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "control connection from another user refused");
                continue;
            }
            Err(e) => {
                tracing::warn!("control connection refused: cannot read its credentials: {e}");
                continue;
            }
        }
        tokio::spawn(serve(stream, calls.clone()));
    }
}

async fn serve(stream: UnixStream, calls: mpsc::Sender<ControlCall>) {
    let (read, mut write) = stream.into_split();
    let response = match tokio::time::timeout(IO_TIMEOUT, read_request(read)).await {
        Err(_) => Response::error(format!("no complete request within {}s", IO_TIMEOUT.as_secs())),
        Ok(Err(msg)) => Response::error(msg),
        Ok(Ok(request)) => dispatch(request, &calls).await,
    };
    if !response.ok {
        tracing::warn!("control request failed: {}", response.error.as_deref().unwrap_or(""));
    }
    let mut line = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"v\":1,\"ok\":false}".to_vec());
    line.push(b'\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, write.write_all(&line)).await;
}

async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST + 1));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await.map_err(|e| format!("reading the request failed: {e}"))?;
    if line.len() as u64 > MAX_REQUEST {
        return Err(format!("request larger than {MAX_REQUEST} bytes"));
    }
    parse_request(&line)
}

/// Parses one request line; the error says what is wrong in terms a client author can act on.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => return Err(format!("unsupported protocol version {v} (this mcpvisor speaks {PROTOCOL_VERSION})")),
        None => return Err("missing protocol version field \"v\"".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("unknown or malformed command: {e}"))
}

async fn dispatch(request: Request, calls: &mpsc::Sender<ControlCall>) -> Response {
    let (reply, rx) = oneshot::channel();
    if calls.send(ControlCall { command: request.command, reply }).await.is_err() {
        return Response::error("mcpvisor is shutting down");
    }
    match tokio::time::timeout(IO_TIMEOUT, rx).await {
        Ok(Ok(response)) => response,
        _ => Response::error("mcpvisor did not answer in time"),
    }
}

/// Client side: sends one command to the socket at `path` and returns the response.
pub fn call(path: &Path, command: Command) -> io::Result<Response> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = serde_json::to_vec(&Request { v: PROTOCOL_VERSION, command }).map_err(io::Error::other)?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_explain_themselves() {
        assert_eq!(parse_request(br#"{"v":1,"cmd":"status"}"#).expect("ok").command, Command::Status);
        assert_eq!(parse_request(br#"{"v":1,"cmd":"logs"}"#).expect("ok").command, Command::Logs { lines: 100 });
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"logs","lines":5}"#).expect("ok").command,
            Command::Logs { lines: 5 }
        );
        assert!(parse_request(b"nope").unwrap_err().contains("malformed"));
        assert!(parse_request(br#"{"cmd":"status"}"#).unwrap_err().contains("\"v\""));
        assert!(parse_request(br#"{"v":9,"cmd":"status"}"#).unwrap_err().contains("version 9"));
        assert!(parse_request(br#"{"v":1,"cmd":"explode"}"#).unwrap_err().contains("unknown"));
    }
}
