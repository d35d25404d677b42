//! The handshake era over HTTP: POST of one message (an `initialize` starts a session; later
//! ones carry `Mcp-Session-Id`), GET for the session's stream of unrelated messages, DELETE to
//! end it. A POSTed notification or response gets 202; a request gets its response as JSON, or
//! an SSE stream when something related comes first (progress, a log message, a request of the
//! server's) and the client accepts one.
//!
//! Status codes: 400 for a missing session id, an unreadable body or a batch; 404 for an
//! unknown or ended session (the client then starts a new one) or server; 406 for a GET that
//! does not accept an event stream; 413 for a body over the limit; 503 when the server cannot
//! take a new client (the body says why, as a JSON-RPC error).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::checks::{self, STATELESS_VERSION};
use super::limits::StreamSlot;
use super::routes::request_token;
use super::session::{Session, StreamParts};
use super::sse::Sse;
use super::stateless;
use super::{AttachError, Backends, Body, Shared};
use crate::port::any::AnyInput;
use crate::port::{memory, ClientPort};
use crate::protocol::jsonrpc::{self, Id, Kind, Message};
use crate::protocol::method::MethodClass;

// Header names made once: looking a header up by a string parses and hashes the name each time.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");
const LAST_EVENT_HEADER: HeaderName = HeaderName::from_static("last-event-id");

/// A response carrying a JSON-RPC error (`id`: the request's, if known).
pub(super) fn rpc_error(status: StatusCode, id: Option<&Id>, code: i64, message: &str) -> Response<Body> {
    json(status, jsonrpc::error_response(id, code, message, None))
}

pub(super) fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn accepts_sse<B>(req: &Request<B>) -> bool {
    req.headers().get_all(ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
}

fn header<B>(req: &Request<B>, name: HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The session a request names (`id`: its `Mcp-Session-Id`), if it exists and belongs to this
/// endpoint's server.
fn find_session<T: Backends>(
    shared: &Shared<T>,
    server: Option<&str>,
    id: Option<&str>,
) -> Result<Arc<Session>, Box<Response<Body>>> {
    let Some(id) = id else { return Err(Box::new(need_session())) };
    match shared.sessions.get(id) {
        Some(session) if server.map_or(true, |s| s == session.server) => Ok(session),
        _ => Err(Box::new(ended(None))),
    }
}

/// 400: a request other than `initialize` without a session.
fn need_session() -> Response<Body> {
    rpc_error(StatusCode::BAD_REQUEST, None, -32600, "Mcp-Session-Id is required: start with initialize")
}

/// 404: the session does not exist (any more); the client starts a new one.
fn ended(id: Option<&Id>) -> Response<Body> {
    rpc_error(StatusCode::NOT_FOUND, id, -32001, "no such session (it ended): initialize again")
}

pub async fn post<T: Backends>(shared: &Shared<T>, server: Option<&str>, req: Request<Incoming>) -> Response<Body> {
    let version = match checks::check_version(header(&req, VERSION_HEADER)) {
        Ok(version) => version,
        Err(refusal) => return rpc_error(StatusCode::BAD_REQUEST, None, -32022, &refusal.message()),
    };
    let prime = checks::primes(version);
    let mut stateless = version == Some(STATELESS_VERSION);
    let sse = accepts_sse(&req);
    let session = header(&req, SESSION_HEADER).map(str::to_owned);
    let routing = (header(&req, METHOD_HEADER).map(str::to_owned), header(&req, NAME_HEADER).map(str::to_owned));
    let limit = shared.config.max_body;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            let message = format!("the request body is over {limit} bytes (max-message-size)");
            return rpc_error(StatusCode::PAYLOAD_TOO_LARGE, None, -32600, &message);
        }
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, None, -32600, &format!("cannot read the body: {e}")),
    };
    // The progress token of a request, read here once for the session's routing.
    let mut token = None;
    let kind = match jsonrpc::parse(&body) {
        Ok(Message::Single(env)) => {
            if matches!(env.kind, Kind::Request { .. }) {
                token = request_token(env.params);
            }
            // Only a message outside any session can be of the stateless era (its `_meta` says
            // so when the header does not): a session's messages are not read twice for it.
            if session.is_none() && !stateless {
                stateless = jsonrpc::meta_protocol_version(env.params).is_some_and(|v| v == STATELESS_VERSION);
            }
            env.kind
        }
        Ok(Message::Batch(_)) => {
            return rpc_error(StatusCode::BAD_REQUEST, None, -32600, "send one message per POST (no batches)")
        }
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, None, -32700, &format!("parse error: {e}")),
    };
    if let Kind::Invalid { id, reason } = &kind {
        return rpc_error(StatusCode::BAD_REQUEST, id.as_ref(), -32600, reason);
    }
    let session = match session {
        Some(_) => match find_session(shared, server, session.as_deref()) {
            Ok(s) => s,
            Err(resp) => return *resp,
        },
        None => match &kind {
            Kind::Request { id, class: MethodClass::Initialize, .. } => match start_session(shared, server, id) {
                Ok(s) => s,
                Err(resp) => return *resp,
            },
            Kind::Request { .. } if stateless => {
                let headers = stateless::Headers { method: routing.0.as_deref(), name: routing.1.as_deref() };
                return stateless::post(shared, server, headers, body, sse).await;
            }
            _ => return need_session(),
        },
    };
    let is_initialize = matches!(&kind, Kind::Request { class: MethodClass::Initialize, .. });
    let mut resp = match kind {
        Kind::Request { id, .. } => match session.request(body, id.clone(), token) {
            Ok(parts) => {
                let slot = if sse { shared.limits.stream_slot(&session.server) } else { None };
                answer(&session, parts, slot, &id, prime).await
            }
            Err(_) => ended(Some(&id)),
        },
        _ => match session.send(body) {
            Ok(()) => json(StatusCode::ACCEPTED, Bytes::new()),
            Err(_) => ended(None),
        },
    };
    if is_initialize {
        if let Ok(value) = HeaderValue::from_str(&session.id) {
            resp.headers_mut().insert(SESSION_HEADER, value);
        }
    }
    resp
}

