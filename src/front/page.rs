//! The status page on the front's listener: `/` (and `/status`) is one self-contained HTML page
//! (`status.html`: no framework, no external asset), which polls `/api/status`, the documented
//! `status --json` of every server as a JSON array. `/api/servers/NAME/logs` gives a server's last
//! stderr lines on demand; `POST /api/servers/NAME/restart` and `…/stop` exist only when the
//! daemon has admin tokens (`--http-admin-token-file`), and the page shows their buttons only then.
//!
//! The page itself holds no data, so it is served to anyone who passes the Host and Origin
//! checks; the API asks for a bearer token like the MCP endpoints (an admin token will do), and
//! the page asks the user for one when it gets 401. Status never carries the servers'
//! environment values, only their names.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{handshake::json, Backends, Body, Shared};
use crate::control::protocol::Command;
use crate::control::server::ControlTarget;

const PAGE: &str = include_str!("status.html");

/// Whether `path` is the page's or its API's.
pub fn is_page_path(path: &str) -> bool {
    matches!(path, "/" | "/status") || path.starts_with("/api/")
}

/// What a request needs beyond the Host and Origin checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// A token of `--http-token-file` or of the admin file (when tokens are configured).
    Read,
    /// A token of `--http-admin-token-file`.
    Admin,
}

pub fn need(method: &Method, path: &str) -> Need {
    match (method, path) {
        (_, "/" | "/status") => Need::Nothing,
        (&Method::POST, _) => Need::Admin,
        _ => Need::Read,
    }
}

pub async fn route<T: Backends>(shared: &Shared<T>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/" || path == "/status" {
        if method != Method::GET && method != Method::HEAD {
            return error(StatusCode::METHOD_NOT_ALLOWED, "the status page is GET only; MCP is at /mcp/NAME");
        }
        return page(!shared.config.admin_tokens.is_empty());
    }
    if path == "/api/status" {
        if method != Method::GET {
            return error(StatusCode::METHOD_NOT_ALLOWED, "GET /api/status");
        }
        let mut statuses = Vec::new();
        for (_, server) in shared.target.servers() {
            if let Some(status) = server.answer(Command::Status).await.status {
                statuses.push(*status);
            }
        }
        return json(StatusCode::OK, Bytes::from(serde_json::to_vec(&statuses).unwrap_or_default()));
    }
    let Some((name, action)) = path.strip_prefix("/api/servers/").and_then(|rest| rest.split_once('/')) else {
        return error(StatusCode::NOT_FOUND, "the API has /api/status and /api/servers/NAME/{logs,restart,stop}");
    };
    let Some(server) = shared.target.servers().into_iter().find(|(n, _)| n == name).map(|(_, s)| s) else {
        return error(StatusCode::NOT_FOUND, &format!("no server named `{name}`"));
    };
    let command = match (&method, action) {
        (&Method::GET, "logs") => Command::Logs { lines: lines_param(req.uri().query()).unwrap_or(20).min(1000) },
        (&Method::POST, "restart") => Command::Restart,
        (&Method::POST, "stop") => Command::Stop,
        _ => return error(StatusCode::NOT_FOUND, "GET logs, POST restart or POST stop"),
    };
    if matches!(command, Command::Restart | Command::Stop) {
        tracing::info!(server = name, action, "HTTP front: {action} asked on the status page's API");
    }
    let answer = server.answer(command).await;
    let status = if answer.ok { StatusCode::OK } else { StatusCode::CONFLICT };
    let body = json!({ "ok": answer.ok, "message": answer.message, "error": answer.error, "lines": answer.lines });
    json(status, Bytes::from(body.to_string()))
}

/// `lines=N` of a query string.
fn lines_param(query: Option<&str>) -> Option<usize> {
    query?.split('&').find_map(|kv| kv.strip_prefix("lines=")).and_then(|n| n.parse().ok())
}

fn page(admin: bool) -> Response<Body> {
    let html = PAGE.replace("{{ADMIN}}", if admin { "1" } else { "0" });
    let mut resp = Response::new(Full::new(Bytes::from(html)).boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only what mcpvisor serves runs on the page: its own inline script and style, no framing.
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// A JSON error (`{"ok": false, "error": …}`).
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, Bytes::from(json!({ "ok": false, "error": message }).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_a_token_actions_an_admin_one_the_page_nothing() {
        assert_eq!(need(&Method::GET, "/"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/status"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/api/status"), Need::Read);
        assert_eq!(need(&Method::GET, "/api/servers/a/logs"), Need::Read);
        assert_eq!(need(&Method::POST, "/api/servers/a/restart"), Need::Admin);
        assert_eq!(lines_param(Some("x=1&lines=7")), Some(7));
        assert_eq!(lines_param(None), None);
    }

    #[test]
    fn the_page_is_self_contained() {
        for outside in ["<script src", "<link", "@import", "url(", "cdn"] {
            assert!(!PAGE.contains(outside), "the page loads nothing from elsewhere: {outside}");
        }
        assert!(!PAGE.contains("innerHTML"), "data is written as text, never as HTML");
        assert!(page(false).headers().get("content-security-policy").is_some());
    }
}
