//! mcpvisor: a process supervisor for MCP stdio servers.
//!
//! `mcpvisor run -- COMMAND` sits between an MCP client and a server it starts, relays
//! newline-delimited JSON-RPC both ways, keeps stdout clean, and restarts a crashed or hung
//! server while rebuilding the session, so that the client never notices.
//!
//! The layers, from the wire up (`docs/architecture.md` has the picture):
//! - [`protocol`]: framing, JSON scanning, envelopes, mcpvisor's own errors;
//! - [`relay`] and [`lifecycle`]: the bookkeeping and decisions, without I/O;
//! - [`process`], [`io`], [`port`]: server processes, write queues, client ports;
//! - [`instance`]: one supervised server and its client, driven by one task;
//! - [`control`], [`http`], [`observe`]: how operators see and steer instances;
//! - [`app`]: the commands, owning what exists once per process; [`cli`] and [`config`] feed them.

pub mod alloc;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod exit;
pub mod front;
pub mod http;
pub mod instance;
pub mod io;
pub mod lifecycle;
pub mod observe;
pub mod port;
pub mod process;
pub mod protocol;
pub mod relay;
pub mod resident;
