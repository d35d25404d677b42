//! The instance's status snapshot, built from the state its loop owns (the JSON form is
//! documented in `docs/control-protocol.md`).

use std::time::{Duration, Instant};

use super::Instance;
use crate::lifecycle::{Cause, ChildState, EndCause};
use crate::observe::status::{self, Status};
use crate::port::ClientInput;
use crate::process::ExitInfo;

impl<I: ClientInput> Instance<I> {
    pub(super) fn status(&mut self) -> Status {
        let now = Instant::now();
        let state = self.life.public_state(self.session.handshake_in_progress());
        let child = match self.life.state() {
            ChildState::Up { child, .. } | ChildState::Stopping { child, .. } => Some(status::ChildStatus {
                pid: child.pid,
                generation: child.generation,
                uptime_secs: child.uptime(now).as_secs_f64(),
            }),
            _ => None,
        };
        let last_exit = self.life.last_exit();
        let last_end = self.life.last_end().map(|(at, how)| status::LastExit {
            description: match (how, last_exit) {
                (EndCause::Crashed(Cause::SpawnFailed(error)), _) => error.clone(),
                (EndCause::Crashed(Cause::Hung), _) => "hung (liveness probes unanswered)".into(),
                (EndCause::Crashed(Cause::Memory { .. }), _) => "over --max-memory".into(),
                (_, Some(exit)) => exit.to_string(),
                (how, None) => how.kind().as_str().replace('_', " "),
            },
            code: match last_exit {
                Some(ExitInfo::Code(c)) => Some(c),
                _ => None,
            },
            signal: match last_exit {
                Some(ExitInfo::Signal { signal, .. }) => Some(signal.as_str().to_owned()),
                _ => None,
            },
            cause: how.kind(),
            ago_secs: now.saturating_duration_since(*at).as_secs_f64(),
        });
        let (server_name, server_version) = self.session.server_info();
        let policy = self.life.policy();
        Status {
            state,
            child: child.clone(),
            restarts: status::Restarts {
                in_window: policy.restarts_in_window(now),
                window_secs: policy.config().window.as_secs(),
                limit: policy.config().max_restarts,
                total: self.metrics.restarts,
                oldest_leaves_in_secs: policy.oldest_leaves(now).map(|d| d.as_secs_f64()),
                ages_secs: policy.restart_ages(now).iter().map(Duration::as_secs_f64).collect(),
            },
            last_exit: last_end,
            next_restart_in_secs: self
                .life
                .next_start()
                .map(|until| until.saturating_duration_since(now).as_secs_f64()),
            in_flight: self.client_reqs.awaiting_child(),
            queued: self.queue.len(),
            last_ping_ms: self.liveness.last_latency().map(|d| d.as_secs_f64() * 1000.0),
            messages_to_server: self.metrics.messages_to_server,
            messages_to_client: self.metrics.messages_to_client,
            diverted_stdout_lines: self.metrics.diverted_stdout_lines,
            stderr_lines: self.tail.total(),
            errors: self.metrics.errors.values().sum(),
            protocol: status::Protocol {
                era: self.session.era().as_str().to_owned(),
                version: self.session.protocol_version(),
                server_name,
                server_version,
            },
            stderr_tail: if state == status::State::Ready { Vec::new() } else { self.tail.last(10) },
            share: None,
            clients: usize::from(!self.client.eof),
            processes: child.iter().map(|c| status::ProcessStatus::of(c, state, None)).collect(),
            spares: self.spare_statuses(now),
            standby_off: self.standby.off_because().map(str::to_owned),
            ..Status::for_server(&self.name, &self.cfg.spec)
        }
    }
}
