//! The Streamable HTTP front (`serve --http ADDR`): remote and concurrent MCP clients reach the
//! daemon's supervised stdio servers at `http://ADDR/mcp/NAME` (and at `/mcp` when the daemon
//! has a single server). `/healthz`, `/readyz` and `/metrics` are served on the same listener.
//!
//! Every request first passes the checks of [`checks`] (Host, Origin, protocol version). A
//! handshake-era client (`initialize`) gets a [`session`]: a client of the server like a `connect`
//! connection, whose messages are routed to the right HTTP stream ([`routes`], [`sse`]);
//! [`handshake`] has the POST, GET and DELETE handlers. A request of the stateless era
//! (2026-07-28) is a client of its own of the server's stateless process ([`stateless`]).

pub mod checks;
mod handshake;
mod limits;
mod page;
mod routes;
pub mod session;
mod sse;
mod stateless;
mod streams;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::control::server::ControlTarget;
use crate::port::any::AnyInput;
use crate::port::ClientPort;
use crate::protocol::errors::OwnError;
use checks::Allow;
use limits::Limits;
use session::Sessions;

/// The body of every response of the front.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a request's headers may take.
const MAX_HEADERS: usize = 64 * 1024;

/// The front's settings.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    pub addr: SocketAddr,
    pub allow: Allow,
    /// Largest request body (413 beyond).
    pub max_body: usize,
    /// A session without requests or open streams for this long is ended.
    pub session_idle: Duration,
    /// Bearer tokens a request must carry one of (none: no token needed).
    pub tokens: Vec<String>,
    /// Tokens that may also restart and stop servers from the status page's API (none: it is
    /// read-only).
    pub admin_tokens: Vec<String>,
    /// Open sessions and open event streams per server.
    pub max_sessions: usize,
    pub max_streams: usize,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The replica's name, which the session ids it mints start with.
    pub replica: Option<String>,
}

/// Why a client could not join a server.
pub enum AttachError {
    /// No server by that name (or, for `/mcp`, the daemon has more than one).
    Unknown,
    Refused(OwnError),
}

/// The daemon's servers, as the front sees them.
pub trait Backends: ControlTarget {
    /// One server, asked as its control socket would be (the status page's API).
    type Server: ControlTarget;

    /// Every server with its name, by name.
    fn servers(&self) -> Vec<(String, Self::Server)>;

    /// Connects a new client to server `name` (`None`: the daemon's only server) and returns the
    /// server's name.
    fn attach(&self, name: Option<&str>, port: ClientPort<AnyInput>) -> Result<String, AttachError>;

    /// Connects one stateless-era request, as a client of its own, to the server's process for
    /// stateless requests.
    fn attach_stateless(&self, name: Option<&str>, port: ClientPort<AnyInput>) -> Result<String, AttachError>;
}

/// The running front; stops listening when dropped (its sessions end with it).
pub struct Front {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub addr: SocketAddr,
    closing: Arc<AtomicBool>,
}

impl Drop for Front {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What every connection's handler shares.
struct Shared<T> {
    target: T,
    config: FrontConfig,
    /// The bound address, as a `Host` header would name it.
    bound: String,
    sessions: Sessions,
    limits: Arc<Limits>,
    /// The daemon is draining: new requests get 503.
    closing: Arc<AtomicBool>,
}

impl Front {
    pub async fn bind<T: Backends>(config: FrontConfig, target: T) -> std::io::Result<Front> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let closing = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            target,
            bound: addr.to_string(),
            limits: Arc::new(Limits::new(config.max_sessions, config.max_streams)),
            config,
            sessions: Sessions::default(),
            closing: closing.clone(),
        });
        let expiry = tokio::spawn(expire_sessions(shared.clone()));
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("HTTP front: accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, shared).await,
                        Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(stream, shared).await,
                            Ok(Err(e)) => tracing::debug!("HTTP front: TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("HTTP front: TLS handshake timed out"),
                        },
                    }
                });
            }
        });
        Ok(Front { tasks: vec![accept, expiry], addr, closing })
    }

    /// The daemon is draining: requests in flight finish, new ones get 503 with Retry-After.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// Serves one connection (plain or TLS) until it closes.
async fn serve_connection<T: Backends, I>(io: I, shared: Arc<Shared<T>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(&shared, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADERS)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!("HTTP front connection: {e}");
    }
}

