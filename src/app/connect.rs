//! `mcpvisor connect SOCKET`: a stdio ↔ Unix socket bridge.
//!
//! Lets an MCP client that only knows stdio commands use a server that runs as a socket-activated
//! systemd service (each connection gets its own supervised server): put
//! `mcpvisor connect /run/user/1000/mcp/everything.sock` in the client's config. Bytes are copied
//! both ways unchanged; when the client closes stdin the socket's write side is shut down, and the
//! bridge exits when the service closes the connection.

use std::path::Path;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::exit;

pub fn run(path: &Path) -> u8 {
    super::runtime::block_on(async {
        let stream = match UnixStream::connect(path).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "mcpvisor: cannot connect to {}: {e} (is the socket unit running? `systemctl --user status` it)",
                    path.display()
                );
                return exit::UNAVAILABLE;
            }
        };
        let (stdio, mut input, mut output) = match crate::port::stdio::open() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mcpvisor: cannot use stdin/stdout: {e}");
                return exit::FAILURE;
            }
        };
        let (mut from_sock, mut to_sock) = stream.into_split();
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
    })
}
