//! Counters, a request latency histogram, and their Prometheus text exposition.
//!
//! Each instance owns a [`Metrics`] and updates it as things happen; rendering takes a
//! [`Status`] snapshot for the gauges. Metric names are part of mcpvisor's interface (the example
//! Grafana dashboard and alert rules use them): change them only with a changelog entry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::status::{State, Status};

/// Upper bounds (seconds) of the latency buckets.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub messages_to_server: u64,
    pub messages_to_client: u64,
    pub diverted_stdout_lines: u64,
    pub oversized_messages: u64,
    pub restarts: u64,
    pub restart_limit_hits: u64,
    /// Crashes by cause (one of [`CRASH_CAUSES`]).
    pub crashes: BTreeMap<&'static str, u64>,
    pub requests: u64,
    /// Errors mcpvisor answered with, by `data.reason`.
    pub errors: BTreeMap<&'static str, u64>,
    pub latency: Histogram,
}

/// The `cause` label values of `mcpvisor_crashes_total` (all are always exported).
pub const CRASH_CAUSES: [&str; 7] =
    ["exit_code", "signal", "hung", "stdout_closed", "rebuild_failed", "spawn_failed", "memory"];

/// Every metric name mcpvisor exports (tests check that dashboards use only these).
pub const METRIC_NAMES: &[&str] = &[
    "mcpvisor_child_up",
    "mcpvisor_state",
    "mcpvisor_restarts_total",
    "mcpvisor_crashes_total",
    "mcpvisor_restart_limit_hits_total",
    "mcpvisor_requests_total",
    "mcpvisor_request_errors_total",
    "mcpvisor_request_duration_seconds",
    "mcpvisor_in_flight_requests",
    "mcpvisor_queued_messages",
    "mcpvisor_messages_total",
    "mcpvisor_diverted_stdout_lines_total",
    "mcpvisor_oversized_messages_total",
    "mcpvisor_stderr_lines_total",
    "mcpvisor_ping_latency_seconds",
];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Writer {
    out: String,
    name: String,
}

impl Writer {
    fn family(&mut self, metric: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
    }

    fn sample(&mut self, metric: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let mut l = format!("name=\"{}\"", self.name);
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "{metric}{{{l}}} {value}");
    }
}

/// The Prometheus text exposition for one instance.
pub fn render(m: &Metrics, s: &Status) -> String {
    let mut w = Writer { out: String::new(), name: escape(&s.name) };
    w.family("mcpvisor_child_up", "gauge", "1 if the server process is running");
    w.sample("mcpvisor_child_up", &[], u8::from(s.child.is_some()));
    w.family("mcpvisor_state", "gauge", "1 for the current supervision state");
    for state in State::ALL {
        w.sample("mcpvisor_state", &[("state", state.as_str())], u8::from(s.state == state));
    }
    w.family("mcpvisor_restarts_total", "counter", "server restarts, automatic and requested");
    w.sample("mcpvisor_restarts_total", &[], m.restarts);
    w.family("mcpvisor_crashes_total", "counter", "unexpected server ends by cause");
    for cause in CRASH_CAUSES {
        w.sample("mcpvisor_crashes_total", &[("cause", cause)], m.crashes.get(cause).copied().unwrap_or(0));
    }
    w.family("mcpvisor_restart_limit_hits_total", "counter", "times the restart limit was reached");
    w.sample("mcpvisor_restart_limit_hits_total", &[], m.restart_limit_hits);
    w.family("mcpvisor_requests_total", "counter", "client requests accepted");
    w.sample("mcpvisor_requests_total", &[], m.requests);
    w.family("mcpvisor_request_errors_total", "counter", "error responses mcpvisor sent, by reason");
    for (reason, n) in &m.errors {
        w.sample("mcpvisor_request_errors_total", &[("reason", reason)], n);
    }
    let h = &m.latency;
    w.family("mcpvisor_request_duration_seconds", "histogram", "client request to server response");
    for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
        w.sample("mcpvisor_request_duration_seconds_bucket", &[("le", &le.to_string())], h.counts[i]);
    }
    w.sample("mcpvisor_request_duration_seconds_bucket", &[("le", "+Inf")], h.count);
    w.sample("mcpvisor_request_duration_seconds_sum", &[], h.sum);
    w.sample("mcpvisor_request_duration_seconds_count", &[], h.count);
    w.family("mcpvisor_in_flight_requests", "gauge", "client requests waiting for the server");
    w.sample("mcpvisor_in_flight_requests", &[], s.in_flight);
    w.family(
        "mcpvisor_queued_messages",
        "gauge",
        "client messages waiting for the server (during a restart, or over --max-inflight)",
    );
    w.sample("mcpvisor_queued_messages", &[], s.queued);
    w.family("mcpvisor_messages_total", "counter", "protocol messages relayed");
    w.sample("mcpvisor_messages_total", &[("direction", "to_server")], m.messages_to_server);
    w.sample("mcpvisor_messages_total", &[("direction", "to_client")], m.messages_to_client);
    w.family("mcpvisor_diverted_stdout_lines_total", "counter", "non-protocol server stdout lines sent to the log");
    w.sample("mcpvisor_diverted_stdout_lines_total", &[], m.diverted_stdout_lines);
    w.family("mcpvisor_oversized_messages_total", "counter", "messages over --max-message-size, either way");
    w.sample("mcpvisor_oversized_messages_total", &[], m.oversized_messages);
    w.family("mcpvisor_stderr_lines_total", "counter", "server stderr lines logged");
    w.sample("mcpvisor_stderr_lines_total", &[], s.stderr_lines);
    w.family("mcpvisor_ping_latency_seconds", "gauge", "latency of the last answered liveness probe");
    w.sample("mcpvisor_ping_latency_seconds", &[], s.last_ping_ms.map_or(f64::NAN, |ms| ms / 1000.0));
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_cumulative_buckets() {
        let mut m = Metrics::default();
        m.latency.observe(Duration::from_millis(3));
        m.latency.observe(Duration::from_millis(300));
        m.errors.insert("server_crashed", 2);
        let s = Status { name: "a\"b".into(), state: State::Ready, ..Status::default() };
        let text = render(&m, &s);
        for name in METRIC_NAMES {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(text.contains(r#"mcpvisor_state{name="a\"b",state="ready"} 1"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_duration_seconds_bucket{name="a\"b",le="0.005"} 1"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_duration_seconds_bucket{name="a\"b",le="0.5"} 2"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_errors_total{name="a\"b",reason="server_crashed"} 2"#));
    }
}
