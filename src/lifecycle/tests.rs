//! The lifecycle on virtual time: instants made up by the tests, a stand-in child that records
//! what it was told.

use super::*;
use crate::observe::status::State;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Fake {
    started: Instant,
    told: Vec<&'static str>,
}

impl ChildControl for Fake {
    fn stop(&mut self) {
        self.told.push("stop");
    }
    fn kill(&mut self) {
        self.told.push("kill");
    }
    fn started(&self) -> Instant {
        self.started
    }
    fn pid(&self) -> u32 {
        4242
    }
}

fn policy(max_restarts: u32) -> PolicyConfig {
    PolicyConfig {
        max_restarts,
        window: Duration::from_secs(3600),
        backoff_initial: Duration::from_millis(250),
        backoff_max: Duration::from_secs(30),
        stable_after: Duration::from_secs(60),
    }
}

fn life(max_restarts: u32, on_failure: OnFailure) -> Lifecycle<Fake> {
    let policy = RestartPolicy::with_rng(policy(max_restarts), fastrand::Rng::with_seed(3));
    Lifecycle::with_policy(policy, on_failure, DRAIN)
}

/// Starts the next generation at `now`.
fn start(life: &mut Lifecycle<Fake>, now: Instant, phase: Phase) -> u64 {
    let generation = life.next_generation();
    life.started(Fake { started: now, told: Vec::new() }, phase);
    generation
}

fn told(life: &Lifecycle<Fake>) -> Vec<&'static str> {
    life.child().map(|c| c.told.clone()).unwrap_or_default()
}

/// Crashes the running generation at `now` and lets its stdout drain; returns the schedule.
fn crash(life: &mut Lifecycle<Fake>, now: Instant) -> (Instant, Scheduled) {
    let generation = life.generation();
    assert_eq!(life.on_exit(now, generation, ExitInfo::Code(1)), Some(true));
    let now = now + STDOUT_DRAIN;
    let ended = life.stop_finished(now, true).expect("drained");
    life.record_end(now, &ended.why);
    (now, life.schedule_restart(now, ended.uptime))
}

#[test]
fn a_crash_drains_stdout_then_backs_off_then_restarts() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    let generation = start(&mut life, t0, Phase::Ready);
    assert_eq!(life.public_state(false), State::Ready);
    assert_eq!(life.public_state(true), State::Starting, "the client's handshake is under way");

    assert_eq!(life.on_exit(t0 + S, generation, ExitInfo::Code(3)), Some(true), "an unexpected exit");
    assert_eq!(life.public_state(false), State::Restarting);
    assert_eq!(life.last_exit(), Some(ExitInfo::Code(3)));
    assert!(life.stop_finished(t0 + S, true).is_none(), "stdout is drained first");
    assert_eq!(life.next_deadline(), Some(t0 + S + STDOUT_DRAIN));
    let ended = life.stop_finished(t0 + S + STDOUT_DRAIN, true).expect("drained");
    assert_eq!(ended.why, StopReason::Crashed(Cause::Exited));
    assert_eq!(ended.uptime, S + STDOUT_DRAIN);
    life.record_end(t0 + S + STDOUT_DRAIN, &ended.why);
    assert_eq!(life.last_end().map(|(_, how)| how.kind().as_str()), Some("exited"));

    let now = t0 + S + STDOUT_DRAIN;
    let Scheduled::RestartAfter(delay) = life.schedule_restart(now, ended.uptime) else { panic!("not a restart") };
    assert!(delay >= 125 * MS && delay <= 250 * MS, "{delay:?}");
    assert_eq!(life.public_state(false), State::Backoff);
    assert_eq!(life.next_start(), Some(now + delay));
    assert_eq!(life.due(now + delay - MS), None);
    assert_eq!(life.due(now + delay), Some(Due::Restart { after_failed: false }));
    life.record_restart(now + delay);
    start(&mut life, now + delay, Phase::Ready);
    assert_eq!(life.generation(), 2);
}

#[test]
fn a_late_exit_of_an_older_generation_is_ignored() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    start(&mut life, t0, Phase::Ready);
    start(&mut life, t0, Phase::Ready);
    assert_eq!(life.on_exit(t0, 1, ExitInfo::Code(0)), None);
    assert!(life.is_up());
}

