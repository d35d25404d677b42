//! The applications: what the `mcpvisor` binary runs, each owning what exists once per process
//! (logging, the runtime, signals, the reaper, sockets, systemd) around the instances it hosts.
//! [`run`] hosts one instance on stdin/stdout; [`serve`] hosts many, for clients that reach them
//! with [`connect`], which bridges stdio to a socket;
//! [`commands`] are the client subcommands that talk to running instances.

pub mod commands;
pub mod connect;
pub mod install;
pub mod logging;
pub mod notify;
pub mod run;
pub mod runtime;
pub mod serve;
pub mod signals;