async fn expire_sessions<T>(shared: Arc<Shared<T>>) {
    let every = (shared.config.session_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let ended = shared.sessions.expire(tokio::time::Instant::now(), shared.config.session_idle);
        if ended > 0 {
            tracing::info!(ended, "HTTP sessions ended after session-idle-timeout");
        }
    }
}

async fn route<T: Backends>(shared: &Shared<T>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let server = match path.as_str() {
        "/metrics" | "/healthz" | "/readyz" => {
            return checks(shared, &req)
                .unwrap_or(crate::http::observe(req.method(), &path, &shared.target).await.map(|b| b.boxed_unsync()));
        }
        "/mcp" => None,
        p if page::is_page_path(p) => {
            let need = page::need(req.method(), p);
            if let Some(refused) = checks(shared, &req).or_else(|| authorize(shared, &req, need)) {
                return refused;
            }
            return page::route(shared, req).await;
        }
        p => match server_in_path(p) {
            Some(name) => Some(name.to_owned()),
            None => return plain(StatusCode::NOT_FOUND, "MCP endpoints are at /mcp/NAME\n"),
        },
    };
    if let Some(refused) = checks(shared, &req).or_else(|| authorize(shared, &req, page::Need::Read)) {
        return refused;
    }
    if shared.closing.load(Ordering::Relaxed) {
        let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, "mcpvisor is shutting down; retry shortly\n");
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    }
    match *req.method() {
        Method::POST => handshake::post(shared, server.as_deref(), req).await,
        Method::GET => handshake::get(shared, server.as_deref(), &req),
        Method::DELETE => handshake::delete(shared, server.as_deref(), &req),
        _ => {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE\n");
            resp.headers_mut()
                .insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, POST, DELETE"));
            resp
        }
    }
}

/// The server a path names: `/mcp/NAME`, or `/NAME/mcp` for tools that take a base URL and
/// append `/mcp` to it (the MCP Inspector does).
fn server_in_path(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/mcp/").or_else(|| path.strip_prefix('/')?.strip_suffix("/mcp"))?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// The bearer token a request needs (`need`); a refusal is the response. Tokens are compared in
/// constant time and never logged.
fn authorize<T>(shared: &Shared<T>, req: &Request<Incoming>, need: page::Need) -> Option<Response<Body>> {
    let authorization = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let config = &shared.config;
    let admin = checks::check_token(&config.admin_tokens, authorization);
    let allowed = match need {
        page::Need::Nothing => true,
        page::Need::Read => config.tokens.is_empty() || admin || checks::check_token(&config.tokens, authorization),
        page::Need::Admin if config.admin_tokens.is_empty() => {
            let why = "read-only: start the daemon with --http-admin-token-file to allow restart and stop";
            return Some(page::error(StatusCode::FORBIDDEN, why));
        }
        page::Need::Admin => admin,
    };
    if allowed {
        return None;
    }
    tracing::warn!("HTTP front: a request without a valid bearer token was refused");
    let mut resp = plain(StatusCode::UNAUTHORIZED, "a bearer token is required (Authorization: Bearer TOKEN)\n");
    resp.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mcpvisor\""));
    Some(resp)
}

/// The Host and Origin checks; a refusal is the response.
fn checks<T>(shared: &Shared<T>, req: &Request<Incoming>) -> Option<Response<Body>> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let allow = &shared.config.allow;
    let result = allow
        .check_host(header(hyper::header::HOST), &shared.bound)
        .and_then(|()| allow.check_origin(header(hyper::header::ORIGIN)));
    match result {
        Ok(()) => None,
        Err(refusal) => {
            let message = refusal.message();
            tracing::warn!("HTTP front: request refused: {message}");
            Some(plain(StatusCode::FORBIDDEN, &format!("{message}\n")))
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_owned())).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_is_named_in_either_path() {
        assert_eq!(super::server_in_path("/mcp/time"), Some("time"));
        assert_eq!(super::server_in_path("/time/mcp"), Some("time"));
        for path in ["/mcp/", "/mcp/a/b", "/a/b/mcp", "//mcp", "/time", "/"] {
            assert_eq!(super::server_in_path(path), None, "{path}");
        }
    }
}
