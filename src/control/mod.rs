//! The control socket: how `mcpvisor status` (and any other tool) talks to a running instance.
//! [`protocol`] is the wire format, [`server`] the listening side (which hands each request to
//! the instance through its [`InstanceHandle`](crate::instance::InstanceHandle)), [`client`]
//! the calling side, [`discovery`] where sockets live and how instances are named, and
//! [`access`] who may connect.

pub mod access;
pub mod client;
pub mod discovery;
pub mod protocol;
pub mod server;

pub use protocol::{Command, Response};
