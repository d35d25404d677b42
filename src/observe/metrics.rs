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

/// The same bounds in nanoseconds: an observation (one per answered request) is an integer
/// compared with integers.
const LATENCY_BUCKETS_NS: [u64; 14] = {
    let mut ns = [0; 14];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Per bucket, not cumulative: an observation (one per answered request) increments one
    /// counter, and the exposition adds them up.
    counts: [u64; LATENCY_BUCKETS.len()],
    sum_ns: u64,
    count: u64,
}

impl Histogram {
    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.count += other.count;
    }

    pub fn observe(&mut self, d: Duration) {
        self.observe_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn observe_nanos(&mut self, ns: u64) {
        if let Some(i) = LATENCY_BUCKETS_NS.iter().position(|le| ns <= *le) {
            self.counts[i] += 1;
        }
        self.sum_ns = self.sum_ns.saturating_add(ns);
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
    /// Spares that took over from the active process (`--standby`).
    pub promotions: u64,
    /// Spares that exited, could not start or did not warm up.
    pub spare_failures: u64,
}

impl Metrics {
    /// Adds another instance's counts (a daemon's server reports its processes' sum).
    pub fn add(&mut self, other: &Metrics) {
        self.messages_to_server += other.messages_to_server;
        self.messages_to_client += other.messages_to_client;
        self.diverted_stdout_lines += other.diverted_stdout_lines;
        self.oversized_messages += other.oversized_messages;
        self.restarts += other.restarts;
        self.restart_limit_hits += other.restart_limit_hits;
        self.requests += other.requests;
        self.promotions += other.promotions;
        self.spare_failures += other.spare_failures;
        for (cause, n) in &other.crashes {
            *self.crashes.entry(cause).or_default() += n;
        }
        for (reason, n) in &other.errors {
            *self.errors.entry(reason).or_default() += n;
        }
        self.latency.add(&other.latency);
    }
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
    "mcpvisor_spares",
    "mcpvisor_promotions_total",
    "mcpvisor_spare_failures_total",
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
    render_many(&[(m, s)])
}

/// The exposition for several instances (or a daemon's servers): each family once, with a sample
/// set per instance, as the format requires.
pub fn render_many(items: &[(&Metrics, &Status)]) -> String {
    type Samples<'a> = &'a dyn Fn(&mut Writer, &Metrics, &Status);
    let mut w = Writer { out: String::new(), name: String::new() };
    let mut family = |metric: &str, kind: &str, help: &str, samples: Samples<'_>| {
        w.family(metric, kind, help);
        for (m, s) in items {
            w.name = escape(&s.name);
            samples(&mut w, m, s);
        }
    };
    family("mcpvisor_child_up", "gauge", "server processes running (for run: 1 or 0)", &|w, _, s| {
        w.sample("mcpvisor_child_up", &[], s.processes.len().max(usize::from(s.child.is_some())))
    });
    family("mcpvisor_state", "gauge", "1 for the current supervision state", &|w, _, s| {
        for state in State::ALL {
            w.sample("mcpvisor_state", &[("state", state.as_str())], u8::from(s.state == state));
        }
    });
    family("mcpvisor_restarts_total", "counter", "server restarts, automatic and requested", &|w, m, _| {
        w.sample("mcpvisor_restarts_total", &[], m.restarts)
    });
    family("mcpvisor_crashes_total", "counter", "unexpected server ends by cause", &|w, m, _| {
        for cause in CRASH_CAUSES {
            w.sample("mcpvisor_crashes_total", &[("cause", cause)], m.crashes.get(cause).copied().unwrap_or(0));
        }
    });
    family("mcpvisor_spares", "gauge", "spare server processes (--standby), by state", &|w, _, s| {
        for state in ["starting", "warm"] {
            w.sample("mcpvisor_spares", &[("state", state)], s.spares.iter().filter(|p| p.state == state).count());
        }
    });
    family("mcpvisor_promotions_total", "counter", "spares that took over from the server", &|w, m, _| {
        w.sample("mcpvisor_promotions_total", &[], m.promotions)
    });
    family(
        "mcpvisor_spare_failures_total",
        "counter",
        "spares that exited, could not start or did not warm up",
        &|w, m, _| w.sample("mcpvisor_spare_failures_total", &[], m.spare_failures),
    );
    family("mcpvisor_restart_limit_hits_total", "counter", "times the restart limit was reached", &|w, m, _| {
        w.sample("mcpvisor_restart_limit_hits_total", &[], m.restart_limit_hits)
    });
    family("mcpvisor_requests_total", "counter", "client requests accepted", &|w, m, _| {
        w.sample("mcpvisor_requests_total", &[], m.requests)
    });
    family("mcpvisor_request_errors_total", "counter", "error responses mcpvisor sent, by reason", &|w, m, _| {
        for (reason, n) in &m.errors {
            w.sample("mcpvisor_request_errors_total", &[("reason", reason)], n);
        }
    });
    family("mcpvisor_request_duration_seconds", "histogram", "client request to server response", &|w, m, _| {
        let h = &m.latency;
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(h.counts) {
            cumulative += n;
            w.sample("mcpvisor_request_duration_seconds_bucket", &[("le", &le.to_string())], cumulative);
        }
        w.sample("mcpvisor_request_duration_seconds_bucket", &[("le", "+Inf")], h.count);
        w.sample("mcpvisor_request_duration_seconds_sum", &[], h.sum_ns as f64 / 1e9);
        w.sample("mcpvisor_request_duration_seconds_count", &[], h.count);
    });
    family("mcpvisor_in_flight_requests", "gauge", "client requests waiting for the server", &|w, _, s| {
        w.sample("mcpvisor_in_flight_requests", &[], s.in_flight)
    });
    family(
        "mcpvisor_queued_messages",
        "gauge",
        "client messages waiting for the server (during a restart, or over --max-inflight)",
        &|w, _, s| w.sample("mcpvisor_queued_messages", &[], s.queued),
    );
    family("mcpvisor_messages_total", "counter", "protocol messages relayed", &|w, m, _| {
        w.sample("mcpvisor_messages_total", &[("direction", "to_server")], m.messages_to_server);
        w.sample("mcpvisor_messages_total", &[("direction", "to_client")], m.messages_to_client);
    });
    family(
        "mcpvisor_diverted_stdout_lines_total",
        "counter",
        "non-protocol server stdout lines sent to the log",
        &|w, m, _| w.sample("mcpvisor_diverted_stdout_lines_total", &[], m.diverted_stdout_lines),
    );
    family(
        "mcpvisor_oversized_messages_total",
        "counter",
        "messages over --max-message-size, either way",
        &|w, m, _| w.sample("mcpvisor_oversized_messages_total", &[], m.oversized_messages),
    );
    family("mcpvisor_stderr_lines_total", "counter", "server stderr lines logged", &|w, _, s| {
        w.sample("mcpvisor_stderr_lines_total", &[], s.stderr_lines)
    });
    family("mcpvisor_ping_latency_seconds", "gauge", "latency of the last answered liveness probe", &|w, _, s| {
        w.sample("mcpvisor_ping_latency_seconds", &[], s.last_ping_ms.map_or(f64::NAN, |ms| ms / 1000.0))
    });
    w.out
}

