//! The in-flight tables: which requests are waiting for an answer, in each direction.
//!
//! Keys are exact JSON ids ([`Id`]); the client's ids are never rewritten. Requests mcpvisor sends
//! itself (liveness probes, session replay) use ids from [`OwnIds`], which carry a reserved prefix
//! and are checked against the client's table so they can never collide with a client id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use smol_str::SmolStr;

use crate::protocol::jsonrpc::Id;
use crate::protocol::method::MethodClass;

use super::id_table::IdTable;

/// A map keyed by request id. Every message does a lookup, and SipHash was a visible share of the
/// relay's time; foldhash is several times faster and still seeded per process, so ids chosen to
/// collide (the client and server are the user's own programs anyway) cannot be precomputed.
pub type IdMap<V> = HashMap<Id, V, foldhash::fast::RandomState>;
pub type IdSet = HashSet<Id, foldhash::fast::RandomState>;

/// A client request mcpvisor has accepted and not yet answered.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub method: SmolStr,
    /// What the bookkeeping needs to know about the method, told once.
    pub class: MethodClass,
    /// The request line, kept (a cheap shared reference) so it can be re-sent to a new child.
    /// `None` for members of a batch, which are never re-sent on their own.
    pub line: Option<Bytes>,
    /// Arrival order, used to re-send in the original order and to match queue entries.
    pub seq: u64,
    /// When it arrived, in [`Epoch::ticks`]; its deadline is this plus the table's timeout.
    pub received: u64,
    /// Whether the current child has been sent this request (false while it waits in the queue).
    pub sent: bool,
}

/// The instant a table counts time from, in nanoseconds: a request's arrival is stored as such a
/// count, so timing its answer is an integer subtraction (an `Instant` subtraction per response
/// was about 2 % of the relay's work).
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    pub fn new(at: Instant) -> Epoch {
        Epoch(at)
    }

    /// Nanoseconds from the epoch to `at` (0 before it).
    pub fn ticks(self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn instant(self, ticks: u64) -> Instant {
        self.0 + Duration::from_nanos(ticks)
    }
}

impl Default for Epoch {
    fn default() -> Epoch {
        Epoch(Instant::now())
    }
}

/// Client requests in flight, with an index of their deadlines and a count of those the child owes.
///
/// An entry is written for every request and read back for its response: it is kept small (the
/// deadline is computed from the arrival and the table's timeout, not stored) so that it moves
/// as a few vector stores rather than a call to `memcpy`.
#[derive(Debug, Default)]
pub struct ClientTable {
    map: IdTable<ClientRequest>,
    /// `--request-timeout`: a request's deadline is its arrival plus this.
    timeout: Option<Duration>,
    epoch: Epoch,
    /// In-flight requests by (deadline in ticks, arrival number).
    deadlines: BTreeMap<(u64, u64), Id>,
    /// How many entries are sent and not open subscriptions (see [`Self::awaiting_child`]).
    awaiting: usize,
}

/// What the relay needs of a request when its answer comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub class: MethodClass,
    /// When it arrived, in [`Epoch::ticks`].
    pub received: u64,
}

/// What the table's indexes hold of a request: added when it is inserted, taken away when it
/// leaves.
#[derive(Clone, Copy)]
struct Indexed {
    /// Its deadline in ticks (`None` without a timeout), keyed with `seq` in `deadlines`.
    deadline: Option<u64>,
    seq: u64,
    /// Whether it is counted in `awaiting`.
    owed: bool,
}

impl Indexed {
    fn of(req: &ClientRequest, timeout: Option<Duration>) -> Indexed {
        let deadline = timeout.map(|t| req.received.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)));
        Indexed { deadline, seq: req.seq, owed: owed(req) }
    }
}

/// Whether a request counts as one the child is working on.
fn owed(req: &ClientRequest) -> bool {
    req.sent && req.class != MethodClass::Listen
}

