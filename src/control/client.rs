//! The client side of the control protocol, used by `mcpvisor status`, `restart`, `stop`,
//! `logs` and `metrics`: one blocking request and its answer.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use super::protocol::{Command, Request, Response, IO_TIMEOUT, PROTOCOL_VERSION};

/// Sends one command to the socket at `path` and returns the response.
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
