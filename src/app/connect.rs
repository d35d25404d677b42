//! `mcpvisor connect NAME|SOCKET`: a stdio ↔ Unix socket bridge.
//!
//! Lets an MCP client that only knows stdio commands use a server of a running `mcpvisor serve`
//! (`mcpvisor connect everything`: the daemon's `everything.mcp` endpoint, found where `status`
//! finds instances) or one that runs as a socket-activated systemd service (a path:
//! `mcpvisor connect /run/user/1000/mcp/everything.sock`). Bytes are copied both ways unchanged;
//! when the client closes stdin the socket's write side is shut down, and the bridge exits when
//! the other side closes the connection.
//!
//! When no daemon serves NAME, the client's first request is answered with a JSON-RPC error that
//! says what to start, so the reason shows in the client's UI, and the bridge exits with status 3.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::control::discovery;
use crate::exit;
use crate::protocol::errors::OwnError;

/// How long the client has to send its first request when there is nothing to connect to.
const NO_DAEMON_WAIT: Duration = Duration::from_secs(10);

pub fn run(target: &str) -> u8 {
    super::runtime::block_on(async {
        if target.contains('/') {
            let path = PathBuf::from(target);
            return match UnixStream::connect(&path).await {
                Ok(stream) => bridge(stream, &path).await,
                Err(e) => {
                    eprintln!(
                        "mcpvisor: cannot connect to {}: {e} (is the socket unit running? `systemctl --user status` it)",
                        path.display()
                    );
                    exit::UNAVAILABLE
                }
            };
        }
        for path in discovery::endpoints(target) {
            if let Ok(stream) = UnixStream::connect(&path).await {
                return bridge(stream, &path).await;
            }
        }
        no_daemon(target).await
    })
}

/// Tells the client (and stderr) that nothing serves `name`.
async fn no_daemon(name: &str) -> u8 {
    let error = OwnError::NoDaemon { server: name.to_owned() };
    eprintln!("mcpvisor: {}", error.message());
    match crate::port::stdio::port(1 << 20) {
        Ok((_stdio, port)) => crate::port::refuse(port, error, NO_DAEMON_WAIT).await,
        Err(e) => eprintln!("mcpvisor: cannot use stdin/stdout: {e}"),
    }
    exit::UNAVAILABLE
}

/// Copies bytes both ways between stdio and `stream` (connected to `path`) until either side ends.
async fn bridge(stream: UnixStream, path: &Path) -> u8 {
    let (stdio, mut input, mut output) = match crate::port::stdio::open() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcpvisor: cannot use stdin/stdout: {e}");
            return exit::FAILURE;
        }
    };
    let (mut from_sock, mut to_sock) = stream.into_split();
    crate::resident::drop_startup_pages_soon();
    let upstream = async {
        let r = tokio::io::copy(&mut input, &mut to_sock).await;
        let _ = to_sock.shutdown().await;
        r
    };
    let downstream = async {
        let r = tokio::io::copy(&mut from_sock, &mut output).await;
        let _ = output.flush().await;
        r
    };
    // The service closing the connection ends the session, even if stdin stays open.
    tokio::pin!(upstream);
    let result = tokio::select! {
        r = downstream => r.map(|_| ()),
        r = &mut upstream => match r {
            Ok(_) => tokio::io::copy(&mut from_sock, &mut output).await.map(|_| ()),
            Err(e) => Err(e),
        },
    };
    drop(stdio);
    match result {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("mcpvisor: connection to {} failed: {e}", path.display());
            exit::FAILURE
        }
    }
}
