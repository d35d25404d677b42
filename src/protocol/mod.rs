//! The wire: MCP over stdio is newline-delimited JSON-RPC. This folder turns bytes into lines
//! ([`framing`]), validates and reads a line's envelope without building a DOM
//! ([`json_scan`], [`jsonrpc`], whose ids are [`id`] and whose request methods are classed by
//! [`method`]), and builds every error mcpvisor answers with itself
//! ([`errors`]). Nothing here does I/O beyond reading an `AsyncRead` in [`framing`].

pub mod errors;
pub mod framing;
pub mod id;
pub mod json_scan;
pub mod jsonrpc;
pub mod method;
