//! The optional HTTP endpoint (`--metrics-addr`), served with hyper:
//! - `GET /metrics`: Prometheus text exposition (as `mcpvisor metrics`);
//! - `GET /healthz`: 200 while the mcpvisor process is alive and its loop answers;
//! - `GET /readyz`: 200 when the server is Ready, 503 otherwise (body: the state).
//!
//! Requests go to the supervisor loop over the same channel as control-socket requests, so the
//! loop stays the only owner of what is reported. A bare port binds to 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::control::{Command, ControlCall, IO_TIMEOUT};

/// Parses `--metrics-addr`: `HOST:PORT`, `[V6]:PORT`, or a bare `PORT` (loopback).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| format!("`{s}` is not an address (write 9464, 127.0.0.1:9464 or [::1]:9464)"))
}

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
    pub async fn bind(addr: SocketAddr, calls: mpsc::Sender<ControlCall>) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let calls = calls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, calls.clone()));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = tokio::time::timeout(IO_TIMEOUT * 6, conn).await {
                        tracing::debug!("metrics connection closed: {e}");
                    }
                });
            }
        });
        Ok(HttpServer { task, addr })
    }
}

async fn ask(calls: &mpsc::Sender<ControlCall>, command: Command) -> Option<crate::control::Response> {
    let (reply, rx) = oneshot::channel();
    calls.send(ControlCall { command, reply }).await.ok()?;
    tokio::time::timeout(IO_TIMEOUT, rx).await.ok()?.ok()
}

fn text(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp
}

async fn handle(req: Request<Incoming>, calls: mpsc::Sender<ControlCall>) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into()));
    }
    let unavailable = || text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "mcpvisor is not answering\n".into());
    let resp = match req.uri().path() {
        "/metrics" => match ask(&calls, Command::Metrics).await.and_then(|r| r.metrics) {
            Some(m) => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", m),
            None => unavailable(),
        },
        "/healthz" => match ask(&calls, Command::Status).await {
            Some(_) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            None => unavailable(),
        },
        "/readyz" => match ask(&calls, Command::Status).await.and_then(|r| r.status) {
            Some(s) if s.is_ready() => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Some(s) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{}\n", s.state.as_str())),
            None => unavailable(),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "try /metrics, /healthz or /readyz\n".into()),
    };
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9464"), Ok(SocketAddr::from(([127, 0, 0, 1], 9464))));
        assert_eq!(parse_addr("0.0.0.0:80"), Ok(SocketAddr::from(([0, 0, 0, 0], 80))));
        assert!(parse_addr("[::1]:9").is_ok());
        assert!(parse_addr("localhost").is_err());
    }
}
