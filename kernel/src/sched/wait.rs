//! Wait queues: tasks blocked until a condition holds.

use super::{block_current, current, wake, TaskId};
use crate::{events_mask, time};
use alloc::vec::Vec;
use spin::Mutex;

/// A list of tasks waiting for something.
pub struct WaitQueue {
    waiters: Mutex<Vec<TaskId>>,
}

impl WaitQueue {
    pub const fn new() -> Self {
        Self { waiters: Mutex::new(Vec::new()) }
    }

    /// Blocks until `ready()` returns Some; a freezer safe point.
    pub fn wait_until<T>(&self, mut ready: impl FnMut() -> Option<T>) -> T {
        self.wait_until_deadline(None, &mut ready).expect("no deadline")
    }

    /// As `wait_until`, giving up at `deadline` (monotonic ns).
    pub fn wait_until_deadline<T>(&self, deadline: Option<u64>, ready: &mut impl FnMut() -> Option<T>) -> Option<T> {
        let me = current();
        loop {
            if let Some(v) = ready() {
                return Some(v);
            }
            if deadline.is_some_and(|d| time::now_ns() >= d) {
                return None;
            }
            // Register before re-checking so a wake between the check and
            // the block is not lost (it sets wake_pending).
            events_mask::without_events(|| {
                let mut w = self.waiters.lock();
                if !w.contains(&me) {
                    w.push(me);
                }
            });
            if let Some(v) = ready() {
                self.remove(me);
                return Some(v);
            }
            block_current(deadline);
            self.remove(me);
        }
    }

    fn remove(&self, me: TaskId) {
        events_mask::without_events(|| self.waiters.lock().retain(|&t| t != me));
    }

    /// Wakes every waiter (they re-check their condition).
    pub fn wake_all(&self) {
        let waiters: Vec<TaskId> = events_mask::without_events(|| core::mem::take(&mut *self.waiters.lock()));
        for id in waiters {
            wake(id);
        }
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}
