//! A map keyed by request id that keeps consecutive integer ids in a sliding window of slots.
//!
//! Every client request is inserted and every response removed, and nearly every client numbers
//! its requests 1, 2, 3…: in a hash map each of those was a hash, a probe and a move of the entry,
//! about 180 instructions each way, a tenth of the relay's work per message. Here an integer id
//! at or just past the window's end takes the slot `id - base`; the window slides forward as its
//! oldest slots empty. A request left behind (a long call, an open subscription) is moved to the
//! hash map when the window would otherwise grow past [`MAX_SLOTS`], so one laggard never pins
//! it. Every other id (strings, integers far outside the window) lives in the map.
//!
//! An integer id inside the window's range may still be in the map (it was put there before the
//! window reached it): lookups try the slot, then the map; an insert checks both.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;

use crate::protocol::jsonrpc::Id;

use super::inflight::IdMap;

/// The window's longest extent. Pipes hold a few thousand small messages, so this many requests can
/// be in flight at once in a burst; past it, the oldest move to the map.
pub const MAX_SLOTS: usize = 16 * 1024;

/// An integer id more than this far past the window's end goes to the map: a client that numbers
/// its requests from two far-apart ranges would otherwise empty the window at every switch.
const MAX_GAP: usize = 64;

/// A map from [`Id`] to `V`; see the module documentation.
#[derive(Debug)]
pub struct IdTable<V> {
    /// The id of the first slot.
    base: i64,
    slots: VecDeque<Option<V>>,
    /// How many slots are occupied.
    in_slots: usize,
    map: IdMap<V>,
    /// [`MAX_SLOTS`], smaller in tests.
    max_slots: usize,
}

impl<V> Default for IdTable<V> {
    fn default() -> IdTable<V> {
        IdTable::with_max_slots(MAX_SLOTS)
    }
}

impl<V> IdTable<V> {
    fn with_max_slots(max_slots: usize) -> IdTable<V> {
        IdTable { base: 0, slots: VecDeque::new(), in_slots: 0, map: IdMap::default(), max_slots }
    }

    /// How far integer id `n` is past the window's first id (`None` before it).
    fn offset(&self, n: i64) -> Option<usize> {
        usize::try_from(n.checked_sub(self.base)?).ok()
    }

    /// The slot of integer id `n`, if the window covers it.
    fn slot_of(&self, n: i64) -> Option<usize> {
        self.offset(n).filter(|&offset| offset < self.slots.len())
    }

    pub fn get(&self, id: &Id) -> Option<&V> {
        if let Id::Int(n) = id {
            if let Some(value) = self.slot_of(*n).and_then(|i| self.slots.get(i)?.as_ref()) {
                return Some(value);
            }
        }
        if self.map.is_empty() {
            return None;
        }
        self.map.get(id)
    }

