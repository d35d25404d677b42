//! The relay's bookkeeping, without I/O: which requests are in flight each way and whose ids
//! they carry ([`inflight`], the client's keyed in an [`id_table`]), client batches being answered
//! ([`batch`]), messages waiting for a server that can take them ([`queue`]), and what a restarted
//! server must be told to rebuild the client's session ([`session`]). The instance's event loop
//! drives these.

pub mod batch;
pub mod id_table;
pub mod inflight;
pub mod mux;
pub mod queue;
pub mod session;
