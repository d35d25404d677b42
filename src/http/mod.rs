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

use crate::instance::{Command, InstanceHandle, Reply};
use crate::observe::status::State;

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
    pub async fn bind(addr: SocketAddr, instance: InstanceHandle) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let instance = instance.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, instance.clone()));
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

async fn handle(req: Request<Incoming>, instance: InstanceHandle) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into()));
    }
    let unavailable = || text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "mcpvisor is not answering\n".into());
    let resp = match req.uri().path() {
        "/metrics" => match instance.call(Command::Metrics).await {
            Ok(Reply::Metrics(m)) => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", m),
            _ => unavailable(),
        },
        "/healthz" => match instance.call(Command::Health).await {
            Ok(_) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            Err(_) => unavailable(),
        },
        "/readyz" => match instance.call(Command::Health).await {
            Ok(Reply::Health(State::Ready)) => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Ok(Reply::Health(state)) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{}\n", state.as_str())),
            _ => unavailable(),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "try /metrics, /healthz or /readyz\n".into()),
    };
    Ok(resp)
}
