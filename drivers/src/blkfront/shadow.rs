//! The requests a frontend has in flight, one per ring slot: what it needs
//! to match a response to its request, and to issue every request again,
//! exactly once, when a new backend takes over after a resume.
//!
//! A request's id on the ring carries its slot and the slot's use count,
//! so a response naming a slot's earlier use, a free slot or no slot at
//! all is told apart from a real completion, and a second response for
//! one request is caught as a duplicate.

use alloc::vec::Vec;

/// One use of a slot, handed to the submitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    slot: u8,
    seq: u64,
}

impl Ticket {
    /// The id the request carries on the ring.
    pub fn id(self) -> u64 {
        (self.seq << 8) | self.slot as u64
    }

    fn from_id(id: u64) -> Self {
        Ticket { slot: id as u8, seq: id >> 8 }
    }
}

/// Why a response's id does not complete anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// No request in flight ever had this id.
    NeverIssued(u64),
    /// The request with this id already completed.
    Duplicate(u64),
}

enum Slot<T, R> {
    Free,
    Issued { req: T, order: u64 },
    Done { req: T, result: R },
}

/// In-flight requests `T` with results `R`.
pub struct Shadow<T, R> {
    slots: Vec<(u64, Slot<T, R>)>,
    next_order: u64,
}

impl<T, R> Shadow<T, R> {
    /// `slots` slots (the ring's size, at most 256).
    pub fn new(slots: usize) -> Self {
        assert!(slots <= 256);
        Shadow { slots: (0..slots).map(|_| (0, Slot::Free)).collect(), next_order: 0 }
    }

    /// Requests issued and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|(_, s)| matches!(s, Slot::Issued { .. })).count()
    }

    /// Takes a free slot for `req`; gives `req` back if none is free.
    pub fn insert(&mut self, req: T) -> Result<Ticket, T> {
        let Some(i) = self.slots.iter().position(|(_, s)| matches!(s, Slot::Free)) else { return Err(req) };
        let (seq, slot) = &mut self.slots[i];
        *seq += 1;
        *slot = Slot::Issued { req, order: self.next_order };
        self.next_order += 1;
        Ok(Ticket { slot: i as u8, seq: *seq })
    }

    /// The request of an issued ticket (to write it on the ring).
    pub fn request_mut(&mut self, t: Ticket) -> Option<&mut T> {
        match self.slots.get_mut(t.slot as usize) {
            Some((seq, Slot::Issued { req, .. })) if *seq == t.seq => Some(req),
            _ => None,
        }
    }

    /// Records the response to request `id`; returns the request so the
    /// caller can finish it (copy data out) before its result is final.
    pub fn complete(&mut self, id: u64, finish: impl FnOnce(&mut T) -> R) -> Result<(), IdError> {
        let t = Ticket::from_id(id);
        let Some((seq, slot)) = self.slots.get_mut(t.slot as usize) else { return Err(IdError::NeverIssued(id)) };
        if *seq != t.seq || t.seq == 0 {
            return Err(IdError::NeverIssued(id));
        }
        match core::mem::replace(slot, Slot::Free) {
            Slot::Issued { mut req, .. } => {
                let result = finish(&mut req);
                *slot = Slot::Done { req, result };
                Ok(())
            }
            done @ Slot::Done { .. } => {
                *slot = done;
                Err(IdError::Duplicate(id))
            }
            // Its result was collected already: still the same use.
            Slot::Free => Err(IdError::Duplicate(id)),
        }
    }

    /// Collects a finished request, freeing its slot.
    pub fn take(&mut self, t: Ticket) -> Option<(T, R)> {
        let (seq, slot) = self.slots.get_mut(t.slot as usize)?;
        if *seq != t.seq || !matches!(slot, Slot::Done { .. }) {
            return None;
        }
        match core::mem::replace(slot, Slot::Free) {
            Slot::Done { req, result } => Some((req, result)),
            _ => None,
        }
    }

    /// Whether `t` is still in use (issued or done, not collected).
    pub fn holds(&self, t: Ticket) -> bool {
        matches!(self.slots.get(t.slot as usize), Some((seq, s)) if *seq == t.seq && !matches!(s, Slot::Free))
    }

    /// Every request in flight, in the order they were first issued, with
    /// its ticket: to issue them again on a new ring.
    pub fn issued_mut(&mut self) -> Vec<(Ticket, &mut T)> {
        let mut v: Vec<(u64, Ticket, &mut T)> = self
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (seq, s))| match s {
                Slot::Issued { req, order } => Some((*order, Ticket { slot: i as u8, seq: *seq }, req)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(order, _, _)| *order);
        v.into_iter().map(|(_, t, r)| (t, r)).collect()
    }

    /// Ends every request in flight with `result()`.
    pub fn fail_all(&mut self, mut result: impl FnMut() -> R) -> usize {
        let mut n = 0;
        for (_, slot) in self.slots.iter_mut() {
            if let Slot::Issued { .. } = slot {
                if let Slot::Issued { req, .. } = core::mem::replace(slot, Slot::Free) {
                    *slot = Slot::Done { req, result: result() };
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_complete_their_own_request_once() {
        let mut s: Shadow<u32, i32> = Shadow::new(4);
        let a = s.insert(10).unwrap();
        let b = s.insert(11).unwrap();
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.complete(b.id(), |r| *r as i32 * 2), Ok(()));
        assert_eq!(s.complete(b.id(), |_| 0), Err(IdError::Duplicate(b.id())));
        assert_eq!(s.take(b), Some((11, 22)));
        assert_eq!(s.complete(b.id(), |_| 0), Err(IdError::Duplicate(b.id())), "after collection too");
        // The slot's next use has another id; the old one names nothing.
        let c = s.insert(12).unwrap();
        assert_ne!(c.id(), b.id());
        assert_eq!(s.take(a), None, "not done yet");
        assert_eq!(s.complete(0xdead_beef_0000, |_| 0), Err(IdError::NeverIssued(0xdead_beef_0000)));
        assert_eq!(s.complete(200, |_| 0), Err(IdError::NeverIssued(200)), "no such slot");
        assert_eq!(s.complete(3, |_| 0), Err(IdError::NeverIssued(3)), "a slot never used");
    }

    #[test]
    fn a_full_table_refuses_and_reissue_keeps_the_first_order() {
        let mut s: Shadow<u32, ()> = Shadow::new(3);
        let t: Vec<Ticket> = (0..3).map(|i| s.insert(i).unwrap()).collect();
        assert_eq!(s.insert(9), Err(9));
        s.complete(t[0].id(), |_| ()).unwrap();
        s.take(t[0]).unwrap();
        let again = s.insert(7).unwrap();
        let order: Vec<u32> = s.issued_mut().into_iter().map(|(_, r)| *r).collect();
        assert_eq!(order, [1, 2, 7]);
        assert!(s.holds(again));
        assert_eq!(s.fail_all(|| ()), 3);
        assert_eq!(s.in_flight(), 0);
        assert!(s.holds(again), "failed, not yet collected");
        assert_eq!(s.take(again), Some((7, ())));
        assert!(!s.holds(again));
    }
}