impl ClientTable {
    /// A table whose requests time out `timeout` after they arrive (`None`: never), with arrivals
    /// counted from `epoch`.
    pub fn new(timeout: Option<Duration>, epoch: Epoch) -> ClientTable {
        ClientTable { timeout, epoch, ..ClientTable::default() }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Inserts a request, replacing any under the same id.
    pub fn insert(&mut self, id: Id, req: ClientRequest) {
        self.remove(&id);
        // The id is free now: this cannot hand the request back.
        let _ = self.try_insert(id, req);
    }

    /// Inserts a request under an id that is not in the table, else hands the request back.
    pub fn try_insert(&mut self, id: Id, req: ClientRequest) -> Result<(), ClientRequest> {
        let indexed = Indexed::of(&req, self.timeout);
        let key = indexed.deadline.map(|d| ((d, indexed.seq), id.clone()));
        self.map.try_insert(id, req)?;
        if let Some((at, id)) = key {
            self.deadlines.insert(at, id);
        }
        self.awaiting += usize::from(indexed.owed);
        Ok(())
    }

    pub fn remove(&mut self, id: &Id) -> Option<ClientRequest> {
        let req = self.map.remove(id)?;
        self.forget(Indexed::of(&req, self.timeout));
        Some(req)
    }

    /// Removes the request `id` that was just answered: what timing the answer and the session
    /// need of it. (Every response takes this path: the entry is dropped in place, not moved out.)
    pub fn answered(&mut self, id: &Id) -> Option<Answered> {
        let timeout = self.timeout;
        let (answered, indexed) = self.map.remove_with(id, |req| {
            (Answered { class: req.class, received: req.received }, Indexed::of(req, timeout))
        })?;
        self.forget(indexed);
        Some(answered)
    }

    #[inline(always)]
    fn forget(&mut self, indexed: Indexed) {
        if let Some(d) = indexed.deadline {
            self.deadlines.remove(&(d, indexed.seq));
        }
        self.awaiting -= usize::from(indexed.owed);
    }

    pub fn get(&self, id: &Id) -> Option<&ClientRequest> {
        self.map.get(id)
    }

    /// Records that request `id` (the one that arrived as number `seq`) went to the child.
    pub fn mark_sent(&mut self, id: &Id, seq: u64) {
        if let Some(req) = self.map.get_mut(id).filter(|r| r.seq == seq && !r.sent) {
            req.sent = true;
            self.awaiting += usize::from(owed(req));
        }
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.map.contains(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Requests the child has been sent and still owes an answer, excluding open subscriptions.
    pub fn awaiting_child(&self) -> usize {
        self.awaiting
    }

    /// The earliest request deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(d, _)| self.epoch.instant(*d))
    }

    /// Removes and returns the requests whose deadline has passed.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(Id, ClientRequest)> {
        let now = self.epoch.ticks(now);
        let mut out = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            if let Some(req) = self.map.remove(&id) {
                self.awaiting -= usize::from(owed(&req));
                out.push((id, req));
            }
        }
        out
    }

    /// Removes and returns every request the child had been sent, oldest first.
    pub fn take_sent(&mut self) -> Vec<(Id, ClientRequest)> {
        let ids: Vec<Id> = self.map.iter().filter(|(_, r)| r.sent).map(|(id, _)| id).collect();
        let mut out: Vec<(Id, ClientRequest)> =
            ids.into_iter().filter_map(|id| self.remove(&id).map(|r| (id, r))).collect();
        out.sort_by_key(|(_, r)| r.seq);
        out
    }

    /// Removes and returns every request.
    pub fn take_all(&mut self) -> Vec<(Id, ClientRequest)> {
        self.deadlines.clear();
        self.awaiting = 0;
        let mut out = self.map.drain();
        out.sort_by_key(|(_, r)| r.seq);
        out
    }
}

/// A request the child sent to the client, waiting for the client's answer.
#[derive(Debug, Clone)]
pub struct ServerRequest {
    pub method: SmolStr,
}

/// Why mcpvisor sent a request of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnPurpose {
    /// A liveness probe sent at this instant.
    Probe(Instant),
    /// The replayed `initialize` of a session rebuild.
    ReplayInitialize,
    /// Another replayed call (`logging/setLevel`, `resources/subscribe`).
    Replay,
}

/// Ids for mcpvisor's own requests: `"mcpvisor-<n>"`.
#[derive(Debug, Default)]
pub struct OwnIds {
    next: u64,
    pending: IdMap<OwnPurpose>,
}

pub const OWN_ID_PREFIX: &str = "mcpvisor-";

impl OwnIds {
    /// A fresh id that is not in flight from the client either.
    pub fn issue(&mut self, purpose: OwnPurpose, client: &ClientTable) -> Id {
        loop {
            self.next += 1;
            let id = Id::string(format!("{OWN_ID_PREFIX}{}", self.next));
            if !client.contains(&id) && !self.pending.contains_key(&id) {
                self.pending.insert(id.clone(), purpose);
                return id;
            }
        }
    }

