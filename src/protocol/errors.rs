//! mcpvisor's own JSON-RPC errors, built in one place from a typed reason, so that each reason
//! always has the same code, wording and `data` fields. Every error carries
//! `data.source = "mcpvisor"` and `data.reason`, which clients can match on (README.md lists
//! them); metrics count errors by the same reason.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use smol_str::SmolStr;

use crate::config::units::format_duration;
use crate::protocol::jsonrpc::{self, Id, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR};

/// An error mcpvisor answers a client request (or an unreadable message) with.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnError {
    /// The line is not JSON (or not UTF-8).
    Parse {
        detail: String,
    },
    /// Valid JSON that is not a valid JSON-RPC message.
    Invalid {
        detail: &'static str,
    },
    EmptyBatch,
    /// A client message over `--max-message-size`.
    TooLarge {
        size: usize,
        limit: usize,
    },
    /// A request id that is already in flight.
    DuplicateId {
        id: Id,
    },
    /// A request that arrived while shutting down, never sent to the server.
    NotDelivered,
    /// Answered at exit, with nothing more specific to say.
    ShuttingDown,
    /// The server was stopped for the shutdown before it answered.
    ServerStopped,
    /// `--on-failure exit`: the instance gives up at the restart limit.
    GaveUp,
    /// The queue held during a restart is full.
    QueueFull {
        limit: usize,
    },
    /// `--request-timeout` passed without an answer.
    Timeout {
        method: SmolStr,
        after: Duration,
    },
    /// The server's answer was over `--max-message-size`.
    ResponseTooLarge {
        method: SmolStr,
        size: usize,
        limit: usize,
    },
    /// The server's answer was not valid JSON-RPC.
    InvalidResponse {
        method: SmolStr,
    },
    /// The server died (or was stopped as broken) with the request in flight.
    Crashed(Box<CrashReport>),
    /// The server is Failed: the restart limit is reached.
    RestartLimit(Box<LimitReport>),
    /// A daemon's server already has `--max-clients` clients.
    TooManyClients {
        server: String,
        limit: usize,
    },
    /// A daemon could not start a server process for a new client.
    StartFailed {
        server: String,
        detail: String,
    },
    /// `mcpvisor connect NAME` found no daemon serving NAME.
    NoDaemon {
        server: String,
    },
}

/// What a crash error says.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashReport {
    /// What happened, as the end of "MCP server …": `crashed (exit code 1)`, `stopped answering (hung)`.
    pub what: String,
    /// The typed cause's key: `exited`, `hung`, `memory`, …
    pub cause: &'static str,
    pub exit: Option<Value>,
    pub stderr: Vec<String>,
    pub restarts_in_window: usize,
    pub generation: u64,
}

/// What the restart-limit error says.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReport {
    pub restarts_in_window: usize,
    pub window: Duration,
    pub max_restarts: u32,
    /// The last failure, described: `exit code 1`, or why the command could not start.
    pub last_failure: String,
    pub last_exit: Option<Value>,
    pub spawn_error: Option<String>,
    pub stderr: Vec<String>,
    pub retry_in: Duration,
}

