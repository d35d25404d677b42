//! Server → client: every line on the server's stdout is checked; protocol messages go to the
//! client (answers through the batch they belong to), answers to mcpvisor's own requests
//! (probes, the replayed handshake) are consumed, and anything else is diverted to the log,
//! failing the request it names if it names one. Also here: the checks that watch the server
//! (liveness probes, `--max-memory`, `--request-timeout`).

use std::time::Instant;

use super::{Instance, MEMORY_CHECK};
use crate::lifecycle::liveness::Check;
use crate::lifecycle::Cause;
use crate::port::ClientInput;
use crate::protocol::errors::OwnError;
use crate::protocol::framing::{Frame, LineRef};
use crate::protocol::json_scan::Fields;
use crate::protocol::jsonrpc::{self, Envelope, Id, Json, Kind, Message};
use crate::relay::inflight::{OwnPurpose, ServerRequest};
use crate::relay::session::Session;

impl<I: ClientInput> Instance<I> {
    pub(super) fn on_child_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Line(line) => self.on_child_line(LineRef::whole(&line)),
            Frame::Oversized { len, head } => {
                self.liveness.output(self.now);
                self.metrics.oversized_messages += 1;
                tracing::warn!(len, "server wrote a line over --max-message-size; dropped: {}", super::preview(&head));
                if let Some(id) = jsonrpc::sniff_id(&head) {
                    if let Some(req) = self.client_reqs.remove(&id) {
                        let limit = self.cfg.max_message_size;
                        self.reply_error(
                            Some(&id),
                            &OwnError::ResponseTooLarge { method: req.method, size: len, limit },
                        );
                    }
                }
            }
        }
    }

    /// A server line, owned by a frame or lent from the read buffer.
    pub(super) fn on_child_line(&mut self, line: LineRef<'_>) {
        // (A single message notes it again in `on_child_message`: the same instant, stored.)
        self.liveness.output(self.now);
        match jsonrpc::parse(&line) {
            Ok(Message::Single(env)) => self.on_child_message(env, line),
            Ok(Message::Batch(items)) => {
                if items.iter().all(|e| matches!(e.kind, Kind::Invalid { .. })) {
                    self.divert(&line, None);
                    return;
                }
                for env in items {
                    match env.kind {
                        Kind::Response { id, .. } => {
                            self.client_reqs.remove(&id);
                        }
                        Kind::Request { id, method, .. } => {
                            self.server_reqs.insert(id, ServerRequest { method });
                        }
                        _ => {}
                    }
                }
                self.send_to_client(line);
            }
            Err(_) => {
                // A broken response must not leave its request hanging: if it names one, fail it.
                let id = (line.first() == Some(&b'{')).then(|| jsonrpc::sniff_id(&line)).flatten();
                self.divert(&line, id);
            }
        }
    }

    /// A lent server line that is one object, with the fields its scan found (classified here, as
    /// [`Self::on_client_object`] does).
    pub(super) fn on_child_object(&mut self, fields: &Fields<'_>, line: LineRef<'_>) {
        self.on_child_message(jsonrpc::classify(fields), line);
    }

    /// A server line that is one message (lent already scanned, or parsed from a line).
    #[inline(always)]
    pub(super) fn on_child_message(&mut self, env: Envelope<'_>, line: LineRef<'_>) {
        self.liveness.output(self.now);
        match env.kind {
            Kind::Response { id, is_error } => self.on_child_response(&id, is_error, env.result, line),
            Kind::Request { id, method, .. } => {
                self.orphaned_server_reqs.remove(&id);
                self.server_reqs.insert(id, ServerRequest { method });
                self.send_to_client(line);
            }
            Kind::Notification { .. } => self.send_to_client(line),
            Kind::Invalid { id, .. } => self.divert(&line, id),
        }
    }

    fn on_child_response(&mut self, id: &Id, is_error: bool, result: Option<Json<'_>>, line: LineRef<'_>) {
        if let Some(purpose) = self.own.take(id) {
            self.on_own_response(purpose, is_error, result.map(Json::get));
            return;
        }
        match self.client_reqs.answered(id) {
            Some(req) => {
                if !is_error && Session::keeps_result(req.class) {
                    self.session.on_child_result(id, req.class, result);
                }
                let latency = self.now_ticks().saturating_sub(req.received);
                self.metrics.latency.observe_nanos(latency);
                self.answer(id, line);
            }
            None => {
                tracing::debug!(%id, "dropping a server response with no request in flight (answered, cancelled or timed out)")
            }
        }
    }

    fn on_own_response(&mut self, purpose: OwnPurpose, is_error: bool, result: Option<&str>) {
        match purpose {
            OwnPurpose::Probe(sent) => {
                let latency = self.liveness.answered(Instant::now(), sent);
                tracing::debug!(latency_ms = latency.as_millis() as u64, "liveness probe answered");
            }
            OwnPurpose::ReplayInitialize => {
                if is_error {
                    let detail = result.unwrap_or_default().to_owned();
                    tracing::warn!("the new server refused the replayed initialize: {detail}");
                    self.crash(Cause::RebuildFailed(format!("initialize refused: {detail}")));
                    return;
                }
                if let Some(diff) = self.session.compare_initialize_result(result) {
                    tracing::warn!("the restarted server differs from the one the client initialized: {diff}");
                }
                let (own, reqs) = (&mut self.own, &self.client_reqs);
                let followups = self.session.replay_after_initialize(|| own.issue(OwnPurpose::Replay, reqs));
                for line in followups {
                    self.send_to_child(line);
                }
                tracing::info!(generation = self.life.generation(), "session rebuilt on the new server");
                self.become_ready(true);
            }
            OwnPurpose::Replay => {
                if is_error {
                    tracing::warn!("the new server refused a replayed call: {}", result.unwrap_or(""));
                }
            }
        }
    }

    /// Logs a server stdout line that is not valid JSON-RPC instead of forwarding it. If it names
    /// a request the client is waiting for (a malformed response), the client gets an error.
    fn divert(&mut self, line: &[u8], id: Option<Id>) {
        self.metrics.diverted_stdout_lines += 1;
        tracing::warn!(
            target: "mcpvisor::child",
            generation = self.life.generation(),
            "stdout (not JSON-RPC, diverted): {}",
            super::preview(line)
        );
        if let Some((id, req)) = id.and_then(|id| self.client_reqs.remove(&id).map(|r| (id, r))) {
            self.reply_error(Some(&id), &OwnError::InvalidResponse { method: req.method });
        }
    }

    // ----- watching the server -----------------------------------------------------------

    /// Whether liveness probes may go out: the server is serving and the session established.
    pub(super) fn probing(&self) -> bool {
        self.life.is_serving() && self.session.established()
    }

    pub(super) fn check_liveness(&mut self, now: Instant) {
        match self.liveness.check(now, self.probing()) {
            Check::Quiet => {}
            Check::Hung => {
                tracing::error!(
                    "server is hung: {} probes in a row went unanswered; restarting it",
                    self.liveness.misses()
                );
                self.crash(Cause::Hung);
            }
            Check::Probe => {
                let id = self.own.issue(OwnPurpose::Probe(now), &self.client_reqs);
                if let Some(probe) = self.session.probe(&id) {
                    self.send_to_child(probe);
                    self.liveness.probe_sent(now);
                }
            }
        }
    }

    /// `--max-memory`: a server whose process group holds more is stopped and restarted.
    pub(super) fn check_memory(&mut self, now: Instant) {
        let (Some(at), Some(limit)) = (self.memory_check_at, self.cfg.max_memory) else { return };
        if now < at {
            return;
        }
        self.memory_check_at = Some(now + MEMORY_CHECK);
        let Some(pid) = self.life.child().map(|c| c.pid).filter(|_| self.life.is_up()) else { return };
        // Spares count too: they are the server's memory as much as the active process is.
        let rss = crate::process::procfs::group_rss_bytes(pid) + self.spares_rss();
        if rss > limit as u64 {
            tracing::warn!(
                generation = self.life.generation(),
                rss_mib = rss >> 20,
                limit_mib = limit >> 20,
                "server is over --max-memory; restarting it"
            );
            self.memory_check_at = None;
            self.crash(Cause::Memory { rss, limit: limit as u64 });
        }
    }

    /// `--request-timeout`: answers overdue requests and tells the server to stop working on them.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        for (id, req) in self.client_reqs.take_expired(now) {
            let after = self.cfg.request_timeout.unwrap_or_default();
            let error = OwnError::Timeout { method: req.method.clone(), after };
            tracing::warn!(%id, method = &*req.method, "request timed out after {}", crate::config::units::format_duration(after));
            if req.sent {
                self.send_to_child(jsonrpc::cancelled(&id, "mcpvisor: request timed out"));
            }
            self.reply_error(Some(&id), &error);
        }
    }
}