    /// If `id` is one of ours, forgets it and says what it was for.
    pub fn take(&mut self, id: &Id) -> Option<OwnPurpose> {
        if !Self::may_be_own(id) {
            return None;
        }
        self.pending.remove(id)
    }

    pub fn contains(&self, id: &Id) -> bool {
        Self::may_be_own(id) && self.pending.contains_key(id)
    }

    /// Every response is checked against this table; most ids are not mcpvisor's own, and a look
    /// at the prefix settles that without hashing.
    fn may_be_own(id: &Id) -> bool {
        matches!(id, Id::String(s) if s.starts_with(OWN_ID_PREFIX))
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets everything sent to a child that is gone.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(seq: u64, received_ms: u64, sent: bool) -> ClientRequest {
        ClientRequest {
            method: "x".into(),
            class: MethodClass::Other,
            line: None,
            seq,
            received: received_ms * 1_000_000,
            sent,
        }
    }

    #[test]
    fn counts_what_the_child_owes() {
        let epoch = Instant::now();
        let mut t = ClientTable::new(Some(Duration::from_secs(1)), Epoch::new(epoch));
        t.insert(Id::string("a"), req(1, 0, false));
        t.insert(Id::string("b"), req(2, 1500, true));
        assert_eq!(t.awaiting_child(), 1);
        t.mark_sent(&Id::string("a"), 1);
        t.mark_sent(&Id::string("a"), 1);
        assert_eq!(t.awaiting_child(), 2);
        assert_eq!(t.take_expired(epoch + Duration::from_secs(2)).len(), 1);
        assert_eq!(t.awaiting_child(), 1);
        t.insert(Id::string("b"), req(3, 1500, false));
        assert_eq!(t.try_insert(Id::string("b"), req(4, 1500, true)).map_err(|r| r.seq), Err(4));
        assert_eq!(t.awaiting_child(), 0);
        t.remove(&Id::string("b"));
        assert_eq!((t.awaiting_child(), t.len()), (0, 0));
    }

    #[test]
    fn deadlines_expire_in_order_and_follow_removal() {
        let epoch = Instant::now();
        let mut t = ClientTable::new(Some(Duration::from_secs(1)), Epoch::new(epoch));
        t.insert(Id::string("a"), req(1, 1000, true));
        t.insert(Id::string("b"), req(2, 0, true));
        t.insert(Id::string("c"), req(3, 10_000, true));
        assert_eq!(t.next_deadline(), Some(epoch + Duration::from_secs(1)));
        t.remove(&Id::string("b"));
        assert_eq!(t.next_deadline(), Some(epoch + Duration::from_secs(2)));
        let expired = t.take_expired(epoch + Duration::from_secs(5));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, Id::string("a"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_answered_request_leaves_the_table_its_deadline_and_the_count() {
        let epoch = Instant::now();
        let mut t = ClientTable::new(Some(Duration::from_secs(1)), Epoch::new(epoch));
        t.insert(Id::Int(1), req(1, 5, true));
        t.insert(Id::string("b"), req(2, 7, true));
        let answered = t.answered(&Id::Int(1));
        assert_eq!(answered, Some(Answered { class: MethodClass::Other, received: 5_000_000 }));
        assert_eq!((t.awaiting_child(), t.len()), (1, 1));
        assert_eq!(t.next_deadline(), Some(epoch + Duration::from_millis(1007)));
        assert_eq!(t.answered(&Id::Int(1)), None);
        assert_eq!(t.answered(&Id::string("b")).map(|a| a.received), Some(7_000_000));
        assert_eq!((t.awaiting_child(), t.len(), t.next_deadline()), (0, 0, None));
    }

    #[test]
    fn take_sent_leaves_queued_requests_and_keeps_order() {
        let mut t = ClientTable::default();
        t.insert(Id::Int(3), req(3, 0, true));
        t.insert(Id::Int(1), req(1, 0, true));
        t.insert(Id::Int(2), req(2, 0, false));
        let sent: Vec<u64> = t.take_sent().into_iter().map(|(_, r)| r.seq).collect();
        assert_eq!(sent, vec![1, 3]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn own_ids_avoid_client_ids() {
        let mut client = ClientTable::default();
        client.insert(Id::string("mcpvisor-1"), req(1, 0, true));
        let mut own = OwnIds::default();
        let id = own.issue(OwnPurpose::Replay, &client);
        assert_eq!(id, Id::string("mcpvisor-2"));
        assert_eq!(own.take(&id), Some(OwnPurpose::Replay));
        assert_eq!(own.take(&id), None);
    }
}
