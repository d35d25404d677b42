//! The stateless era over HTTP (2026-07-28): every POST is one request, independent of any
//! other. Each becomes a client of its own of the server's stateless process, through the
//! daemon's hub, which maps its ids and progress tokens (so requests that use the same ids at
//! once never mix) and cancels it at the server when it leaves: a client that closes the response
//! stream before the response is how the stateless era cancels, and the server is sent
//! `notifications/cancelled`. Results (MRTR's `InputRequiredResult` included) pass untouched.
//!
//! Checked first: `Mcp-Method` must name the body's method, and `Mcp-Name` the tool, prompt or
//! resource it is about (400 with -32020 on a mismatch; a missing header is tolerated). The
//! response is JSON, or an event stream when progress or a log message comes first; a
//! `subscriptions/listen` is always a stream, of the notifications it asked for.

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::handshake::{event_stream, json, over_limit, rpc_error};
use super::sse::{Delivery, Sse};
use super::{AttachError, Backends, Body, Shared};
use crate::io::Inbox;
use crate::port::any::AnyInput;
use crate::port::{memory, ClientPort};
use crate::protocol::jsonrpc::{self, Id, Kind, Message};

/// JSON-RPC error code for headers that disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// The request's routing headers.
pub struct Headers<'a> {
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<std::borrow::Cow<'a, str>>,
}

/// The header/body agreement the spec requires of a server that reads the body.
fn check_headers(headers: &Headers<'_>, method: &str, params: Option<&str>) -> Result<(), String> {
    if let Some(h) = headers.method {
        if h != method {
            return Err(format!("Mcp-Method `{h}` does not match the body's method `{method}`"));
        }
    }
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let named: Option<Named<'_>> = params.and_then(|p| serde_json::from_str(p).ok());
    let value = named.and_then(|n| if field == "name" { n.name } else { n.uri });
    match (headers.name, value) {
        (Some(h), Some(v)) if decode_header(h) != v => {
            Err(format!("Mcp-Name `{h}` does not match the body's {field} `{v}`"))
        }
        _ => Ok(()),
    }
}

/// A header value as the spec encodes non-ASCII ones (`=?base64?…?=`), decoded.
fn decode_header(value: &str) -> String {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => base64_decode(encoded).unwrap_or_else(|| value.to_owned()),
        None => value.to_owned(),
    }
}

fn base64_decode(text: &str) -> Option<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// Answers one stateless-era request (`body`, whose id is `id`).
pub async fn post<T: Backends>(
    shared: &Shared<T>,
    server: Option<&str>,
    headers: Headers<'_>,
    body: Bytes,
    sse: bool,
) -> Response<Body> {
    let (id, method, params) = match jsonrpc::parse(&body) {
        Ok(Message::Single(env)) => match env.kind {
            Kind::Request { id, method, .. } => (id, method, env.params.map(|p| p.get().to_owned())),
            _ => return rpc_error(StatusCode::BAD_REQUEST, None, -32600, "the stateless era takes requests only"),
        },
        _ => return rpc_error(StatusCode::BAD_REQUEST, None, -32600, "one JSON-RPC request per POST"),
    };
    if let Err(message) = check_headers(&headers, &method, params.as_deref()) {
        return rpc_error(StatusCode::BAD_REQUEST, Some(&id), HEADER_MISMATCH, &message);
    }
    let (port, client) = memory::pair(shared.config.max_body);
    let port = ClientPort { input: AnyInput::Memory(port.input), output: port.output, writer: port.writer };
    let server_name = match shared.target.attach_stateless(server, port) {
        Ok(name) => name,
        Err(AttachError::Unknown) => return super::plain(StatusCode::NOT_FOUND, "no such server\n"),
        Err(AttachError::Refused(error)) => return json(StatusCode::SERVICE_UNAVAILABLE, error.response(Some(&id))),
    };
    if client.tx.send(body).is_err() {
        return rpc_error(StatusCode::SERVICE_UNAVAILABLE, Some(&id), -32603, "the server is not taking requests");
    }
    let listen = method == "subscriptions/listen";
    let slot = if sse || listen { shared.limits.stream_slot(&server_name) } else { None };
    if listen && slot.is_none() {
        return over_limit(Some(&id), "streams", shared.limits.max_streams);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(forward(client.rx, tx, id.clone(), listen));
    // The port's sending half: dropped with the response stream, it is the client leaving.
    let leaving = client.tx;
    loop {
        let Some(first) = rx.recv().await else {
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, Some(&id), -32603, "the server closed the request");
        };
        if first.last && !listen {
            return json(StatusCode::OK, first.line);
        }
        if let Some(slot) = slot {
            return event_stream(Sse::new(Some(first), rx, Box::new((leaving, slot))));
        }
        // A JSON-only client: what comes before the response has nowhere to go.
        tracing::debug!("a message before the response of a JSON-only stateless request was dropped");
    }
}

/// Passes what the server sends for the request on: progress and log messages, then the
/// response (which ends it); a listen request's notifications. Broadcasts meant for the other
/// clients of the process (list changes) are not this request's.
async fn forward(mut from_server: Inbox, to: mpsc::UnboundedSender<Delivery>, id: Id, listen: bool) {
    // Event ids only number the stream's events: the stateless era has no resumption.
    let mut event = 0;
    while let Some(line) = from_server.recv().await {
        let (last, keep) = match jsonrpc::parse(&line) {
            Ok(Message::Single(env)) => match &env.kind {
                Kind::Response { id: r, .. } => (*r == id, *r == id),
                Kind::Notification { method } => {
                    (false, listen || method == "notifications/progress" || method == "notifications/message")
                }
                _ => (false, false),
            },
            _ => (false, false),
        };
        event += 1;
        if keep && to.send(Delivery { id: event, line, last }).is_err() {
            return;
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_must_agree_with_the_body() {
        let h = |method, name| Headers { method, name };
        assert!(check_headers(&h(Some("tools/list"), None), "tools/list", None).is_ok());
        assert!(check_headers(&h(Some("tools/call"), None), "tools/list", None).is_err());
        let params = Some(r#"{"name":"get_time","arguments":{}}"#);
        assert!(check_headers(&h(Some("tools/call"), Some("get_time")), "tools/call", params).is_ok());
        assert!(check_headers(&h(Some("tools/call"), Some("other")), "tools/call", params).is_err());
        assert!(check_headers(&h(None, None), "tools/call", params).is_ok(), "missing headers are tolerated");
        let uri = Some(r#"{"uri":"file:///ü"}"#);
        let encoded = "=?base64?ZmlsZTovLy/DvA==?=";
        assert!(check_headers(&h(Some("resources/read"), Some(encoded)), "resources/read", uri).is_ok());
    }
}