#[test]
fn a_closed_stdout_skips_the_drain_and_a_running_one_counts_as_broken() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    let generation = start(&mut life, t0, Phase::Ready);
    life.on_stdout_closed(t0);
    assert_eq!(life.due(t0 + 100 * MS), None);
    assert_eq!(life.due(t0 + STDOUT_DRAIN), Some(Due::StdoutClosed));
    assert!(life.stop(StopReason::Crashed(Cause::StdoutClosed)));
    assert_eq!(told(&life), ["stop"]);
    assert!(life.stop_finished(t0, false).is_none(), "not exited yet");
    life.on_exit(t0 + S, generation, ExitInfo::Code(0));
    let ended = life.stop_finished(t0 + S, false).expect("stdout already closed: no drain");
    assert_eq!(ended.why, StopReason::Crashed(Cause::StdoutClosed));
}

#[test]
fn the_restart_limit_fails_the_server_until_a_slot_frees() {
    let t0 = Instant::now();
    let mut life = life(2, OnFailure::Wait);
    start(&mut life, t0, Phase::Ready);
    let mut now = t0;
    for _ in 0..2 {
        let (at, scheduled) = crash(&mut life, now);
        let Scheduled::RestartAfter(delay) = scheduled else { panic!("{scheduled:?}") };
        now = at + delay;
        life.record_restart(now);
        start(&mut life, now, Phase::Ready);
    }
    let (at, scheduled) = crash(&mut life, now);
    let Scheduled::Failed { until, give_up } = scheduled else { panic!("{scheduled:?}") };
    assert!(!give_up);
    assert!(until > at);
    assert_eq!(life.public_state(false), State::Failed);
    assert_eq!(life.failed_until(), Some(until));
    assert_eq!(life.due(until - MS), None);
    assert_eq!(life.due(until), Some(Due::Restart { after_failed: true }));
}

#[test]
fn on_failure_exit_gives_up_at_the_limit() {
    let t0 = Instant::now();
    let mut life = life(0, OnFailure::Exit);
    start(&mut life, t0, Phase::Ready);
    let (_, scheduled) = crash(&mut life, t0);
    assert!(matches!(scheduled, Scheduled::Failed { give_up: true, .. }), "{scheduled:?}");
}

#[test]
fn a_shutdown_drains_until_nothing_is_owed_or_time_is_up() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    let generation = start(&mut life, t0, Phase::Ready);
    assert_eq!(life.request_shutdown(t0, false), ShutdownStep::Draining);
    assert_eq!(life.public_state(false), State::Draining);
    assert_eq!(life.request_shutdown(t0, false), ShutdownStep::AlreadyUnderWay);
    assert!(!life.drain_over(t0 + S, 2));
    assert!(life.drain_over(t0 + S, 0));
    assert!(life.drain_over(t0 + DRAIN, 2), "the drain timeout");
    assert!(life.stop_for_shutdown());
    assert_eq!(told(&life), ["stop"]);
    assert!(life.force(), "a second signal");
    assert_eq!(told(&life), ["stop", "kill"]);
    assert_eq!(life.on_exit(t0 + S, generation, ExitInfo::Code(0)), Some(false), "an expected exit");
    let ended = life.stop_finished(t0 + S, true).expect("forced: no drain");
    assert_eq!(ended.why, StopReason::Shutdown);
}

#[test]
fn a_shutdown_without_a_client_or_a_server_does_not_wait() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    start(&mut life, t0, Phase::Ready);
    assert_eq!(life.request_shutdown(t0, true), ShutdownStep::StopNow, "nobody to drain for");
    let mut life = life_in_backoff(t0);
    assert_eq!(life.request_shutdown(t0, false), ShutdownStep::Done);
    assert!(!life.stop_for_shutdown());
    assert_eq!(life.request_restart(t0, true), RestartStep::Refused);
}

fn life_in_backoff(t0: Instant) -> Lifecycle<Fake> {
    let mut life = life(10, OnFailure::Wait);
    start(&mut life, t0, Phase::Ready);
    crash(&mut life, t0);
    assert_eq!(life.public_state(false), State::Backoff);
    life
}

