//! mcpvisor: a process supervisor for MCP stdio servers.
//!
//! `mcpvisor run -- COMMAND` sits between an MCP client and a server it starts, relays
//! newline-delimited JSON-RPC both ways, keeps stdout clean, and restarts a crashed or hung
//! server while rebuilding the session, so that the client never notices.
//!
//! Pure logic (framing, envelopes, in-flight tables, session record, restart policy) lives in
//! modules without I/O; the supervisor loop ties them to processes, pipes, signals and timers.
//! `docs/architecture.md` describes how the pieces fit.

pub mod alloc;
pub mod child;
pub mod cli;
pub mod commands;
pub mod config;
pub mod config_file;
pub mod connect;
pub mod control;
pub mod framing;
pub mod http;
pub mod inflight;
pub mod instance;
pub mod json_scan;
pub mod jsonrpc;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod procfs;
pub mod session;
pub mod signals;
pub mod status;
pub mod stdio;
pub mod supervisor;
pub mod writer;
