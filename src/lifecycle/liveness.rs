//! Liveness: a server that has been silent for `--ping-interval` is probed (`ping`, or
//! `server/discover` in the stateless era); `--ping-failures` probes in a row unanswered within
//! `--ping-timeout` and it is hung. Pure, over caller-supplied instants.

use std::time::{Duration, Instant};

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing to do yet.
    Quiet,
    /// Send a probe now (then call [`Liveness::probe_sent`]).
    Probe,
    /// Too many probes in a row went unanswered.
    Hung,
}

#[derive(Debug)]
pub struct Liveness {
    interval: Option<Duration>,
    timeout: Duration,
    failures: u32,
    last_output: Option<Instant>,
    probe_deadline: Option<Instant>,
    misses: u32,
    last_latency: Option<Duration>,
    /// The current server has written something since it started.
    heard: bool,
}

impl Liveness {
    /// `interval`: `None` when liveness checks are off.
    pub fn new(interval: Option<Duration>, timeout: Duration, failures: u32) -> Liveness {
        Liveness {
            interval,
            timeout,
            failures,
            last_output: None,
            probe_deadline: None,
            misses: 0,
            last_latency: None,
            heard: false,
        }
    }

    /// New settings (a reloaded configuration).
    pub fn reconfigure(&mut self, interval: Option<Duration>, timeout: Duration, failures: u32) {
        self.interval = interval;
        self.timeout = timeout;
        self.failures = failures;
    }

    /// A new server generation started now.
    pub fn restart(&mut self, now: Instant) {
        self.last_output = Some(now);
        self.probe_deadline = None;
        self.misses = 0;
        self.heard = false;
    }

    /// The generation ended: nothing is watched until the next one.
    pub fn stop(&mut self) {
        self.last_output = None;
        self.probe_deadline = None;
        self.misses = 0;
    }

    /// The server wrote something: it is alive.
    #[inline]
    pub fn output(&mut self, now: Instant) {
        self.last_output = Some(now);
        self.heard = true;
    }

    /// Whether the current server has written anything since it started.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// When to check next; `active`: the server is up with its session established (probes
    /// before that could lock a dual-era server into the wrong era).
    pub fn deadline(&self, active: bool) -> Option<Instant> {
        let interval = self.interval?;
        if !active {
            return None;
        }
        self.probe_deadline.or_else(|| self.last_output.map(|t| t + interval))
    }

    pub fn check(&mut self, now: Instant, active: bool) -> Check {
        match self.deadline(active) {
            Some(deadline) if now >= deadline => {}
            _ => return Check::Quiet,
        }
        if self.probe_deadline.is_some() {
            self.misses += 1;
            tracing::warn!(misses = self.misses, of = self.failures, "liveness probe unanswered");
            if self.misses >= self.failures {
                return Check::Hung;
            }
        }
        Check::Probe
    }

    pub fn probe_sent(&mut self, now: Instant) {
        self.probe_deadline = Some(now + self.timeout);
    }

    /// A probe sent at `sent` was answered at `now`.
    pub fn answered(&mut self, now: Instant, sent: Instant) -> Duration {
        let latency = now.saturating_duration_since(sent);
        self.last_output = Some(now);
        self.probe_deadline = None;
        self.misses = 0;
        self.last_latency = Some(latency);
        latency
    }

    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// The latency of the last answered probe.
    pub fn last_latency(&self) -> Option<Duration> {
        self.last_latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_server_is_probed_and_declared_hung_after_the_misses() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Some(30 * S), 10 * S, 3);
        l.restart(t0);
        assert_eq!(l.deadline(false), None, "no probes before the session exists");
        assert_eq!(l.deadline(true), Some(t0 + 30 * S));
        assert_eq!(l.check(t0 + 29 * S, true), Check::Quiet);
        l.output(t0 + 20 * S);
        assert_eq!(l.check(t0 + 30 * S, true), Check::Quiet, "output pushes the probe back");
        let mut now = t0 + 50 * S;
        for round in 0..3 {
            // The first probe, then two more after one and two misses.
            assert_eq!(l.check(now, true), Check::Probe, "round {round}");
            assert_eq!(l.misses(), round);
            l.probe_sent(now);
            now += 10 * S;
        }
        assert_eq!(l.check(now, true), Check::Hung);
    }

    #[test]
    fn an_answer_resets_the_misses_and_records_the_latency() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Some(S), S, 2);
        l.restart(t0);
        assert_eq!(l.check(t0 + S, true), Check::Probe);
        l.probe_sent(t0 + S);
        assert_eq!(l.check(t0 + 2 * S, true), Check::Probe, "one miss of two");
        l.probe_sent(t0 + 2 * S);
        assert_eq!(l.answered(t0 + 2 * S + Duration::from_millis(5), t0 + 2 * S), Duration::from_millis(5));
        assert_eq!(l.misses(), 0);
        assert_eq!(l.last_latency(), Some(Duration::from_millis(5)));
        l.stop();
        assert_eq!(l.deadline(true), None);
        assert_eq!(l.last_latency(), Some(Duration::from_millis(5)), "kept for status");
    }

    #[test]
    fn off_means_never() {
        let mut l = Liveness::new(None, S, 1);
        l.restart(Instant::now());
        assert_eq!(l.check(Instant::now() + 3600 * S, true), Check::Quiet);
    }
}
