//! The settings of `mcpvisor serve`: the daemon's own, and each configured server's (its
//! [`InstanceConfig`] plus how clients share it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::InstanceConfig;

/// How a server's processes are shared among its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Share {
    /// Each client connection gets a server process of its own (right for any stateful server).
    PerClient,
    /// One server process serves every client.
    Shared,
}

impl Share {
    pub fn as_str(self) -> &'static str {
        match self {
            Share::PerClient => "per-client",
            Share::Shared => "shared",
        }
    }
}

/// When a server's process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartMode {
    /// When the first client connects.
    Lazy,
    /// When the daemon starts.
    Eager,
}

/// How one configured server is offered to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    pub share: Share,
    pub start: StartMode,
    /// A shared server with no client for this long is stopped (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Connections beyond this many are refused with an error (`None`: no limit).
    pub max_clients: Option<usize>,
}

/// One `[servers.NAME]` of the file (or the single server of `serve -- COMMAND`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub instance: InstanceConfig,
    pub sharing: Sharing,
    /// The options it was built from, in order: two configs with the same ones are the same
    /// server (a reload leaves it alone).
    pub fingerprint: Vec<String>,
}

impl ServerConfig {
    /// The settings of the instance serving one client of a per-client server: its `standby`
    /// processes are the server's pool for new clients, not spares of each session.
    pub fn per_client_instance(&self) -> InstanceConfig {
        InstanceConfig { standby: 0, ..self.instance.clone() }
    }

    /// How many processes a per-client server keeps started for its next clients.
    pub fn pool_size(&self) -> usize {
        if self.sharing.share == Share::PerClient {
            self.instance.standby
        } else {
            0
        }
    }
}

/// The daemon's own settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the sockets go (`None`: the usual per-user directory).
    pub socket_dir: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    /// How many servers may be starting at once.
    pub max_starting: usize,
    /// Where restart histories are kept (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Where the daemon's and each server's log files go (`None`: one log, as `--log-file` says).
    pub log_dir: Option<PathBuf>,
    /// A group admitted to the sockets besides the daemon's user.
    pub socket_group: Option<SocketGroup>,
    /// The Streamable HTTP front, if it is on.
    pub http: Option<HttpConfig>,
    pub servers: Vec<ServerConfig>,
}

/// The settings of the HTTP front.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub session_idle: Duration,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub token_file: Option<PathBuf>,
    /// Tokens that may restart and stop servers from the status page.
    pub admin_token_file: Option<PathBuf>,
    pub max_sessions: usize,
    pub max_streams: usize,
    /// Certificate chain and key files, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The name session ids start with (`--replica`).
    pub replica: Option<String>,
}

/// A group admitted to the daemon's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}