/// Merges expositions of several instances (as `mcpvisor metrics` collects them, one per
/// socket) into one, each family's header once.
pub fn merge(texts: &[String]) -> String {
    let mut families: Vec<(String, Vec<&str>)> = Vec::new();
    for text in texts {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("# HELP ").and_then(|r| r.split_whitespace().next()) {
                let index = families.iter().position(|(n, _)| n == name).unwrap_or_else(|| {
                    families.push((name.to_owned(), vec![line]));
                    families.len() - 1
                });
                current = Some(index);
            } else if line.starts_with("# TYPE ") {
                if let Some(i) = current.filter(|i| families[*i].1.len() == 1) {
                    families[i].1.push(line);
                }
            } else if let Some(i) = current {
                families[i].1.push(line);
            }
        }
    }
    let mut out = String::new();
    for (_, lines) in families {
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_cumulative_buckets() {
        let mut m = Metrics::default();
        m.latency.observe(Duration::from_millis(3));
        m.latency.observe(Duration::from_millis(300));
        m.latency.observe_nanos(1_000_000); // on a bound: that bucket, as `le` says
        m.errors.insert("server_crashed", 2);
        let s = Status { name: "a\"b".into(), state: State::Ready, ..Status::default() };
        let text = render(&m, &s);
        for name in METRIC_NAMES {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(text.contains(r#"mcpvisor_state{name="a\"b",state="ready"} 1"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_duration_seconds_bucket{name="a\"b",le="0.001"} 1"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_duration_seconds_bucket{name="a\"b",le="0.005"} 2"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_duration_seconds_bucket{name="a\"b",le="0.5"} 3"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_duration_seconds_sum{name="a\"b"} 0.304"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_duration_seconds_count{name="a\"b"} 3"#), "{text}");
        assert!(text.contains(r#"mcpvisor_request_errors_total{name="a\"b",reason="server_crashed"} 2"#));
    }

    #[test]
    fn several_instances_share_each_family_header() {
        let m = Metrics::default();
        let a = Status { name: "a".into(), ..Status::default() };
        let b = Status { name: "b".into(), ..Status::default() };
        let text = render_many(&[(&m, &a), (&m, &b)]);
        assert_eq!(text.matches("# TYPE mcpvisor_child_up gauge").count(), 1, "{text}");
        assert!(text.contains("mcpvisor_child_up{name=\"a\"} 0\nmcpvisor_child_up{name=\"b\"} 0"), "{text}");
        let merged = merge(&[render(&m, &a), render(&m, &b)]);
        assert_eq!(merged, text, "merging separate expositions gives the same text");
    }
}
