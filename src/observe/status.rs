//! A running instance's status: the snapshot the control socket returns, its stable JSON form
//! (documented in `docs/control-protocol.md`) and its human rendering for `mcpvisor status`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::units::format_secs as human;

/// The supervised server's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Up, and the client's handshake with it is still under way.
    #[default]
    Starting,
    /// Up and serving.
    Ready,
    /// Being replaced: stopping the old process or rebuilding the session on the new one.
    Restarting,
    /// Waiting before the next restart.
    Backoff,
    /// Restart limit reached: requests are refused until a restart slot frees.
    Failed,
    /// Shutting down: finishing in-flight requests.
    Draining,
    /// A daemon's server with no process, and none needed yet (lazy, or per-client without
    /// clients): ready to start one for the next client.
    Idle,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Restarting => "restarting",
            State::Backoff => "backoff",
            State::Failed => "failed",
            State::Draining => "draining",
            State::Idle => "idle",
        }
    }

    pub const ALL: [State; 7] =
        [State::Starting, State::Ready, State::Restarting, State::Backoff, State::Failed, State::Draining, State::Idle];

    /// The worst of several states (`idle` when there are none): a daemon's server or the
    /// daemon as a whole, from their processes'.
    pub fn worst(states: impl IntoIterator<Item = State>) -> State {
        states.into_iter().max_by_key(|s| s.severity()).unwrap_or(State::Idle)
    }

    /// How bad a state is, for the summary of several processes (higher is worse).
    pub fn severity(self) -> u8 {
        match self {
            State::Idle => 0,
            State::Ready => 1,
            State::Starting => 2,
            State::Draining => 3,
            State::Restarting => 4,
            State::Backoff => 5,
            State::Failed => 6,
        }
    }
}

/// A spare server process (hot standby).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SpareStatus {
    pub pid: u32,
    pub generation: u64,
    /// `starting` (its replayed `initialize` not answered yet) or `warm` (ready to take over).
    pub state: String,
    pub uptime_secs: f64,
}

/// One server process of a daemon's server (or `run`'s one process).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProcessStatus {
    pub pid: u32,
    pub generation: u64,
    pub state: State,
    pub uptime_secs: f64,
    /// The client connection it serves (per-client servers), numbered from 1.
    pub client: Option<u64>,
}

impl ProcessStatus {
    /// A running process, as its instance reports it (`client`: the connection it serves).
    pub fn of(child: &ChildStatus, state: State, client: Option<u64>) -> ProcessStatus {
        ProcessStatus { pid: child.pid, generation: child.generation, state, uptime_secs: child.uptime_secs, client }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ChildStatus {
    pub pid: u32,
    pub generation: u64,
    pub uptime_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Restarts {
    /// Restarts counted in the current window.
    pub in_window: usize,
    pub window_secs: u64,
    /// `--max-restarts`.
    pub limit: u32,
    /// All restarts since mcpvisor started, including requested ones.
    pub total: u64,
    /// When the oldest restart in the window leaves it.
    pub oldest_leaves_in_secs: Option<f64>,
    /// How long ago each restart in the window happened, in seconds, oldest first (the status
    /// page draws them).
    #[serde(default)]
    pub ages_secs: Vec<f64>,
}

/// Why the last server generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// It exited or was killed on its own (a crash).
    #[default]
    Exited,
    StdoutClosed,
    Hung,
    RebuildFailed,
    SpawnFailed,
    Memory,
    /// Stopped on purpose: a requested restart or shutdown.
    Stopped,
    /// A cause this mcpvisor does not know (from a newer instance).
    #[serde(other)]
    Other,
}

impl ExitCause {
    /// The JSON name, also used in crash errors' `data.cause`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitCause::Exited => "exited",
            ExitCause::StdoutClosed => "stdout_closed",
            ExitCause::Hung => "hung",
            ExitCause::RebuildFailed => "rebuild_failed",
            ExitCause::SpawnFailed => "spawn_failed",
            ExitCause::Memory => "memory",
            ExitCause::Stopped => "stopped",
            ExitCause::Other => "other",
        }
    }

