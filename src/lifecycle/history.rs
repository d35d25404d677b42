//! The restarts a server has had, counted against its rolling limit.
//!
//! One history belongs to one configured server and is shared by every process it runs (a
//! daemon's per-client server has one per client), so the limit is the server's, not each
//! process's. The daemon keeps it on disk ([`RestartHistory::encode`]/[`RestartHistory::decode`],
//! wall-clock times) so that the limit still holds after the daemon itself restarts; in memory
//! the times are monotonic [`Instant`]s, and every method takes `now`, for tests on virtual time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// A shared, cheaply cloned restart history.
#[derive(Debug, Clone, Default)]
pub struct RestartHistory(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Restart times, oldest first.
    times: Mutex<VecDeque<Instant>>,
    /// Signalled whenever the history changes (the daemon then writes it down). A change with
    /// nobody waiting leaves a permit, so the one writer never misses the last change.
    changed: Notify,
}

impl RestartHistory {
    fn times(&self) -> MutexGuard<'_, VecDeque<Instant>> {
        self.0.times.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a restart at `now`, forgetting those older than `window`.
    pub fn record(&self, now: Instant, window: Duration) {
        let mut times = self.times();
        expire(&mut times, now, window);
        times.push_back(now);
        drop(times);
        self.0.changed.notify_one();
    }

    /// Restarts inside `window` as of `now`.
    pub fn in_window(&self, now: Instant, window: Duration) -> usize {
        let mut times = self.times();
        expire(&mut times, now, window);
        times.len()
    }

    /// When the oldest restart inside `window` happened.
    pub fn oldest(&self, now: Instant, window: Duration) -> Option<Instant> {
        let mut times = self.times();
        expire(&mut times, now, window);
        times.front().copied()
    }

    /// How long ago each restart inside `window` happened, oldest first.
    pub fn ages(&self, now: Instant, window: Duration) -> Vec<Duration> {
        let mut times = self.times();
        expire(&mut times, now, window);
        times.iter().map(|t| now.saturating_duration_since(*t)).collect()
    }

    /// Forgets every restart (an operator's explicit restart).
    pub fn clear(&self) {
        self.times().clear();
        self.0.changed.notify_one();
    }

    /// Resolves at the next change (or at once, if one happened since the last call).
    pub async fn changed(&self) {
        self.0.changed.notified().await
    }

    /// The history as text: one restart per line, in milliseconds since the Unix epoch.
    /// `now` and `wall_now` are the same moment on the two clocks.
    pub fn encode(&self, now: Instant, wall_now: SystemTime) -> String {
        let wall_ms = millis_since_epoch(wall_now);
        self.times()
            .iter()
            .map(|t| format!("{}\n", wall_ms.saturating_sub(now.saturating_duration_since(*t).as_millis())))
            .collect()
    }

    /// Reads what [`RestartHistory::encode`] wrote. Lines that are not a time are skipped and
    /// counted in the error count returned beside the history; times in the future count as now.
    pub fn decode(text: &str, now: Instant, wall_now: SystemTime) -> (RestartHistory, usize) {
        let wall_ms = millis_since_epoch(wall_now);
        let mut bad = 0;
        let mut times: Vec<Instant> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Ok(ms) = line.parse::<u128>() else {
                bad += 1;
                continue;
            };
            let age = Duration::from_millis(u64::try_from(wall_ms.saturating_sub(ms)).unwrap_or(u64::MAX));
            times.push(instant_before(now, age));
        }
        times.sort();
        let history = RestartHistory::default();
        *history.times() = times.into();
        (history, bad)
    }
}

fn expire(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times.front().is_some_and(|oldest| now.saturating_duration_since(*oldest) >= window) {
        times.pop_front();
    }
}

fn millis_since_epoch(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// `now - age`; when the monotonic clock does not reach back that far (a restart recorded
/// before the machine booted), the earliest instant it can express. That makes the restart look
/// younger than it is, which errs on the side of the limit.
fn instant_before(now: Instant, age: Duration) -> Instant {
    if let Some(t) = now.checked_sub(age) {
        return t;
    }
    let mut reach = age;
    while !reach.is_zero() {
        reach /= 2;
        if let Some(t) = now.checked_sub(reach) {
            return t;
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn restarts_leave_the_window_as_time_passes() {
        let h = RestartHistory::default();
        let t0 = Instant::now();
        h.record(t0, HOUR);
        h.record(t0 + Duration::from_secs(600), HOUR);
        assert_eq!(h.in_window(t0 + Duration::from_secs(601), HOUR), 2);
        assert_eq!(h.oldest(t0 + Duration::from_secs(601), HOUR), Some(t0));
        assert_eq!(h.in_window(t0 + HOUR, HOUR), 1);
        assert_eq!(h.in_window(t0 + HOUR + Duration::from_secs(600), HOUR), 0);
    }

    #[test]
    fn clones_share_one_history() {
        let a = RestartHistory::default();
        let b = a.clone();
        let now = Instant::now();
        a.record(now, HOUR);
        assert_eq!(b.in_window(now, HOUR), 1);
        b.clear();
        assert_eq!(a.in_window(now, HOUR), 0);
    }

    #[test]
    fn encoding_survives_a_restart_of_the_daemon() {
        let h = RestartHistory::default();
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        h.record(now - Duration::from_secs(1200), HOUR);
        h.record(now - Duration::from_secs(60), HOUR);
        let text = h.encode(now, wall);
        assert_eq!(text, "1799998800000\n1799999940000\n");
        // The daemon comes back 10 minutes later: the ages have grown by 10 minutes.
        let later = Instant::now();
        let (back, bad) = RestartHistory::decode(&text, later, wall + Duration::from_secs(600));
        assert_eq!(bad, 0);
        assert_eq!(back.in_window(later, HOUR), 2);
        assert_eq!(back.oldest(later, HOUR), later.checked_sub(Duration::from_secs(1800)));
        assert_eq!(back.in_window(later + Duration::from_secs(1800), HOUR), 1);
    }

    #[test]
    fn decoding_skips_garbage_and_clamps_the_future() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (h, bad) = RestartHistory::decode("x\n\n1800000500000\n-4\n", now, wall);
        assert_eq!(bad, 2);
        assert_eq!(h.oldest(now, HOUR), Some(now));
    }

    #[test]
    fn an_age_beyond_the_monotonic_clock_is_clamped_not_a_panic() {
        let now = Instant::now();
        let t = instant_before(now, Duration::from_secs(u64::MAX / 4));
        assert!(t <= now);
    }
}
