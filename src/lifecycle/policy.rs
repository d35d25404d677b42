//! When to restart a child that ended unexpectedly.
//!
//! Pure logic over caller-supplied instants, so it can be tested with virtual time:
//! - exponential backoff with jitter, starting at `backoff_initial` and capped at `backoff_max`;
//!   the streak resets once a child has stayed up for `stable_after`;
//! - a rolling window: at most `max_restarts` restarts in any `window`. At the limit the circuit
//!   is open (the child is Failed) until the oldest restart leaves the window; then exactly one
//!   restart is allowed (half-open). If that child crashes too, the window is full again and the
//!   circuit reopens until the next slot frees; if it stays up, restarts flow normally again.

use std::time::{Duration, Instant};

use super::history::RestartHistory;
pub use crate::config::PolicyConfig;

/// What to do after a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new child once this much time has passed.
    RestartAfter(Duration),
    /// Too many restarts: do not restart before `until`.
    Failed { until: Instant },
}

#[derive(Debug)]
pub struct RestartPolicy {
    config: PolicyConfig,
    /// Restarts counted against the window: the server's, shared by all its processes.
    restarts: RestartHistory,
    /// Consecutive short-lived children.
    streak: u32,
    rng: fastrand::Rng,
}

impl RestartPolicy {
    /// A policy counting restarts in `history` (shared with the server's other processes).
    pub fn new(config: PolicyConfig, history: RestartHistory) -> Self {
        RestartPolicy { config, restarts: history, streak: 0, rng: fastrand::Rng::new() }
    }

    /// A policy with its own history and a seeded jitter source (for tests).
    pub fn with_rng(config: PolicyConfig, rng: fastrand::Rng) -> Self {
        RestartPolicy { config, restarts: RestartHistory::default(), streak: 0, rng }
    }

    /// Decides what follows a child that ran for `uptime` and ended at `now`.
    pub fn on_exit(&mut self, now: Instant, uptime: Duration) -> Decision {
        if uptime >= self.config.stable_after {
            self.streak = 0;
        }
        let window = self.config.window;
        if self.restarts.in_window(now, window) >= self.config.max_restarts as usize {
            // With no restart in the window (max-restarts 0), a whole window: not at once, which
            // would try again in a loop.
            let until = self.restarts.oldest(now, window).map_or(now + window, |t| t + window);
            return Decision::Failed { until };
        }
        let delay = self.backoff();
        self.streak = self.streak.saturating_add(1);
        Decision::RestartAfter(delay)
    }

    /// Records that a restart happens now (counted against the window).
    pub fn record_restart(&mut self, now: Instant) {
        self.restarts.record(now, self.config.window);
    }

    /// Restarts inside the window as of `now`.
    pub fn restarts_in_window(&mut self, now: Instant) -> usize {
        self.restarts.in_window(now, self.config.window)
    }

    /// How long ago each restart inside the window happened, oldest first.
    pub fn restart_ages(&mut self, now: Instant) -> Vec<Duration> {
        self.restarts.ages(now, self.config.window)
    }

    /// How long until the oldest restart in the window leaves it.
    pub fn oldest_leaves(&mut self, now: Instant) -> Option<Duration> {
        let window = self.config.window;
        self.restarts.oldest(now, window).map(|t| (t + window).saturating_duration_since(now))
    }

    /// Forgets the history, as after an operator's explicit restart.
    pub fn reset(&mut self) {
        self.restarts.clear();
        self.streak = 0;
    }