    /// For the human table.
    fn text(self) -> &'static str {
        match self {
            ExitCause::Exited => "crash",
            ExitCause::StdoutClosed => "closed its stdout",
            ExitCause::Hung => "hung",
            ExitCause::RebuildFailed => "rebuild failed",
            ExitCause::SpawnFailed => "could not start",
            ExitCause::Memory => "over --max-memory",
            ExitCause::Stopped => "stopped",
            ExitCause::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LastExit {
    /// Human description: "exit code 1", "killed by SIGKILL", "hung", …
    pub description: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub cause: ExitCause,
    pub ago_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Protocol {
    /// handshake, stateless or unknown
    pub era: String,
    pub version: Option<String>,
    pub server_name: Option<String>,
    pub server_version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Status {
    pub name: String,
    pub mcpvisor_version: String,
    pub mcpvisor_pid: u32,
    pub command: Vec<String>,
    /// The names of the variables given to the server with `--env` or the config file's `[env]`;
    /// never their values.
    #[serde(default)]
    pub env_keys: Vec<String>,
    pub state: State,
    pub child: Option<ChildStatus>,
    pub restarts: Restarts,
    pub last_exit: Option<LastExit>,
    pub next_restart_in_secs: Option<f64>,
    pub in_flight: usize,
    pub queued: usize,
    pub last_ping_ms: Option<f64>,
    pub messages_to_server: u64,
    pub messages_to_client: u64,
    pub diverted_stdout_lines: u64,
    pub stderr_lines: u64,
    /// Error answers mcpvisor made itself (crashes, limits, bad input), all causes together.
    #[serde(default)]
    pub errors: u64,
    pub protocol: Protocol,
    /// The last stderr lines, filled when the server is not ready.
    pub stderr_tail: Vec<String>,
    /// A daemon's server: how its processes are shared (`per-client`, `shared`); null for `run`.
    #[serde(default)]
    pub share: Option<String>,
    /// Clients connected now.
    #[serde(default)]
    pub clients: usize,
    /// The running server processes (a per-client server has one per client).
    #[serde(default)]
    pub processes: Vec<ProcessStatus>,
    /// Spare processes kept started beside the active one (`--standby`).
    #[serde(default)]
    pub spares: Vec<SpareStatus>,
    /// Why standby was turned off for this server, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_off: Option<String>,
    /// A daemon's summary only: whether every eager server has a ready process (lazy servers
    /// start theirs on demand, so they never hold readiness back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

fn ago(secs: f64) -> String {
    human(secs) + " ago"
}

impl Status {
    /// A snapshot of the server `name` runs `spec` with, the rest left empty: what identifies it
    /// in every snapshot, whoever builds it.
    pub fn for_server(name: &str, spec: &crate::config::ChildSpec) -> Status {
        Status {
            name: name.to_owned(),
            mcpvisor_version: env!("CARGO_PKG_VERSION").to_owned(),
            mcpvisor_pid: std::process::id(),
            command: spec.argv(),
            env_keys: spec.env.iter().map(|var| var.key.to_string_lossy().into_owned()).collect(),
            ..Status::default()
        }
    }

    /// The full picture, as an aligned two-column table.
    pub fn render(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("name", self.name.clone()),
            ("state", self.state.as_str().to_owned()),
            ("command", self.command.join(" ")),
        ];
        if !self.env_keys.is_empty() {
            rows.push(("env", format!("{} (values not shown)", self.env_keys.join(", "))));
        }
        if let Some(share) = &self.share {
            rows.push(("share", share.clone()));
            rows.push(("clients", self.clients.to_string()));
            rows.push(("processes", self.processes.len().to_string()));
        } else {
            match &self.child {
                Some(c) => rows.push((
                    "server",
                    format!("pid {}, generation {}, up {}", c.pid, c.generation, human(c.uptime_secs)),
                )),
                None => rows.push(("server", "not running".into())),
            }
        }
        let mut restarts = format!(
            "{} in the last {} (limit {})",
            self.restarts.in_window,
            human(self.restarts.window_secs as f64),
            self.restarts.limit
        );
        if let Some(s) = self.restarts.oldest_leaves_in_secs {
            let _ = write!(restarts, "; the oldest leaves the window in {}", human(s));
        }
        let _ = write!(restarts, "; {} in all", self.restarts.total);
        rows.push(("restarts", restarts));
        rows.push((
            "last exit",
            self.last_exit
                .as_ref()
                .map_or_else(|| "-".into(), |e| format!("{} ({}), {}", e.description, e.cause.text(), ago(e.ago_secs))),
        ));
        rows.push((
            "next restart",
            self.next_restart_in_secs.map_or_else(|| "-".into(), |s| format!("in {}", human(s))),
        ));
        rows.push(("in flight", self.in_flight.to_string()));
        rows.push(("queued", self.queued.to_string()));
        rows.push(("last ping", self.last_ping_ms.map_or_else(|| "-".into(), |ms| format!("{ms:.1}ms"))));
        rows.push((
            "messages",
            format!("{} to server, {} to client", self.messages_to_server, self.messages_to_client),
        ));
        rows.push(("stdout noise", format!("{} lines diverted to the log", self.diverted_stdout_lines)));
        rows.push(("stderr", format!("{} lines", self.stderr_lines)));
        let p = &self.protocol;
        let protocol = match (&p.version, p.era.as_str()) {
            (_, "") => "-".to_owned(),
            (version, era) => format!("{} ({era} era)", version.as_deref().unwrap_or("-")),
        };
        rows.push(("protocol", protocol));
        rows.push((
            "server info",
            match (&p.server_name, &p.server_version) {
                (Some(n), Some(v)) => format!("{n} {v}"),
                (Some(n), None) => n.clone(),
                _ => "-".into(),
            },
        ));
        rows.push(("mcpvisor", format!("{} (pid {})", self.mcpvisor_version, self.mcpvisor_pid)));
        if let Some(why) = &self.standby_off {
            rows.push(("standby", format!("off: {why}")));
        } else if !self.spares.is_empty() {
            let spares: Vec<String> = self
                .spares
                .iter()
                .map(|s| format!("pid {} {}, generation {}, up {}", s.pid, s.state, s.generation, human(s.uptime_secs)))
                .collect();
            rows.push(("standby", spares.join("; ")));
        }
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<13} {v}");
        }
        if self.share.is_some() && !self.processes.is_empty() {
            let _ = writeln!(out, "processes:");
            for p in &self.processes {
                let client = p.client.map_or_else(String::new, |c| format!(", client {c}"));
                let _ = writeln!(
                    out,
                    "  pid {} {}, generation {}, up {}{client}",
                    p.pid,
                    p.state.as_str(),
                    p.generation,
                    human(p.uptime_secs)
                );
            }
        }
        if !self.stderr_tail.is_empty() {
            let _ = writeln!(out, "last stderr lines:");
            for l in &self.stderr_tail {
                let _ = writeln!(out, "  {l}");
            }
        }
        out
    }

    /// Whether it can serve clients now (a lazy server with no process can: it starts one).
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(matches!(self.state, State::Ready | State::Idle))
    }

    /// The PID column: the process, or how many there are.
    fn pid_cell(&self) -> String {
        match (&self.child, self.processes.len()) {
            (_, n) if n > 1 => format!("{n} procs"),
            (Some(c), _) => c.pid.to_string(),
            (None, 1) => self.processes[0].pid.to_string(),
            _ => "-".into(),
        }
    }
}

/// One line per instance.
pub fn render_list(statuses: &[Status]) -> String {
    let header = ["NAME", "STATE", "PID", "UPTIME", "CLIENTS", "RESTARTS", "IN-FLIGHT", "LAST EXIT"];
    let mut rows: Vec<[String; 8]> = vec![header.map(str::to_owned)];
    for s in statuses {
        let uptime = match (&s.child, s.processes.iter().map(|p| p.uptime_secs).reduce(f64::max)) {
            (Some(c), _) => human(c.uptime_secs),
            (None, Some(longest)) => human(longest),
            (None, None) => "-".into(),
        };
        rows.push([
            s.name.clone(),
            s.state.as_str().to_owned(),
            s.pid_cell(),
            uptime,
            s.clients.to_string(),
            format!("{}/{}", s.restarts.in_window, s.restarts.limit),
            s.in_flight.to_string(),
            s.last_exit.as_ref().map_or_else(|| "-".into(), |e| e.description.clone()),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_tables() {
        let s = Status {
            name: "srv".into(),
            state: State::Failed,
            restarts: Restarts {
                in_window: 10,
                window_secs: 3600,
                limit: 10,
                total: 10,
                oldest_leaves_in_secs: Some(59.0),
                ages_secs: Vec::new(),
            },
            stderr_tail: vec!["boom".into()],
            ..Status::default()
        };
        let text = s.render();
        assert!(text.contains("state         failed"), "{text}");
        assert!(text.contains("10 in the last 1h (limit 10)"), "{text}");
        assert!(text.contains("  boom"), "{text}");
        let list = render_list(&[s]);
        let lines: Vec<&str> = list.lines().collect();
        assert!(lines[0].starts_with("NAME  STATE"), "{list}");
        assert_eq!(lines[0].find("STATE"), lines[1].find("failed"), "{list}");
    }

    #[test]
    fn json_names_are_stable() {
        let v = serde_json::to_value(Status::default()).expect("json");
        for key in [
            "name",
            "state",
            "child",
            "restarts",
            "last_exit",
            "next_restart_in_secs",
            "in_flight",
            "queued",
            "last_ping_ms",
            "messages_to_server",
            "messages_to_client",
            "diverted_stdout_lines",
            "stderr_lines",
            "protocol",
            "stderr_tail",
            "mcpvisor_pid",
            "mcpvisor_version",
            "command",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["state"], "starting");
    }

    #[test]
    fn exit_causes_keep_their_names_and_tolerate_new_ones() {
        let exit = LastExit { cause: ExitCause::SpawnFailed, ..LastExit::default() };
        let v = serde_json::to_value(&exit).expect("json");
        assert_eq!(v["cause"], "spawn_failed");
        assert_eq!(v["cause"], ExitCause::SpawnFailed.as_str());
        let newer: LastExit = serde_json::from_value(serde_json::json!({
            "description": "x", "code": null, "signal": null, "cause": "abducted", "ago_secs": 1.0
        }))
        .expect("an unknown cause still parses");
        assert_eq!(newer.cause, ExitCause::Other);
    }
}
