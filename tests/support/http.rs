//! A minimal HTTP/1.1 client for the front's protocol tests: one request per connection
//! (`Connection: close`), bodies read whole (content-length or chunked), and event streams read
//! event by event.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use super::TIMEOUT;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response whose body is read as it comes.
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    buffer: Vec<u8>,
    ended: bool,
}

fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).expect("connect to the front");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write the request");
    stream.write_all(body.as_bytes()).expect("write the body");
    BufReader::new(stream)
}

/// Sends a request and reads the status line and headers.
pub fn open(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Streaming {
    let mut reader = send(addr, method, path, headers, body);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    Streaming { status, headers, reader, chunked, buffer: Vec::new(), ended: false }
}

/// Sends a request and reads the whole response.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = open(addr, method, path, headers, body);
    while s.fill() {}
    Reply { status: s.status, headers: s.headers, body: s.buffer }
}

/// POSTs a request and returns its response message, whether it comes as JSON or as the last
/// event of a stream (with the messages that came before it).
pub fn rpc(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (Value, Vec<Value>) {
    let mut s = open(addr, "POST", path, headers, body);
    if s.header("content-type") != Some("text/event-stream") {
        while s.fill() {}
        return (serde_json::from_slice(&s.buffer).unwrap_or(Value::Null), Vec::new());
    }
    let mut before = Vec::new();
    while let Some(event) = s.next_event() {
        if event.get("id").is_some() && (event.get("result").is_some() || event.get("error").is_some()) {
            return (event, before);
        }
        before.push(event);
    }
    (Value::Null, before)
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Reads more of the body into the buffer; false at its end.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if !self.chunked {
            let mut rest = Vec::new();
            let _ = self.reader.read_to_end(&mut rest);
            self.buffer.extend(rest);
            self.ended = true;
            return false;
        }
        let mut size = String::new();
        if self.reader.read_line(&mut size).unwrap_or(0) == 0 {
            self.ended = true;
            return false;
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            self.ended = true;
            return false;
        }
        let mut chunk = vec![0; n + 2];
        self.reader.read_exact(&mut chunk).expect("a whole chunk");
        self.buffer.extend_from_slice(&chunk[..n]);
        true
    }

    /// The next event's data as JSON (comments skipped); `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<Value> {
        self.next_event_with_id().map(|(_, data)| data)
    }

    /// The next event's id and data (events without data, such as priming events, skipped).
    pub fn next_event_with_id(&mut self) -> Option<(u64, Value)> {
        loop {
            let event = self.next_raw_event()?;
            let data = event.field("data:");
            if data.is_empty() {
                continue;
            }
            return serde_json::from_str(&data).ok().map(|v| (event.id(), v));
        }
    }

    /// The next event as it came (comments skipped); `None` at the end of the stream.
    pub fn next_raw_event(&mut self) -> Option<RawEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event).into_owned();
                if text.lines().all(|l| l.starts_with(':')) {
                    continue;
                }
                return Some(RawEvent(text));
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Stops waiting after `timeout` (for streams that should stay quiet).
    pub fn set_timeout(&mut self, timeout: Duration) {
        let _ = self.reader.get_ref().set_read_timeout(Some(timeout));
    }
}

/// One server-sent event, its fields as text.
#[derive(Debug)]
pub struct RawEvent(pub String);

impl RawEvent {
    /// The values of field `name` (`"data:"`), joined.
    pub fn field(&self, name: &str) -> String {
        self.0.lines().filter_map(|l| l.strip_prefix(name)).map(str::trim_start).collect()
    }

    pub fn id(&self) -> u64 {
        self.field("id:").parse().unwrap_or(0)
    }
}
