//! Small save images: at suspend time give every free frame back to Xen
//! (the toolstack then copies only what the guest really uses); the same
//! amount is taken back after the hypercall, in the background once tasks
//! run again (`crate::restock`).
//!
//! Both halves are the balloon's own mechanism (`ballooning`): only frames
//! the allocator holds free are released, never memory a task owns. A
//! reserve stays populated so that the resume path itself (rings, re-sent
//! xenstore requests, log lines) and the tasks that run before the memory
//! is back never need a frame from Xen.

use super::ballooning::{self, Progress};

/// Frames kept populated through the suspend: 4 MiB.
pub const RESERVE_PAGES: u64 = 1024;

/// What a release gave, to be taken back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Released {
    /// Pages Xen backed before the release.
    populated_before: u64,
    /// What went.
    pub moved: Progress,
}

impl Released {
    pub fn pages(&self) -> u64 {
        self.moved.pages
    }
}

/// Gives free frames back until only `reserve` free pages remain: whole
/// 2 MiB extents first, then single frames.
pub fn release_free(reserve: u64) -> Released {
    let populated_before = ballooning::populated_pages();
    let mut moved = ballooning::inflate_2m(u64::MAX, reserve);
    moved += ballooning::inflate_frames(u64::MAX, reserve);
    Released { populated_before, moved }
}

/// The populated pages to return to after the suspend: what the guest
/// had before the release (`restock` takes it back in the background).
pub fn goal(r: &Released) -> u64 {
    r.populated_before
}
