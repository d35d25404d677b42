//! The optional HTTP endpoint (`--metrics-addr`), served with hyper:
//! - `GET /metrics`: Prometheus text exposition (as `mcpvisor metrics`);
//! - `GET /healthz`: 200 while the mcpvisor process is alive and its loop answers;
//! - `GET /readyz`: 200 when the server is Ready, 503 otherwise (body: the state).
//!
//! Requests go to the instance through its handle, as control-socket requests do, so the
//! instance's loop stays the only owner of what is reported. A bare port binds to 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::control::protocol::Command;
use crate::control::server::ControlTarget;

/// How long a connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The running endpoint; stops serving when dropped.
pub struct HttpServer {
    task: tokio::task::JoinHandle<()>,
    pub addr: SocketAddr,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// Serves `target` (an instance, or a daemon's servers) on `addr`.
    pub async fn bind<T: ControlTarget>(addr: SocketAddr, target: T) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let target = target.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, target.clone()));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                        tracing::debug!("metrics connection closed: {e}");
                    }
                });
            }
        });
        Ok(HttpServer { task, addr })
    }
}

fn text(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp
}

async fn handle<T: ControlTarget>(req: Request<Incoming>, target: T) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(observe(req.method(), req.uri().path(), &target).await)
}

/// `/metrics`, `/healthz` and `/readyz` (also served by the HTTP front, on its listener).
pub async fn observe<T: ControlTarget>(method: &Method, path: &str, target: &T) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into());
    }
    let unavailable = || text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "mcpvisor is not answering\n".into());
    match path {
        "/metrics" => match target.answer(Command::Metrics).await.metrics {
            Some(m) => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", m),
            None => unavailable(),
        },
        "/healthz" => match target.answer(Command::Status).await.ok {
            true => text(StatusCode::OK, PLAIN, "ok\n".into()),
            false => unavailable(),
        },
        "/readyz" => match target.answer(Command::Status).await.status {
            Some(s) if s.is_ready() => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Some(s) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{}\n", s.state.as_str())),
            None => unavailable(),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "try /metrics, /healthz or /readyz\n".into()),
    }
}
