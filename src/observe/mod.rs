//! What operators see of an instance: the [`status`] snapshot (its stable JSON and the human
//! tables of `mcpvisor status`) and the [`metrics`] (Prometheus text).

pub mod metrics;
pub mod status;