#[test]
fn a_requested_restart_waits_for_in_flight_requests() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    start(&mut life, t0, Phase::Ready);
    assert_eq!(life.request_restart(t0, false), RestartStep::Scheduled);
    assert!(!life.is_ready(), "new messages wait");
    assert_eq!(life.next_deadline(), Some(t0 + DRAIN));
    assert!(!life.restart_due(t0 + S, 1));
    assert!(life.restart_due(t0 + S, 0));
    assert_eq!(told(&life), ["stop"]);
    assert_eq!(life.request_restart(t0 + S, false), RestartStep::AlreadyUnderWay);
    let mut life = life_in_backoff(t0);
    assert_eq!(life.request_restart(t0, false), RestartStep::StartNow);
}

#[test]
fn a_restart_request_clears_the_failed_state_only_when_asked() {
    let t0 = Instant::now();
    let mut life = life(0, OnFailure::Wait);
    start(&mut life, t0, Phase::Ready);
    let (now, _) = crash(&mut life, t0);
    assert!(life.failed_until().is_some());
    assert_eq!(life.request_restart(now, false), RestartStep::StartNow);
    assert_eq!(life.policy().restarts_in_window(now), 0);
    life.record_restart(now);
    assert_eq!(life.policy().restarts_in_window(now), 1);
    assert_eq!(life.request_restart(now, true), RestartStep::StartNow);
    assert_eq!(life.policy().restarts_in_window(now), 0, "the history is forgotten");
}

#[test]
fn a_crash_overtakes_a_pending_restart() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    start(&mut life, t0, Phase::Ready);
    life.request_restart(t0, false);
    assert!(life.restart_pending());
    crash(&mut life, t0);
    assert!(!life.restart_pending());
}

#[test]
fn a_rebuild_has_a_deadline() {
    let t0 = Instant::now();
    let mut life = life(10, OnFailure::Wait);
    start(&mut life, t0, Phase::Rebuilding { deadline: t0 + 30 * S });
    assert_eq!(life.public_state(false), State::Restarting);
    assert!(!life.is_ready() && !life.is_serving());
    assert_eq!(life.due(t0 + 30 * S), Some(Due::RebuildTimedOut));
    life.rebuilt();
    assert!(life.is_ready());
    assert_eq!(life.due(t0 + 60 * S), None);
}

#[test]
fn a_spawn_failure_ends_the_generation_before_it_begins() {
    let t0 = Instant::now();
    let mut life = life_in_backoff(t0);
    life.next_generation();
    let ended = life.spawn_failed("command not found: `x`".into());
    assert_eq!(ended.why, StopReason::Crashed(Cause::SpawnFailed("command not found: `x`".into())));
    assert_eq!(life.last_spawn_error(), Some("command not found: `x`"));
    assert!(life.abandon().is_none());
}

#[test]
fn a_spare_takes_over_from_a_hung_generation_that_is_still_stopping() {
    let mut life = life(10, OnFailure::Wait);
    let t0 = Instant::now();
    let first = start(&mut life, t0, Phase::Ready);
    let spare = life.issue_generation();
    assert!(spare > first && life.generation() == first, "a spare's number is not the current one");
    // Hung: the stop sequence starts, and the spare takes over before the old process exits.
    assert!(life.stop(StopReason::Crashed(Cause::Hung)));
    let (old, ended) = life.hand_over(t0 + 5 * S).expect("a stopping generation to hand over");
    assert_eq!(old.told, vec!["stop"], "its stop sequence was started");
    assert_eq!((ended.why, ended.exit, ended.uptime), (StopReason::Crashed(Cause::Hung), None, 5 * S));
    assert!(matches!(life.schedule_restart(t0 + 5 * S, ended.uptime), Scheduled::RestartAfter(_)));
    life.record_restart(t0 + 5 * S);
    life.adopt_generation(spare);
    life.started(Fake { started: t0 + S, told: Vec::new() }, Phase::Ready);
    assert!(life.is_ready() && life.generation() == spare);
    // The old generation's exit, reported later, is not the current one's.
    assert_eq!(life.on_exit(t0 + 6 * S, first, ExitInfo::Code(0)), None);
    assert!(life.is_ready());
    assert_eq!(life.next_generation(), spare + 1, "numbers are never given twice");
    assert!(life.hand_over(t0).is_none(), "nothing is stopping");
}
