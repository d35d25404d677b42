//! Client batches: a JSON array of messages is taken apart (each member goes to the server on
//! its own, since current servers drop batches), and the answers are gathered here until every
//! request of the batch is answered, then sent to the client as one array, as JSON-RPC requires.
//!
//! A batch is *sealed* once all its members were handled; until then it is never complete, even
//! if every request so far was answered at once (refused, say), so no answer is sent early or
//! lost.

use std::collections::HashMap;

use bytes::Bytes;

use super::inflight::IdMap;
use crate::protocol::jsonrpc::Id;

#[derive(Debug, Default)]
struct Pending {
    /// Requests of the batch not answered yet.
    waiting: usize,
    answers: Vec<Bytes>,
    sealed: bool,
}

/// Open client batches, and which batch each request in flight belongs to.
#[derive(Debug, Default)]
pub struct Batches {
    open: HashMap<u64, Pending, foldhash::fast::RandomState>,
    batch_of: IdMap<u64>,
    next: u64,
}

/// Where an answer to a client request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// Not part of a batch: send it as it is.
    Alone(Bytes),
    /// Kept for its batch, which still waits for other answers.
    Held,
    /// It completed its batch: send this array.
    Batch(Bytes),
}

impl Batches {
    /// Whether no batch request is in flight (the common case: answers skip the lookup).
    pub fn is_empty(&self) -> bool {
        self.batch_of.is_empty()
    }

    /// Starts gathering a new batch; returns its number.
    pub fn open(&mut self) -> u64 {
        self.next += 1;
        self.open.insert(self.next, Pending::default());
        self.next
    }

    /// Request `id` of batch `number` will be answered later.
    pub fn expect(&mut self, number: u64, id: Id) {
        if let Some(batch) = self.open.get_mut(&number) {
            batch.waiting += 1;
            self.batch_of.insert(id, number);
        }
    }

    /// An answer that belongs to batch `number` but to no tracked request (an invalid member, a
    /// duplicate id).
    pub fn add(&mut self, number: u64, line: Bytes) {
        if let Some(batch) = self.open.get_mut(&number) {
            batch.answers.push(line);
        }
    }

    /// Routes the answer to request `id`.
    pub fn answer(&mut self, id: &Id, line: Bytes) -> Routed {
        let Some(number) = self.batch_of.remove(id) else { return Routed::Alone(line) };
        if let Some(batch) = self.open.get_mut(&number) {
            batch.waiting = batch.waiting.saturating_sub(1);
            batch.answers.push(line);
        }
        self.complete(number).map_or(Routed::Held, Routed::Batch)
    }

    /// Request `id` will never be answered (the client cancelled it before it reached the
    /// server): its batch stops waiting for it. Returns the batch's array if that completes it.
    pub fn forget(&mut self, id: &Id) -> Option<Bytes> {
        let number = self.batch_of.remove(id)?;
        if let Some(batch) = self.open.get_mut(&number) {
            batch.waiting = batch.waiting.saturating_sub(1);
        }
        self.complete(number)
    }

    /// Every member of batch `number` was handled. Returns its array if nothing is outstanding.
    pub fn seal(&mut self, number: u64) -> Option<Bytes> {
        if let Some(batch) = self.open.get_mut(&number) {
            batch.sealed = true;
        }
        self.complete(number)
    }

    /// Removes a sealed batch with nothing outstanding; its answers as one array, unless it had
    /// none (a batch of notifications gets no answer at all).
    fn complete(&mut self, number: u64) -> Option<Bytes> {
        if !self.open.get(&number).is_some_and(|b| b.sealed && b.waiting == 0) {
            return None;
        }
        let batch = self.open.remove(&number)?;
        if batch.answers.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(batch.answers.iter().map(|a| a.len() + 1).sum::<usize>() + 1);
        out.push(b'[');
        for (i, answer) in batch.answers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(answer);
        }
        out.push(b']');
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        Id::Int(n.into())
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn answers_are_gathered_until_the_last_one() {
        let mut batches = Batches::default();
        let n = batches.open();
        batches.expect(n, id(1));
        batches.expect(n, id(2));
        batches.add(n, b("bad"));
        assert_eq!(batches.seal(n), None);
        assert_eq!(batches.answer(&id(9), b("other")), Routed::Alone(b("other")));
        assert_eq!(batches.answer(&id(2), b("two")), Routed::Held);
        assert_eq!(batches.answer(&id(1), b("one")), Routed::Batch(b("[bad,two,one]")));
        assert!(batches.is_empty());
        assert_eq!(batches.answer(&id(1), b("late")), Routed::Alone(b("late")));
    }

    #[test]
    fn answers_made_before_the_batch_is_sealed_wait_for_the_rest() {
        let mut batches = Batches::default();
        let n = batches.open();
        batches.expect(n, id(1));
        // Refused at once, while later members are still being read.
        assert_eq!(batches.answer(&id(1), b("refused-1")), Routed::Held);
        batches.expect(n, id(2));
        assert_eq!(batches.answer(&id(2), b("refused-2")), Routed::Held);
        assert_eq!(batches.seal(n), Some(b("[refused-1,refused-2]")));
    }

    #[test]
    fn forgotten_requests_and_notification_batches() {
        let mut batches = Batches::default();
        let n = batches.open();
        batches.expect(n, id(1));
        batches.expect(n, id(2));
        assert_eq!(batches.seal(n), None);
        assert_eq!(batches.answer(&id(1), b("one")), Routed::Held);
        assert_eq!(batches.forget(&id(2)), Some(b("[one]")));
        let m = batches.open();
        assert_eq!(batches.seal(m), None, "only notifications: no answer at all");
        assert_eq!(batches.forget(&id(3)), None);
    }
}
