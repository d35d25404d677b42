//! Client messages that cannot go to the server yet: while it restarts (until the session is
//! rebuilt) or, with `--max-inflight`, while it already has as many requests as allowed. The
//! queue is bounded (`--queue-limit`) and keeps arrival order; notifications and responses wait
//! in line but never count against `--max-inflight`.

use std::collections::VecDeque;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::protocol::jsonrpc::Id;

/// A client message waiting for a server that can take it.
#[derive(Debug)]
pub struct Queued {
    pub line: Bytes,
    /// The requests the line carries, with their arrival numbers (empty for a notification or a
    /// response). Inline for the usual single request, so queueing does not allocate.
    pub requests: SmallVec<[(Id, u64); 1]>,
}

impl Queued {
    pub fn request(line: Bytes, id: Id, seq: u64) -> Queued {
        Queued { line, requests: smallvec::smallvec![(id, seq)] }
    }

    pub fn other(line: Bytes) -> Queued {
        Queued { line, requests: SmallVec::new() }
    }
}

#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Queued>,
    limit: usize,
    max_inflight: Option<usize>,
}

impl Queue {
    pub fn new(limit: usize, max_inflight: Option<usize>) -> Queue {
        Queue { items: VecDeque::new(), limit, max_inflight }
    }

    /// New limits (a reloaded configuration); what is queued stays.
    pub fn set_limits(&mut self, limit: usize, max_inflight: Option<usize>) {
        self.limit = limit;
        self.max_inflight = max_inflight;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.items.len() >= self.limit
    }

    /// Whether one more request may go to a server that owes `awaiting` answers.
    pub fn admits(&self, awaiting: usize) -> bool {
        self.max_inflight.map_or(true, |max| awaiting < max)
    }

    /// Whether a new message may skip the queue: nothing waits before it and the server has room.
    pub fn bypass(&self, awaiting: usize) -> bool {
        self.items.is_empty() && self.admits(awaiting)
    }

    /// Queues a message at the back; gives it back when the queue is full.
    pub fn push(&mut self, item: Queued) -> Result<(), Queued> {
        if self.is_full() {
            return Err(item);
        }
        self.items.push_back(item);
        Ok(())
    }

    /// Puts messages back at the front, in their order, whatever the limit (requests a dead server
    /// had, to be re-sent before anything that arrived later).
    pub fn requeue_front(&mut self, items: Vec<Queued>) {
        for item in items.into_iter().rev() {
            self.items.push_front(item);
        }
    }

    /// The next message that may go to a server owing `awaiting` answers, if any.
    pub fn pop_sendable(&mut self, awaiting: usize) -> Option<Queued> {
        let front = self.items.front()?;
        if front.requests.is_empty() || self.admits(awaiting) {
            self.items.pop_front()
        } else {
            None
        }
    }

    /// Empties the queue.
    pub fn take_all(&mut self) -> VecDeque<Queued> {
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(n: u64) -> Queued {
        Queued::request(Bytes::from(format!("r{n}")), Id::Int(n as i64), n)
    }

    #[test]
    fn keeps_order_and_its_limit() {
        let mut q = Queue::new(2, None);
        assert!(q.bypass(100));
        q.push(req(1)).expect("room");
        assert!(!q.bypass(0), "nothing overtakes a queued message");
        q.push(req(2)).expect("room");
        assert!(q.is_full());
        assert_eq!(q.push(req(3)).map_err(|item| item.line), Err(Bytes::from("r3")));
        q.requeue_front(vec![req(8), req(9)]);
        let order: Vec<Bytes> = std::iter::from_fn(|| q.pop_sendable(0)).map(|i| i.line).collect();
        assert_eq!(order, ["r8", "r9", "r1", "r2"].map(Bytes::from));
        assert!(q.is_empty());
    }

    #[test]
    fn max_inflight_holds_requests_but_not_notifications() {
        let mut q = Queue::new(10, Some(2));
        assert!(q.bypass(1));
        assert!(!q.bypass(2));
        q.push(Queued::other(Bytes::from("note"))).expect("room");
        q.push(req(1)).expect("room");
        assert_eq!(q.pop_sendable(2).map(|i| i.line), Some(Bytes::from("note")));
        assert!(q.pop_sendable(2).is_none(), "the server owes two answers already");
        assert_eq!(q.pop_sendable(1).map(|i| i.line), Some(Bytes::from("r1")));
        assert_eq!(q.take_all().len(), 0);
    }
}