impl OwnError {
    /// `data.reason`, also the label errors are counted by.
    pub fn reason(&self) -> &'static str {
        match self {
            OwnError::Parse { .. } => "parse_error",
            OwnError::Invalid { .. } | OwnError::EmptyBatch => "invalid_request",
            OwnError::TooLarge { .. } => "too_large",
            OwnError::DuplicateId { .. } => "duplicate_id",
            OwnError::NotDelivered | OwnError::ShuttingDown | OwnError::ServerStopped | OwnError::GaveUp => {
                "shutting_down"
            }
            OwnError::QueueFull { .. } => "queue_full",
            OwnError::Timeout { .. } => "timeout",
            OwnError::ResponseTooLarge { .. } => "response_too_large",
            OwnError::InvalidResponse { .. } => "invalid_response",
            OwnError::Crashed(_) => "server_crashed",
            OwnError::RestartLimit(_) => "restart_limit",
            OwnError::TooManyClients { .. } => "max_clients",
            OwnError::StartFailed { .. } => "spawn_failed",
            OwnError::NoDaemon { .. } => "no_daemon",
        }
    }

    pub fn code(&self) -> i64 {
        match self {
            OwnError::Parse { .. } => PARSE_ERROR,
            OwnError::Invalid { .. }
            | OwnError::EmptyBatch
            | OwnError::TooLarge { .. }
            | OwnError::DuplicateId { .. } => INVALID_REQUEST,
            _ => INTERNAL_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            OwnError::Parse { detail } => format!("Parse error: {detail}"),
            OwnError::Invalid { detail } => format!("Invalid Request: {detail}"),
            OwnError::EmptyBatch => "Invalid Request: empty batch".to_owned(),
            OwnError::TooLarge { size, limit } => format!(
                "message of {size} bytes exceeds the limit of {limit} bytes (mcpvisor --max-message-size); it was not delivered"
            ),
            OwnError::DuplicateId { id } => {
                format!("request id {id} is already in flight; ids must be unique among pending requests")
            }
            OwnError::NotDelivered => {
                "mcpvisor is shutting down; the request was not delivered to the MCP server".to_owned()
            }
            OwnError::ShuttingDown => "mcpvisor is shutting down".to_owned(),
            OwnError::ServerStopped => "MCP server stopped because mcpvisor is shutting down".to_owned(),
            OwnError::GaveUp => "MCP server keeps crashing; mcpvisor gave up (restart limit reached)".to_owned(),
            OwnError::QueueFull { limit } => format!(
                "MCP server is restarting and {limit} messages are already waiting (mcpvisor --queue-limit); retry later"
            ),
            OwnError::Timeout { method, after } => format!(
                "MCP server did not answer {method} within {} (mcpvisor --request-timeout); the request was cancelled",
                format_duration(*after)
            ),
            OwnError::ResponseTooLarge { method, size, limit } => format!(
                "the MCP server's response to {method} was {size} bytes, over the limit of {limit} bytes (mcpvisor --max-message-size)"
            ),
            OwnError::InvalidResponse { method } => {
                format!("the MCP server sent an invalid response to {method} (not valid JSON-RPC)")
            }
            OwnError::Crashed(c) => format!(
                "MCP server {}; mcpvisor is restarting it. The request was not completed; retry it.",
                c.what
            ),
            OwnError::RestartLimit(l) => format!(
                "MCP server is down: it kept failing after {} restarts within {} (mcpvisor --max-restarts {}); \
                 last failure: {}. mcpvisor will try to start it again in {}.",
                l.restarts_in_window,
                format_duration(l.window),
                l.max_restarts,
                l.last_failure,
                format_duration(l.retry_in)
            ),
            OwnError::TooManyClients { server, limit } => format!(
                "MCP server {server} already has {limit} clients (mcpvisor max-clients); try again later or raise the limit"
            ),
            OwnError::StartFailed { server, detail } => format!("MCP server {server} could not be started: {detail}"),
            OwnError::NoDaemon { server } => format!(
                "no mcpvisor daemon serves `{server}`: start one (`systemctl --user start mcpvisor`, or `mcpvisor serve --config FILE`) with a [servers.{server}] table"
            ),
        }
    }

    pub fn data(&self) -> Value {
        let mut data = match self {
            OwnError::TooLarge { size, limit } => json!({ "size": size, "limit": limit }),
            OwnError::Timeout { after, .. } => json!({ "timeout_ms": after.as_millis() as u64 }),
            OwnError::ResponseTooLarge { size, .. } => json!({ "size": size }),
            OwnError::Crashed(c) => json!({
                "cause": c.cause,
                "exit": c.exit,
                "stderr": c.stderr,
                "restarts_in_window": c.restarts_in_window,
                "generation": c.generation,
            }),
            OwnError::RestartLimit(l) => json!({
                "restarts_in_window": l.restarts_in_window,
                "window_secs": l.window.as_secs(),
                "last_exit": l.last_exit,
                "spawn_error": l.spawn_error,
                "stderr": l.stderr,
                "retry_in_ms": l.retry_in.as_millis() as u64,
            }),
            OwnError::TooManyClients { server, limit } => json!({ "server": server, "limit": limit }),
            OwnError::StartFailed { server, .. } | OwnError::NoDaemon { server } => json!({ "server": server }),
            _ => json!({}),
        };
        data["reason"] = json!(self.reason());
        data["source"] = json!("mcpvisor");
        data
    }

    /// The error response line for request `id` (`None`: the id could not be read, so `null`).
    pub fn response(&self, id: Option<&Id>) -> Bytes {
        jsonrpc::error_response(id, self.code(), &self.message(), Some(self.data()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(e: &OwnError, id: Option<&Id>) -> Value {
        serde_json::from_slice(&e.response(id)).expect("an error response is JSON")
    }

    #[test]
    fn every_error_has_source_reason_and_its_code() {
        let all = [
            OwnError::Parse { detail: "x".into() },
            OwnError::Invalid { detail: "y" },
            OwnError::EmptyBatch,
            OwnError::TooLarge { size: 10, limit: 5 },
            OwnError::DuplicateId { id: Id::string("a") },
            OwnError::NotDelivered,
            OwnError::ShuttingDown,
            OwnError::ServerStopped,
            OwnError::GaveUp,
            OwnError::QueueFull { limit: 3 },
            OwnError::Timeout { method: "tools/call".into(), after: Duration::from_millis(1500) },
            OwnError::ResponseTooLarge { method: "m".into(), size: 9, limit: 8 },
            OwnError::InvalidResponse { method: "m".into() },
            OwnError::TooManyClients { server: "s".into(), limit: 2 },
            OwnError::StartFailed { server: "s".into(), detail: "command not found".into() },
            OwnError::NoDaemon { server: "s".into() },
        ];
        for e in all {
            let v = parsed(&e, Some(&Id::Int(7)));
            assert_eq!(v["jsonrpc"], "2.0");
            assert_eq!(v["id"], 7);
            assert_eq!(v["error"]["code"], e.code());
            assert_eq!(v["error"]["data"]["source"], "mcpvisor");
            assert_eq!(v["error"]["data"]["reason"], e.reason());
            assert_eq!(v["error"]["message"], e.message());
        }
    }

    #[test]
    fn codes_and_details() {
        assert_eq!(OwnError::Parse { detail: "x".into() }.code(), -32700);
        assert_eq!(OwnError::DuplicateId { id: Id::string("a") }.code(), -32600);
        assert_eq!(OwnError::QueueFull { limit: 1 }.code(), -32603);
        let v = parsed(&OwnError::TooLarge { size: 10, limit: 5 }, None);
        assert_eq!(v["id"], Value::Null);
        assert_eq!((v["error"]["data"]["size"].clone(), v["error"]["data"]["limit"].clone()), (json!(10), json!(5)));
        let timeout = OwnError::Timeout { method: "tools/call".into(), after: Duration::from_millis(1500) };
        assert!(timeout.message().contains("tools/call within 1s"), "{}", timeout.message());
        assert_eq!(timeout.data()["timeout_ms"], 1500);
    }

    #[test]
    fn crash_and_limit_reports() {
        let crash = OwnError::Crashed(Box::new(CrashReport {
            what: "crashed (exit code 3)".into(),
            cause: "exited",
            exit: Some(json!({"code": 3})),
            stderr: vec!["boom".into()],
            restarts_in_window: 1,
            generation: 2,
        }));
        assert_eq!(crash.reason(), "server_crashed");
        assert!(crash.message().starts_with("MCP server crashed (exit code 3); mcpvisor is restarting it."));
        let data = crash.data();
        assert_eq!((data["cause"].clone(), data["exit"]["code"].clone()), (json!("exited"), json!(3)));
        assert_eq!(data["stderr"], json!(["boom"]));

        let limit = OwnError::RestartLimit(Box::new(LimitReport {
            restarts_in_window: 10,
            window: Duration::from_secs(3600),
            max_restarts: 10,
            last_failure: "exit code 1".into(),
            last_exit: Some(json!({"code": 1})),
            spawn_error: None,
            stderr: Vec::new(),
            retry_in: Duration::from_secs(59),
        }));
        let message = limit.message();
        assert!(message.contains("after 10 restarts within 1h (mcpvisor --max-restarts 10)"), "{message}");
        assert!(message.contains("last failure: exit code 1") && message.ends_with("again in 59s."), "{message}");
        assert_eq!(limit.data()["retry_in_ms"], 59_000);
    }
}