    /// New settings (a reloaded configuration); the restart history is kept.
    pub fn set_config(&mut self, config: PolicyConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// `initial * 2^streak`, capped, then jittered into [base/2, base] so that many supervisors
    /// restarting the same broken server do not stampede in lockstep.
    fn backoff(&mut self) -> Duration {
        let base = self
            .config
            .backoff_initial
            .checked_mul(1u32.checked_shl(self.streak.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.config.backoff_max)
            .min(self.config.backoff_max);
        let half = base / 2;
        half + half.mul_f64(self.rng.f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PolicyConfig {
        PolicyConfig {
            max_restarts: 10,
            window: Duration::from_secs(3600),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }

    fn policy() -> RestartPolicy {
        RestartPolicy::with_rng(config(), fastrand::Rng::with_seed(7))
    }

    /// Crashes quickly, restarting as told; returns the decisions.
    fn crash_loop(p: &mut RestartPolicy, start: Instant, n: usize) -> (Instant, Vec<Decision>) {
        let mut now = start;
        let mut out = Vec::new();
        for _ in 0..n {
            let d = p.on_exit(now, Duration::from_millis(10));
            out.push(d);
            if let Decision::RestartAfter(delay) = d {
                now += delay;
                p.record_restart(now);
                now += Duration::from_millis(10);
            }
        }
        (now, out)
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_caps() {
        let mut p = policy();
        let (_, decisions) = crash_loop(&mut p, Instant::now(), 10);
        let delays: Vec<Duration> = decisions
            .iter()
            .map(|d| match d {
                Decision::RestartAfter(x) => *x,
                Decision::Failed { .. } => panic!("failed early"),
            })
            .collect();
        for (i, d) in delays.iter().enumerate() {
            let base = (Duration::from_millis(250) * (1 << i)).min(Duration::from_secs(30));
            assert!(*d >= base / 2 && *d <= base, "delay {i} = {d:?}, base {base:?}");
        }
    }

    #[test]
    fn eleventh_crash_in_the_window_fails_until_the_oldest_restart_leaves() {
        let mut p = policy();
        let start = Instant::now();
        let (now, decisions) = crash_loop(&mut p, start, 11);
        assert!(decisions[..10].iter().all(|d| matches!(d, Decision::RestartAfter(_))));
        let Decision::Failed { until } = decisions[10] else { panic!("not failed: {:?}", decisions[10]) };
        assert!(until > now);
        let first_restart = start
            + match decisions[0] {
                Decision::RestartAfter(d) => d,
                Decision::Failed { .. } => unreachable!(),
            };
        assert_eq!(until, first_restart + Duration::from_secs(3600));
        // Still failed just before; half-open exactly when the slot frees.
        assert!(matches!(p.on_exit(until - Duration::from_millis(1), Duration::ZERO), Decision::Failed { .. }));
        assert!(matches!(p.on_exit(until, Duration::ZERO), Decision::RestartAfter(_)));
    }

    #[test]
    fn half_open_restart_that_crashes_reopens_the_circuit() {
        let mut p = policy();
        let (_, _) = crash_loop(&mut p, Instant::now(), 11);
        let Decision::Failed { until } = p.on_exit(Instant::now(), Duration::ZERO) else { panic!() };
        assert!(matches!(p.on_exit(until, Duration::ZERO), Decision::RestartAfter(_)));
        p.record_restart(until);
        // The half-open child dies at once: the window is full again.
        let soon = until + Duration::from_millis(1);
        assert!(matches!(p.on_exit(soon, Duration::from_millis(1)), Decision::Failed { .. }));
    }

    #[test]
    fn a_stable_child_resets_the_streak() {
        let mut p = policy();
        let (now, _) = crash_loop(&mut p, Instant::now(), 5);
        match p.on_exit(now, Duration::from_secs(61)) {
            Decision::RestartAfter(d) => assert!(d <= Duration::from_millis(250), "{d:?}"),
            Decision::Failed { .. } => panic!(),
        }
    }

    #[test]
    fn zero_backoff_restarts_at_once() {
        let mut p = RestartPolicy::with_rng(
            PolicyConfig { backoff_initial: Duration::ZERO, ..config() },
            fastrand::Rng::with_seed(1),
        );
        assert_eq!(p.on_exit(Instant::now(), Duration::ZERO), Decision::RestartAfter(Duration::ZERO));
    }

    #[test]
    fn processes_sharing_a_history_share_the_limit() {
        let history = RestartHistory::default();
        let mut a = RestartPolicy::new(config(), history.clone());
        let mut b = RestartPolicy::new(config(), history);
        let start = Instant::now();
        let (now, _) = crash_loop(&mut a, start, 6);
        let (now, decisions) = crash_loop(&mut b, now, 5);
        assert!(matches!(decisions[4], Decision::Failed { .. }), "{decisions:?}");
        assert!(matches!(a.on_exit(now, Duration::ZERO), Decision::Failed { .. }));
        assert_eq!(a.restarts_in_window(now), 10);
    }

    #[test]
    fn reset_closes_the_circuit() {
        let mut p = policy();
        let (now, _) = crash_loop(&mut p, Instant::now(), 11);
        p.reset();
        assert!(matches!(p.on_exit(now, Duration::ZERO), Decision::RestartAfter(_)));
    }

    #[test]
    fn with_max_restarts_zero_the_first_crash_fails_for_a_whole_window() {
        let mut p = RestartPolicy::with_rng(PolicyConfig { max_restarts: 0, ..config() }, fastrand::Rng::with_seed(7));
        let now = Instant::now();
        // Not `until: now`, which the lifecycle would take as a free slot and restart at once,
        // crash after crash.
        assert_eq!(p.on_exit(now, Duration::ZERO), Decision::Failed { until: now + config().window });
    }
}
