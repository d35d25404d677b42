//! A hand-written HTTP/1.1 client for the MCP endpoint of a Streamable HTTP front (`/mcp`),
//! enough for `benches/http.rs`: keep-alive connections, a request in one write, answers with a
//! Content-Length or chunked body, JSON or an event stream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::common::{tools_call, INITIALIZE, INITIALIZED, PATIENCE};

/// A keep-alive HTTP/1.1 connection to a front's `/mcp`, written by hand: a request is one
/// write, an answer is a status line, headers, and a Content-Length or chunked body.
pub struct Conn {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    line: String,
}

/// An answer: its status, session header, whether it is an event stream, and its body.
pub struct Reply {
    pub status: u16,
    pub session: Option<String>,
    pub event_stream: bool,
    pub body: Vec<u8>,
}

impl Reply {
    /// The JSON-RPC message it carries: the body, or the last `data:` of an event stream.
    pub fn message(&self) -> &[u8] {
        if !self.event_stream {
            return &self.body;
        }
        let data = self.body.split(|b| *b == b'\n').rev().find_map(|l| l.strip_prefix(b"data:"));
        data.unwrap_or_default().trim_ascii()
    }

    pub fn text(&self) -> String {
        format!("status {}: {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        Ok(Conn { addr, reader: BufReader::with_capacity(16 << 10, stream), request: Vec::new(), line: String::new() })
    }

    fn write_request(&mut self, method: &str, accept: &str, session: Option<&str>, body: &str) -> io::Result<()> {
        let r = &mut self.request;
        r.clear();
        write!(r, "{method} /mcp HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n", self.addr)?;
        r.extend_from_slice(b"MCP-Protocol-Version: 2025-06-18\r\n");
        if let Some(session) = session {
            write!(r, "Mcp-Session-Id: {session}\r\n")?;
        }
        if method != "GET" {
            write!(r, "Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())?;
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(body.as_bytes());
        self.reader.get_mut().write_all(r)
    }

    /// POSTs `body`.
    pub fn post(&mut self, session: Option<&str>, body: &str) -> io::Result<Reply> {
        self.exchange("POST", session, body)
    }

    /// DELETE: ends `session`; the status.
    pub fn delete(&mut self, session: &str) -> io::Result<u16> {
        self.exchange("DELETE", Some(session), "").map(|reply| reply.status)
    }

    /// A request and its answer. A connection the server closed while idle (node's keep-alive
    /// timeout is 5 s, mcpvisor's 30 s) is opened again once.
    fn exchange(&mut self, method: &str, session: Option<&str>, body: &str) -> io::Result<Reply> {
        let accept = "application/json, text/event-stream";
        let sent = self.write_request(method, accept, session, body);
        match sent.and_then(|()| self.read_reply(true)) {
            Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe) => {
                *self = Conn::open(self.addr)?;
                self.write_request(method, accept, session, body)?;
                self.read_reply(true)
            }
            other => other,
        }
    }

    /// `initialize`, then `notifications/initialized`: a new session's id.
    pub fn handshake(&mut self) -> Result<String, String> {
        let reply = self.post(None, INITIALIZE).map_err(|e| format!("initialize: {e}"))?;
        let session = match (&reply.session, reply.status) {
            (Some(id), 200) if find(reply.message(), b"\"result\"") => id.clone(),
            _ => return Err(format!("initialize: {}", reply.text())),
        };
        let reply = self.post(Some(&session), INITIALIZED).map_err(|e| format!("initialized: {e}"))?;
        if reply.status != 202 {
            return Err(format!("notifications/initialized: {}", reply.text()));
        }
        Ok(session)
    }

    /// One `tools/call` on `session`, checked; whether the answer came as an event stream.
    pub fn call(&mut self, session: &str, id: u64) -> Result<bool, String> {
        let reply = self.post(Some(session), &tools_call(id)).map_err(|e| format!("request {id}: {e}"))?;
        let message = reply.message();
        let id_field = format!("\"id\":{id}");
        let answers = memchr::memmem::find(message, id_field.as_bytes())
            .is_some_and(|at| matches!(message.get(at + id_field.len()), Some(b',' | b'}')));
        if reply.status != 200 || !answers || !find(message, b"\"result\"") {
            return Err(format!("request {id}: {}", reply.text()));
        }
        Ok(reply.event_stream)
    }

    /// GET with `session`: the session's event stream; its head only (the body stays open).
    pub fn open_stream(&mut self, session: &str) -> io::Result<Reply> {
        self.write_request("GET", "text/event-stream", Some(session), "")?;
        let head = self.read_reply(false)?;
        if head.status != 200 {
            // An error's body, to say why.
            return self.read_body(head.status, None, false).map(|body| Reply { body, ..head });
        }
        Ok(head)
    }

    /// Whether the server has kept the connection open (nothing to read, no end of file).
    pub fn still_open(&self) -> bool {
        let stream = self.reader.get_ref();
        let _ = stream.set_nonblocking(true);
        let mut byte = [0u8; 1];
        let open = match stream.peek(&mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        let _ = stream.set_nonblocking(false);
        open
    }

    fn read_reply(&mut self, with_body: bool) -> io::Result<Reply> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status = self.line.split(' ').nth(1).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| invalid(format!("status line {:?}", self.line)))?;
        let (mut length, mut chunked, mut event_stream, mut session) = (None, false, false, None);
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                return Err(invalid("closed within the headers".into()));
            }
            let Some((name, value)) = self.line.trim_end().split_once(':') else { break };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-type" => event_stream = value.starts_with("text/event-stream"),
                "mcp-session-id" => session = Some(value.to_owned()),
                _ => {}
            }
        }
        let body = if with_body { self.read_body(status, length, chunked)? } else { Vec::new() };
        Ok(Reply { status, session, event_stream, body })
    }

    fn read_body(&mut self, status: u16, length: Option<usize>, chunked: bool) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        } else if chunked {
            loop {
                self.line.clear();
                self.reader.read_line(&mut self.line)?;
                let size = self.line.trim_end().split(';').next().unwrap_or_default();
                let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk {:?}", self.line)))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while self.reader.read_line(&mut self.line)? > 0 && !self.line.ends_with("\r\n\r\n") {}
                    break;
                }
                let start = body.len();
                body.resize(start + size + 2, 0);
                self.reader.read_exact(&mut body[start..])?;
                body.truncate(start + size);
            }
        } else if !matches!(status, 204 | 304) {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(body)
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}
