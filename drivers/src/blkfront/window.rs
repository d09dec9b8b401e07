//! A window of requests kept in flight on one disk, for tasks that stream
//! through a range (the self-test and the bench).

use super::{BlkError, Disk, Ticket};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Sectors `[start, end)` as `(first, count)` requests of at most `chunk`.
pub fn chunks(start: u64, end: u64, chunk: u32) -> impl Iterator<Item = (u64, u32)> {
    (start..end).step_by(chunk.max(1) as usize).map(move |s| (s, (end - s).min(chunk as u64) as u32))
}

/// Keeps up to `depth` requests in flight; `done` sees each completion in
/// submission order. On an error the rest are still collected, so no
/// request is left holding a slot.
pub struct Window<'a, T> {
    disk: &'a Disk,
    depth: usize,
    queue: VecDeque<(Ticket, T)>,
}

impl<'a, T> Window<'a, T> {
    pub fn new(disk: &'a Disk, depth: usize) -> Self {
        Self { disk, depth: depth.max(1), queue: VecDeque::new() }
    }

    /// Adds a submitted request (`t`), first waiting for the oldest when
    /// the window is full.
    pub fn push(
        &mut self,
        t: Result<Ticket, BlkError>,
        tag: T,
        done: &mut impl FnMut(Vec<u8>, T),
    ) -> Result<(), BlkError> {
        let t = t.inspect_err(|_| self.drain())?;
        self.queue.push_back((t, tag));
        if self.queue.len() >= self.depth {
            self.pop(done)?;
        }
        Ok(())
    }

    /// Waits for every request still in flight.
    pub fn finish(&mut self, done: &mut impl FnMut(Vec<u8>, T)) -> Result<(), BlkError> {
        while !self.queue.is_empty() {
            self.pop(done)?;
        }
        Ok(())
    }

    fn pop(&mut self, done: &mut impl FnMut(Vec<u8>, T)) -> Result<(), BlkError> {
        if let Some((t, tag)) = self.queue.pop_front() {
            let data = self.disk.wait(t).inspect_err(|_| self.drain())?;
            done(data, tag);
        }
        Ok(())
    }

    fn drain(&mut self) {
        for (t, _) in self.queue.drain(..) {
            let _ = self.disk.wait(t);
        }
    }
}