/// Joins the endpoint's server as a new client (`request`: the `initialize` that asks).
fn start_session<T: Backends>(
    shared: &Shared<T>,
    server: Option<&str>,
    request: &Id,
) -> Result<Arc<Session>, Box<Response<Body>>> {
    if shared.sessions.count(server) >= shared.limits.max_sessions {
        return Err(Box::new(over_limit(Some(request), "sessions", shared.limits.max_sessions)));
    }
    let (port, client) = memory::pair(shared.config.max_body);
    let port = ClientPort { input: AnyInput::Memory(port.input), output: port.output, writer: port.writer };
    match shared.target.attach(server, port) {
        Ok(name) => {
            let replica = shared.config.replica.as_deref();
            let session = shared.sessions.insert(Session::start(name.clone(), replica, client.tx, client.rx));
            tracing::info!(server = name, session = session.id, "HTTP session started");
            Ok(session)
        }
        Err(AttachError::Unknown) => {
            let text = match server {
                Some(name) => format!("no server named `{name}`\n"),
                None => "this daemon serves several servers: use /mcp/NAME\n".to_owned(),
            };
            Err(Box::new(super::plain(StatusCode::NOT_FOUND, &text)))
        }
        Err(AttachError::Refused(error)) => {
            Err(Box::new(json(StatusCode::SERVICE_UNAVAILABLE, error.response(Some(request)))))
        }
    }
}

/// The answer to a POSTed request: JSON when the response comes first, else an event stream
/// (`prime`: starting with a priming event). Without a stream slot, because the server has
/// `max-streams` open, the answer is JSON.
async fn answer(
    session: &Session,
    mut parts: StreamParts,
    slot: Option<StreamSlot>,
    id: &Id,
    prime: bool,
) -> Response<Body> {
    loop {
        let Some(first) = parts.rx.recv().await else { return ended(Some(id)) };
        if first.last {
            return json(StatusCode::OK, first.line);
        }
        if let Some(slot) = slot {
            let priming = prime.then(|| session.prime(&parts));
            let leading = priming.into_iter().chain(Some(first));
            return event_stream(Sse::new(leading, parts.rx, Box::new((parts.guard, slot))));
        }
        // A client that takes JSON only: what comes before the response goes to its GET stream.
        session.divert(first.line);
    }
}

/// 503 with a JSON-RPC error naming the limit the server is at.
pub(super) fn over_limit(id: Option<&Id>, what: &str, limit: usize) -> Response<Body> {
    let message = format!("the server has {limit} open {what}, its limit (max-{what}); retry later");
    let mut resp = rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, -32000, &message);
    resp.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

pub(super) fn event_stream(body: Sse) -> Response<Body> {
    let mut resp = Response::new(body.boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// The session a GET or DELETE is for (the stateless era has none: 405).
fn session_of<T: Backends>(
    shared: &Shared<T>,
    server: Option<&str>,
    req: &Request<Incoming>,
) -> Result<Arc<Session>, Box<Response<Body>>> {
    if header(req, VERSION_HEADER) == Some(STATELESS_VERSION) {
        let text = "the stateless era has no sessions: POST only\n";
        return Err(Box::new(super::plain(StatusCode::METHOD_NOT_ALLOWED, text)));
    }
    find_session(shared, server, header(req, SESSION_HEADER))
}

pub fn get<T: Backends>(shared: &Shared<T>, server: Option<&str>, req: &Request<Incoming>) -> Response<Body> {
    let session = match session_of(shared, server, req) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    if !accepts_sse(req) {
        return super::plain(StatusCode::NOT_ACCEPTABLE, "a GET stream needs Accept: text/event-stream\n");
    }
    let Some(slot) = shared.limits.stream_slot(&session.server) else {
        return over_limit(None, "streams", shared.limits.max_streams);
    };
    let last_event = header(req, LAST_EVENT_HEADER).and_then(|id| id.trim().parse().ok());
    match session.open_stream(last_event) {
        Ok(parts) => {
            let fresh = !parts.resumed && checks::primes(header(req, VERSION_HEADER));
            let priming = fresh.then(|| session.prime(&parts));
            event_stream(Sse::new(priming, parts.rx, Box::new((parts.guard, slot))))
        }
        Err(_) => ended(None),
    }
}

pub fn delete<T: Backends>(shared: &Shared<T>, server: Option<&str>, req: &Request<Incoming>) -> Response<Body> {
    let session = match session_of(shared, server, req) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    if let Some(session) = shared.sessions.remove(&session.id) {
        session.close();
        tracing::info!(server = session.server, session = session.id, "HTTP session ended by the client");
    }
    json(StatusCode::NO_CONTENT, Bytes::new())
}
