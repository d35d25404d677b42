//! Client → server: every frame from the client port is read once, checked, recorded where it
//! must be (requests in the in-flight table, batches, the session record), then sent to the
//! server at once, queued behind a restart or `--max-inflight`, or answered by mcpvisor itself
//! when it cannot be taken.

use bytes::Bytes;
use smol_str::SmolStr;

use super::Instance;
use crate::io::Outgoing;
use crate::port::ClientInput;
use crate::protocol::errors::OwnError;
use crate::protocol::framing::{Frame, LineRef};
use crate::protocol::json_scan::Fields;
use crate::protocol::jsonrpc::{self, Envelope, Id, Json, Kind, Message, Params};
use crate::protocol::method::MethodClass;
use crate::relay::batch::Routed;
use crate::relay::inflight::ClientRequest;
use crate::relay::queue::Queued;

impl<I: ClientInput> Instance<I> {
    pub(super) fn on_client_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Line(line) => self.on_client_line(LineRef::whole(&line)),
            Frame::Oversized { len, head } => {
                self.metrics.oversized_messages += 1;
                let id = jsonrpc::sniff_id(&head);
                if let Some(id) = &id {
                    self.client_reqs.remove(id);
                }
                tracing::warn!(len, id = ?id.as_ref().map(Id::to_json), "client message over --max-message-size skipped");
                let error = OwnError::TooLarge { size: len, limit: self.cfg.max_message_size };
                self.reply_error(id.as_ref(), &error);
            }
        }
    }

    /// A client line, owned by a frame or lent from the read buffer.
    pub(super) fn on_client_line(&mut self, line: LineRef<'_>) {
        match jsonrpc::parse(&line) {
            Err(e) => {
                tracing::warn!("client sent a line that is not JSON ({e}): {}", super::preview(&line));
                self.reply_error(None, &OwnError::Parse { detail: e.to_string() });
            }
            Ok(Message::Single(env)) => self.on_client_message(env, line),
            Ok(Message::Batch(items)) => self.on_client_batch(items, line),
        }
    }

    /// A lent client line that is one object, with the fields its scan found. (Classified here,
    /// where the envelope is taken apart, so that it is never written out for the call.)
    pub(super) fn on_client_object(&mut self, fields: &Fields<'_>, line: LineRef<'_>) {
        self.on_client_message(jsonrpc::classify(fields), line);
    }

    /// A client line that is one message (lent already scanned, or parsed from a line).
    #[inline(always)]
    pub(super) fn on_client_message(&mut self, env: Envelope<'_>, line: LineRef<'_>) {
        match env.kind {
            Kind::Request { id, method, class } => self.take_client_request(id, method, class, env.params, line),
            Kind::Notification { method } => self.on_client_notification(&method, env.params, line),
            Kind::Response { id, .. } => self.on_client_response(&id, line),
            Kind::Invalid { id, reason } => {
                tracing::warn!("client sent an invalid JSON-RPC message ({reason}): {}", super::preview(&line));
                self.reply_error(id.as_ref(), &OwnError::Invalid { detail: reason });
            }
        }
    }

    /// A batch is taken apart: each member goes to the server as a message of its own (servers of
    /// the 2025-06-18 protocol no longer accept batches), invalid members are answered here, and
    /// the answers are gathered into one array for the client, as JSON-RPC requires.
    fn on_client_batch(&mut self, items: Vec<Envelope<'_>>, line: LineRef<'_>) {
        if items.is_empty() {
            tracing::warn!("client sent an empty batch");
            self.reply_error(None, &OwnError::EmptyBatch);
            return;
        }
        let number = self.batches.open();
        for env in items {
            // A member is a part of the line (the scanner cut it from there).
            let member = line.part(env.raw.as_bytes()).unwrap_or(line);
            match env.kind {
                Kind::Request { id, method, class } => {
                    // Checked before the id is mapped to this batch, which would take it from the
                    // request already in flight under it.
                    if self.id_in_flight(&id) {
                        let error = self.duplicate_id_error(&id);
                        self.batches.add(number, error);
                        continue;
                    }
                    self.batches.expect(number, id.clone());
                    self.take_client_request(id, method, class, env.params, member);
                }
                Kind::Notification { method } => self.on_client_notification(&method, env.params, member),
                Kind::Response { id, .. } => self.on_client_response(&id, member),
                Kind::Invalid { id, reason } => {
                    let error = self.own_error_line(id.as_ref(), &OwnError::Invalid { detail: reason });
                    self.batches.add(number, error);
                }
            }
        }
        if let Some(array) = self.batches.seal(number) {
            self.send_to_client(array);
        }
    }

    /// Records a client request and sends it on, or queues it; answers it at once if it cannot be
    /// taken. The common case, a ready server and nothing queued, skips the queue's bookkeeping,
    /// and the id is looked up once: its check and its entry are one table operation.
    #[inline(always)]
    fn take_client_request(
        &mut self,
        id: Id,
        method: SmolStr,
        class: MethodClass,
        params: Option<Json<'_>>,
        line: LineRef<'_>,
    ) {
        if let Some(refusal) = self.refusal() {
            if self.id_in_flight(&id) {
                let error = self.duplicate_id_error(&id);
                self.send_to_client(error);
            } else {
                self.reply_error(Some(&id), &refusal);
            }
            return;
        }
        let send_now = self.can_send_now();
        let request = ClientRequest {
            method,
            class,
            line: self.may_resend(class).then(|| retained(line)),
            seq: self.seq + 1,
            received: self.now_ticks(),
            sent: send_now,
        };
        let own_id = !self.own.is_empty() && self.own.contains(&id);
        if own_id || self.client_reqs.try_insert(id.clone(), request).is_err() {
            let error = self.duplicate_id_error(&id);
            self.send_to_client(error);
            return;
        }
        if self.session.notes_request(class) {
            self.session.on_client_request(&id, class, params);
        }
        if class == MethodClass::Initialize && !self.spares.is_empty() {
            // The client starts its session over: spares warmed for the old one cannot serve it.
            self.stop_spares(false);
        }
        self.metrics.requests += 1;
        self.seq += 1;
        if send_now {
            self.send_to_child(line);
        } else {
            self.dispatch(Queued::request(line.to_bytes(), id, self.seq));
        }
    }

    /// Whether a client id is taken: by a client request in flight, or by one of mcpvisor's own.
    fn id_in_flight(&self, id: &Id) -> bool {
        self.client_reqs.contains(id) || (!self.own.is_empty() && self.own.contains(id))
    }

    /// The answer to a request that reuses an id in flight. It is never routed by id (that would
    /// reach the request already holding the id), so the caller sends it where it belongs.
    fn duplicate_id_error(&mut self, id: &Id) -> Bytes {
        tracing::warn!(%id, "client reused an id that is still in flight");
        self.own_error_line(Some(id), &OwnError::DuplicateId { id: id.clone() })
    }

    /// Why a new request cannot be taken right now, if it cannot.
    fn refusal(&mut self) -> Option<OwnError> {
        if self.life.shutting_down() || self.client.eof {
            return Some(OwnError::NotDelivered);
        }
        let until = self.life.failed_until()?;
        Some(self.restart_limit_error(until))
    }

    fn on_client_notification(&mut self, method: &str, params: Option<Json<'_>>, line: LineRef<'_>) {
        self.session.on_client_notification(method);
        if method == "notifications/cancelled" {
            if let Some(target) = Params::read(params.map(Json::get)).request_id() {
                // A cancelled request gets no answer, so its batch stops waiting for one.
                let removed = self.client_reqs.remove(&target);
                if removed.is_some() {
                    if let Some(array) = self.batches.forget(&target) {
                        self.send_to_client(array);
                    }
                }
                if removed.is_some_and(|req| !req.sent) {
                    tracing::debug!(id = %target, "client cancelled a request that had not reached the server");
                    return;
                }
            }
        }
        if self.life.failed_until().is_some() {
            tracing::warn!(method, "server is failed; client notification dropped");
            return;
        }
        self.dispatch(Queued::other(line.to_bytes()));
    }

    fn on_client_response(&mut self, id: &Id, line: LineRef<'_>) {
        if self.server_reqs.remove(id).is_some() {
            self.send_to_child(line);
        } else if self.orphaned_server_reqs.remove(id) {
            tracing::debug!(%id, "dropping the client's late answer to a request from a server process that is gone");
        } else {
            tracing::debug!(%id, "client answered an unknown request; forwarding it");
            self.dispatch(Queued::other(line.to_bytes()));
        }
    }

    /// Whether a client message can go to the server at once (not queued behind a restart, nor
    /// over `--max-inflight`).
    fn can_send_now(&self) -> bool {
        self.life.is_ready() && self.queue.bypass(self.client_reqs.awaiting_child())
    }

    /// Sends a client message to the server now, or queues it (while the server restarts, or
    /// over `--max-inflight`).
    fn dispatch(&mut self, item: Queued) {
        if self.can_send_now() {
            self.deliver(item);
            return;
        }
        if let Err(item) = self.queue.push(item) {
            tracing::warn!(limit = self.cfg.queue_limit, "restart queue is full; message refused");
            self.refuse_queued([item], &OwnError::QueueFull { limit: self.cfg.queue_limit });
        }
    }

    fn deliver(&mut self, item: Queued) {
        if !item.requests.is_empty() && !item.requests.iter().any(|(id, seq)| self.is_current(id, *seq)) {
            return; // every request in it was cancelled or timed out while it waited
        }
        for (id, seq) in &item.requests {
            self.client_reqs.mark_sent(id, *seq);
        }
        self.send_to_child(item.line);
    }

    /// Sends queued messages in order, as far as `--max-inflight` allows.
    pub(super) fn flush_queue(&mut self) {
        while let Some(item) = self.queue.pop_sendable(self.client_reqs.awaiting_child()) {
            self.deliver(item);
        }
    }

    /// Answers the requests of messages that will never be sent with `error`.
    pub(super) fn refuse_queued(&mut self, items: impl IntoIterator<Item = Queued>, error: &OwnError) {
        for item in items {
            for (id, seq) in item.requests {
                if self.take_if_current(&id, seq).is_some() {
                    self.reply_error(Some(&id), error);
                }
            }
        }
    }

    fn is_current(&self, id: &Id, seq: u64) -> bool {
        self.client_reqs.get(id).is_some_and(|r| r.seq == seq)
    }

    fn take_if_current(&mut self, id: &Id, seq: u64) -> Option<ClientRequest> {
        if self.is_current(id, seq) {
            self.client_reqs.remove(id)
        } else {
            None
        }
    }

    /// Whether a request with this method is re-sent to a new server if the current one dies
    /// with it. Only those keep their line while in flight.
    pub(super) fn may_resend(&self, class: MethodClass) -> bool {
        class.always_resent() || (self.cfg.retry && class.is_safe_to_repeat())
    }

    pub(super) fn send_to_child(&mut self, line: impl Outgoing) {
        if let Some(stdin) = &mut self.child_in {
            if stdin.send(line) {
                self.metrics.messages_to_server += 1;
            }
        }
    }

    // ----- answers to the client ---------------------------------------------------------

    pub(super) fn send_to_client(&mut self, line: impl Outgoing) {
        if self.client.output.send(line) {
            self.metrics.messages_to_client += 1;
        }
    }

    /// Sends the answer to a client request, or keeps it for the batch the request came in.
    pub(super) fn answer(&mut self, id: &Id, line: impl Outgoing) {
        if self.batches.is_empty() {
            self.send_to_client(line);
            return;
        }
        match self.batches.answer(id, line.into_shared()) {
            Routed::Alone(line) | Routed::Batch(line) => self.send_to_client(line),
            Routed::Held => {}
        }
    }

    /// Answers request `id` (or, with `None`, a message whose id could not be read) with one of
    /// mcpvisor's own errors.
    pub(super) fn reply_error(&mut self, id: Option<&Id>, error: &OwnError) {
        let line = self.own_error_line(id, error);
        match id {
            Some(id) => self.answer(id, line),
            None => self.send_to_client(line),
        }
    }

    /// One of mcpvisor's own errors as a response line, counted by its reason.
    pub(super) fn own_error_line(&mut self, id: Option<&Id>, error: &OwnError) -> Bytes {
        *self.metrics.errors.entry(error.reason()).or_default() += 1;
        error.response(id)
    }
}

/// A request line kept for re-sending. A small line is copied: sharing it would keep the whole
/// read buffer it was cut from (64 KiB or more) alive for as long as the request is in flight.
fn retained(line: LineRef<'_>) -> Bytes {
    if line.len() < 16 * 1024 {
        Bytes::copy_from_slice(&line)
    } else {
        line.to_bytes()
    }
}
