//! Hot standby, as decisions without I/O: when spare server processes are started, what a
//! spare's death means, and when standby is turned off because the server cannot run twice.
//!
//! Spares die too. Each death counts against a restart policy of the spares' own (the server's
//! limits and backoff, with a separate history), so a broken server cannot make mcpvisor spin
//! spares. Spares that keep exiting before they are warm are the sign of a server that holds
//! something exclusive (a lock, a port): the active process has it, so every spare fails at
//! start. After [`START_FAILURES_OFF`] in a row standby is turned off, with the reason.
//!
//! Every decision takes `now`, so the tests below run on virtual time.

use std::time::{Duration, Instant};

use super::policy::{Decision, PolicyConfig, RestartPolicy};
use crate::lifecycle::history::RestartHistory;

/// Spares in a row that exit before they are warm, after which standby is turned off.
pub const START_FAILURES_OFF: u32 = 3;
/// How long after a promotion its replacement is started: starting a process blocks the event
/// loop for a millisecond or two, which the client's answers should not wait for.
pub const REPLACE_AFTER_PROMOTION: Duration = Duration::from_millis(100);

/// Where a spare is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmth {
    /// Started; the replayed `initialize` has not been answered yet.
    Starting,
    /// Ready to take over.
    Warm,
}

impl Warmth {
    pub fn as_str(self) -> &'static str {
        match self {
            Warmth::Starting => "starting",
            Warmth::Warm => "warm",
        }
    }
}

#[derive(Debug)]
pub struct Standby {
    wanted: usize,
    /// The spares' own restart limit and backoff.
    policy: RestartPolicy,
    /// No spare is started before this (the backoff after a spare's death).
    not_before: Option<Instant>,
    /// Spares to replace, which count against the spares' limit when they are started.
    replacements: usize,
    /// Spares in a row that died before they were warm.
    start_failures: u32,
    /// Why standby was turned off.
    off: Option<String>,
}

impl Standby {
    /// Keeps `wanted` spares, replaced under `policy` (the server's settings).
    pub fn new(wanted: usize, policy: PolicyConfig) -> Standby {
        Standby {
            wanted,
            policy: RestartPolicy::new(policy, RestartHistory::default()),
            not_before: None,
            replacements: 0,
            start_failures: 0,
            off: None,
        }
    }

    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// Why standby is off, if it was turned off.
    pub fn off_because(&self) -> Option<&str> {
        self.off.as_deref()
    }

    /// How many spares to start at `now`, with `have` running; `eligible`: the client's session
    /// exists and the active server is ready (spares are never started before that).
    pub fn to_start(&self, now: Instant, have: usize, eligible: bool) -> usize {
        if !eligible || self.off.is_some() || self.not_before.is_some_and(|t| now < t) {
            return 0;
        }
        self.wanted.saturating_sub(have)
    }

    /// When a spare that is missing may be started (a timer for the caller).
    pub fn next_deadline(&self, have: usize) -> Option<Instant> {
        self.not_before.filter(|_| have < self.wanted && self.off.is_none())
    }

    /// A spare is being started at `now`.
    pub fn starting(&mut self, now: Instant) {
        if self.replacements > 0 {
            self.replacements -= 1;
            self.policy.record_restart(now);
        }
    }

    /// A spare was promoted at `now`: its replacement waits a moment.
    pub fn promoted(&mut self, now: Instant) {
        let after = now + REPLACE_AFTER_PROMOTION;
        self.not_before = Some(self.not_before.map_or(after, |t| t.max(after)));
    }

    /// A spare answered its `initialize` (or needs none): the server can run twice.
    pub fn warmed(&mut self) {
        self.start_failures = 0;
    }

    /// A spare died at `now` after `uptime` (`warm`: it had been ready; `what`: how it ended).
    /// Returns the warning to log when this turns standby off.
    pub fn died(&mut self, now: Instant, uptime: Duration, warm: bool, what: &str) -> Option<String> {
        if !warm {
            self.start_failures += 1;
            if self.start_failures >= START_FAILURES_OFF && self.off.is_none() {
                let why = format!(
                    "{} spares in a row ended before they were ready (the last: {what}); a server that \
                     holds an exclusive lock or port cannot run twice, so standby is off for this server",
                    self.start_failures
                );
                self.off = Some(why.clone());
                return Some(why);
            }
        }
        self.replacements += 1;
        self.not_before = Some(match self.policy.on_exit(now, uptime) {
            Decision::RestartAfter(delay) => now + delay,
            Decision::Failed { until } => until,
        });
        None
    }