    pub fn get_mut(&mut self, id: &Id) -> Option<&mut V> {
        if let Id::Int(n) = id {
            if let Some(i) = self.slot_of(*n).filter(|&i| matches!(self.slots.get(i), Some(Some(_)))) {
                return self.slots.get_mut(i)?.as_mut();
            }
        }
        self.map.get_mut(id)
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    /// Inserts `value` under an id that is not in the table, else hands it back. Any other id than
    /// an integer is looked up once, its check and its insert one operation on the map.
    pub fn try_insert(&mut self, id: Id, value: V) -> Result<(), V> {
        let Id::Int(n) = id else {
            return match self.map.entry(id) {
                Entry::Occupied(_) => Err(value),
                Entry::Vacant(slot) => {
                    slot.insert(value);
                    Ok(())
                }
            };
        };
        // The usual case: the id after the window's last, with room, and nothing in the map that
        // could hold it (its slot does not exist yet, so only the map could).
        if self.offset(n) == Some(self.slots.len()) && self.slots.len() < self.max_slots && self.map.is_empty() {
            self.slots.push_back(Some(value));
            self.in_slots += 1;
            return Ok(());
        }
        if self.contains(&id) {
            return Err(value);
        }
        if let Err(value) = self.insert_in_window(n, value) {
            self.map.insert(id, value);
        }
        Ok(())
    }

    /// Puts `value` in integer id `n`'s slot (known to be free), sliding the window if needed, or
    /// hands it back when `n` is outside the window's reach.
    fn insert_in_window(&mut self, n: i64, value: V) -> Result<(), V> {
        if self.in_slots == 0 {
            self.slots.clear();
            self.base = n;
        }
        let Some(offset) = self.offset(n) else {
            return Err(value);
        };
        if offset < self.slots.len() {
            if let Some(slot) = self.slots.get_mut(offset) {
                *slot = Some(value);
                self.in_slots += 1;
                return Ok(());
            }
        }
        let gap = offset - self.slots.len();
        if gap > MAX_GAP || gap >= self.max_slots {
            return Err(value);
        }
        while self.slots.len() + gap >= self.max_slots {
            self.evict_oldest();
        }
        self.slots.extend(std::iter::repeat_with(|| None).take(gap));
        self.slots.push_back(Some(value));
        self.in_slots += 1;
        Ok(())
    }

    /// Moves the first slot's value (if any) to the map and the window's start one id forward.
    #[cold]
    fn evict_oldest(&mut self) {
        if let Some(Some(value)) = self.slots.pop_front() {
            self.in_slots -= 1;
            self.map.insert(Id::Int(self.base), value);
        }
        self.base += 1;
    }

    pub fn remove(&mut self, id: &Id) -> Option<V> {
        if let Id::Int(n) = id {
            if let Some(value) = self.slot_of(*n).and_then(|i| self.slots.get_mut(i)?.take()) {
                self.slot_emptied();
                return Some(value);
            }
        }
        if self.map.is_empty() {
            return None;
        }
        self.map.remove(id)
    }

    /// Removes `id`'s entry and returns what `look` reads from it. The entry is dropped where it
    /// is: moving it out, as [`Self::remove`] does, cost two copies of it per response.
    pub fn remove_with<R>(&mut self, id: &Id, look: impl FnOnce(&V) -> R) -> Option<R> {
        if let Id::Int(n) = id {
            if let Some(slot) = self.slot_of(*n).and_then(|i| self.slots.get_mut(i)) {
                if let Some(value) = slot {
                    let seen = look(value);
                    *slot = None;
                    self.slot_emptied();
                    return Some(seen);
                }
            }
        }
        if self.map.is_empty() {
            return None;
        }
        self.map.remove(id).map(|value| look(&value))
    }

    /// After a slot was emptied: the window's start moves past the empty slots at its front.
    #[inline(always)]
    fn slot_emptied(&mut self) {
        self.in_slots -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.in_slots + self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Id, &V)> {
        let base = self.base;
        let slots = self.slots.iter().zip(0..).filter_map(move |(slot, i)| Some((Id::Int(base + i), slot.as_ref()?)));
        slots.chain(self.map.iter().map(|(id, value)| (id.clone(), value)))
    }

    /// Removes every entry, in no particular order.
    pub fn drain(&mut self) -> Vec<(Id, V)> {
        let base = self.base;
        let mut out: Vec<(Id, V)> =
            self.slots.drain(..).zip(0..).filter_map(|(slot, i)| Some((Id::Int(base + i), slot?))).collect();
        out.extend(self.map.drain());
        self.in_slots = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(table: &IdTable<u32>) -> Vec<(Id, u32)> {
        let mut all: Vec<(Id, u32)> = table.iter().map(|(id, v)| (id, *v)).collect();
        all.sort();
        all
    }

    #[test]
    fn consecutive_ids_slide_through_the_window() {
        let mut t = IdTable::default();
        for n in 1..=10 {
            assert_eq!(t.try_insert(Id::Int(n), n as u32), Ok(()));
        }
        assert_eq!(t.try_insert(Id::Int(4), 0), Err(0));
        for n in 1..=5 {
            assert_eq!(t.remove(&Id::Int(n)), Some(n as u32));
        }
        assert_eq!((t.base, t.slots.len(), t.map.len(), t.len()), (6, 5, 0, 5));
        assert_eq!(t.remove(&Id::Int(3)), None);
        assert_eq!(t.get(&Id::Int(7)), Some(&7));
    }

    #[test]
    fn a_laggard_moves_to_the_map_and_stays_found() {
        let mut t = IdTable::with_max_slots(100);
        t.try_insert(Id::Int(0), 0).ok();
        for n in 1..110 {
            t.try_insert(Id::Int(n), 1).ok();
            t.remove(&Id::Int(n));
        }
        assert_eq!(t.map.len(), 1, "the laggard moved out of the window");
        assert!(t.slots.len() < 100);
        assert_eq!(t.try_insert(Id::Int(0), 2), Err(2));
        assert_eq!(t.remove(&Id::Int(0)), Some(0));
        assert!(t.is_empty());
    }

    #[test]
    fn far_and_negative_and_string_ids_use_the_map() {
        let mut t = IdTable::default();
        t.try_insert(Id::Int(5), 5).ok();
        t.try_insert(Id::Int(5 + 1 + MAX_GAP as i64 + 1), 6).ok();
        t.try_insert(Id::Int(-3), 7).ok();
        t.try_insert(Id::string("5"), 8).ok();
        assert_eq!(t.map.len(), 3);
        assert_eq!(t.len(), 4);
        let want = vec![(Id::Int(-3), 7), (Id::Int(5), 5), (Id::Int(71), 6), (Id::string("5"), 8)];
        assert_eq!(ids(&t), want);
        let mut drained = t.drain();
        drained.sort();
        assert_eq!(drained, want);
        assert!(t.is_empty());
    }

    #[test]
    fn an_id_in_the_map_is_found_once_the_window_covers_it() {
        let mut t = IdTable::default();
        t.try_insert(Id::Int(1), 1).ok();
        t.try_insert(Id::Int(100), 100).ok();
        assert_eq!(t.map.len(), 1);
        for n in 2..=120 {
            let _ = t.try_insert(Id::Int(n), n as u32);
        }
        assert_eq!(t.get(&Id::Int(100)), Some(&100));
        if let Some(v) = t.get_mut(&Id::Int(100)) {
            *v = 1000;
        }
        assert_eq!(t.remove(&Id::Int(100)), Some(1000));
        assert_eq!(t.len(), 119);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Id),
        Remove(Id),
        RemoveWith(Id),
        Update(Id),
    }

    fn an_id() -> impl Strategy<Value = Id> {
        prop_oneof![
            8 => (0i64..60).prop_map(Id::Int),
            1 => (-5i64..1000).prop_map(Id::Int),
            1 => (0i64..5).prop_map(|n| Id::string(n.to_string())),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// The window, its sliding and its evictions never change what the table holds: the same
        /// operations on a plain hash map give the same answers.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(
            prop_oneof![
                3 => an_id().prop_map(Op::Insert),
                1 => an_id().prop_map(Op::Remove),
                1 => an_id().prop_map(Op::RemoveWith),
                1 => an_id().prop_map(Op::Update),
            ],
            0..300,
        ), max_slots in 1usize..20) {
            let mut t = IdTable::with_max_slots(max_slots);
            let mut model = std::collections::HashMap::new();
            for (k, op) in ops.into_iter().enumerate() {
                let value = k as u32;
                match op {
                    Op::Insert(id) => {
                        let want = if model.contains_key(&id) { Err(value) } else { Ok(()) };
                        if want.is_ok() {
                            model.insert(id.clone(), value);
                        }
                        prop_assert_eq!(t.try_insert(id, value), want);
                    }
                    Op::Remove(id) => prop_assert_eq!(t.remove(&id), model.remove(&id)),
                    Op::RemoveWith(id) => prop_assert_eq!(t.remove_with(&id, |v| v + 1), model.remove(&id).map(|v| v + 1)),
                    Op::Update(id) => {
                        if let Some(v) = t.get_mut(&id) {
                            *v = value;
                        }
                        if let Some(v) = model.get_mut(&id) {
                            *v = value;
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(t.slots.len() <= max_slots);
                prop_assert_eq!(t.in_slots, t.slots.iter().flatten().count());
                // An empty window holds no slots, so the next id starts it afresh.
                prop_assert!(t.in_slots > 0 || t.slots.is_empty());
            }
            let mut want: Vec<(Id, u32)> = model.into_iter().collect();
            want.sort();
            prop_assert_eq!(ids(&t), want.clone());
            let mut drained = t.drain();
            drained.sort();
            prop_assert_eq!(drained, want);
        }
    }
}
