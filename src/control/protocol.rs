//! The control protocol on the wire (documented in `docs/control-protocol.md`): the client sends
//! one JSON object on one line, `{"v":1,"cmd":"status"}`, and gets one JSON object on one line
//! back, always with `"v"` and `"ok"`. Requests are capped at [`MAX_REQUEST`] bytes and
//! [`IO_TIMEOUT`]; malformed or unknown requests get `{"ok":false,"error":…}`, never a crash.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::instance::{CallError, Command as InstanceCommand, Reply};
use crate::observe::status::Status;

pub const PROTOCOL_VERSION: u32 = 1;
pub const MAX_REQUEST: u64 = 64 * 1024;
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Status,
    /// Graceful restart of the server (as SIGHUP); also clears the Failed state.
    Restart,
    /// Graceful drain and exit (as SIGTERM).
    Stop,
    /// The last `lines` lines the server wrote to stderr.
    Logs {
        #[serde(default = "default_lines")]
        lines: usize,
    },
    /// Prometheus text exposition.
    Metrics,
    /// A `mcpvisor serve` daemon re-reads its file.
    Reload,
}

fn default_lines() -> usize {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub command: Command,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Response {
    pub fn ok() -> Response {
        Response { v: PROTOCOL_VERSION, ok: true, ..Response::default() }
    }

    pub fn error(msg: impl Into<String>) -> Response {
        Response { v: PROTOCOL_VERSION, ok: false, error: Some(msg.into()), ..Response::default() }
    }
}

impl Response {
    /// The wire form of an instance's answer.
    pub fn from_reply(reply: Result<Reply, CallError>) -> Response {
        match reply {
            Ok(Reply::Status(status)) => Response { status: Some(status), ..Response::ok() },
            Ok(Reply::Health(_)) => Response::ok(),
            Ok(Reply::Done(message)) => Response { message: Some(message), ..Response::ok() },
            Ok(Reply::Refused(error)) => Response::error(error),
            Ok(Reply::Logs(lines)) => Response { lines: Some(lines), ..Response::ok() },
            Ok(Reply::Metrics(text)) => Response { metrics: Some(text), ..Response::ok() },
            Ok(Reply::Counters(_)) => Response::error("counters are not part of the control protocol"),
            Err(CallError::Gone) => Response::error("mcpvisor is shutting down"),
            Err(CallError::Timeout(_)) => Response::error("mcpvisor did not answer in time"),
        }
    }
}

impl Command {
    /// The instance command a control request stands for (`None`: not one for an instance).
    pub fn to_instance(&self) -> Option<InstanceCommand> {
        Some(match self {
            Command::Status => InstanceCommand::Status,
            Command::Restart => {
                InstanceCommand::Restart { why: "restart requested over the control socket", clear_failed: true }
            }
            Command::Stop => InstanceCommand::Stop { why: "stop requested over the control socket" },
            Command::Logs { lines } => InstanceCommand::Logs { lines: *lines },
            Command::Metrics => InstanceCommand::Metrics,
            Command::Reload => return None,
        })
    }
}

/// Parses one request line; the error says what is wrong in terms a client author can act on.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => return Err(format!("unsupported protocol version {v} (this mcpvisor speaks {PROTOCOL_VERSION})")),
        None => return Err("missing protocol version field \"v\"".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("unknown or malformed command: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_explain_themselves() {
        assert_eq!(parse_request(br#"{"v":1,"cmd":"status"}"#).expect("ok").command, Command::Status);
        assert_eq!(parse_request(br#"{"v":1,"cmd":"logs"}"#).expect("ok").command, Command::Logs { lines: 100 });
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"logs","lines":5}"#).expect("ok").command,
            Command::Logs { lines: 5 }
        );
        assert!(parse_request(b"nope").unwrap_err().contains("malformed"));
        assert!(parse_request(br#"{"cmd":"status"}"#).unwrap_err().contains("\"v\""));
        assert!(parse_request(br#"{"v":9,"cmd":"status"}"#).unwrap_err().contains("version 9"));
        assert!(parse_request(br#"{"v":1,"cmd":"explode"}"#).unwrap_err().contains("unknown"));
    }
}