    /// New settings (a reload): the spares' history is kept; standby that was turned off is
    /// tried again.
    pub fn reconfigure(&mut self, wanted: usize, policy: PolicyConfig) {
        self.wanted = wanted;
        self.policy.set_config(policy);
        self.off = None;
        self.start_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_restarts: u32) -> PolicyConfig {
        PolicyConfig {
            max_restarts,
            window: Duration::from_secs(3600),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            stable_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn spares_start_only_once_the_session_exists() {
        let s = Standby::new(2, policy(10));
        let now = Instant::now();
        assert_eq!(s.to_start(now, 0, false), 0);
        assert_eq!(s.to_start(now, 0, true), 2);
        assert_eq!(s.to_start(now, 1, true), 1);
        assert_eq!(s.to_start(now, 2, true), 0);
    }

    #[test]
    fn a_dead_spare_is_replaced_after_a_backoff_under_its_own_limit() {
        let mut s = Standby::new(1, policy(2));
        let t0 = Instant::now();
        // Warm spares that die later are replaced, with a growing delay.
        for round in 0..2u32 {
            let now = t0 + Duration::from_secs(u64::from(round) * 10);
            s.warmed();
            assert_eq!(s.died(now, Duration::from_secs(1), true, "exit code 1"), None);
            assert_eq!(s.to_start(now, 0, true), 0, "not during the backoff");
            let at = s.next_deadline(0).expect("a deadline");
            assert!(at > now && at <= now + Duration::from_secs(1));
            assert_eq!(s.to_start(at, 0, true), 1);
            s.starting(at);
        }
        // Two replacements used the limit up: the next one waits for the window.
        let now = t0 + Duration::from_secs(30);
        s.died(now, Duration::from_secs(1), true, "exit code 1");
        assert_eq!(s.to_start(now + Duration::from_secs(60), 0, true), 0);
        assert_eq!(s.to_start(t0 + Duration::from_secs(3601), 0, true), 1);
    }

    #[test]
    fn spares_that_keep_dying_at_start_turn_standby_off() {
        let mut s = Standby::new(1, policy(100));
        let mut now = Instant::now();
        for n in 1..START_FAILURES_OFF {
            assert_eq!(s.died(now, Duration::ZERO, false, "exit code 1"), None, "{n}");
            now = s.next_deadline(0).expect("replaced");
            s.starting(now);
        }
        let why = s.died(now, Duration::ZERO, false, "exit code 98").expect("turned off");
        assert!(why.contains("exclusive lock or port") && why.contains("exit code 98"), "{why}");
        assert_eq!(s.to_start(now + Duration::from_secs(3600), 0, true), 0);
        assert_eq!(s.next_deadline(0), None);
        s.reconfigure(1, policy(100));
        assert!(s.off_because().is_none(), "a reload tries again");
    }

    #[test]
    fn a_promoted_spare_is_replaced_a_moment_later() {
        let mut s = Standby::new(1, policy(10));
        let now = Instant::now();
        s.promoted(now);
        assert_eq!(s.to_start(now, 0, true), 0, "not in the turn that answers the client");
        assert_eq!(s.next_deadline(0), Some(now + REPLACE_AFTER_PROMOTION));
        assert_eq!(s.to_start(now + REPLACE_AFTER_PROMOTION, 0, true), 1);
    }

    #[test]
    fn a_warm_spare_resets_the_count_of_failures_at_start() {
        let mut s = Standby::new(1, policy(100));
        let now = Instant::now();
        for _ in 0..START_FAILURES_OFF - 1 {
            s.died(now, Duration::ZERO, false, "exit code 1");
        }
        s.warmed();
        assert_eq!(s.died(now, Duration::ZERO, false, "exit code 1"), None, "the count started over");
    }
}
