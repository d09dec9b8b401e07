//! Small save images: at suspend time give every free frame back to Xen
//! (the toolstack then copies only what the guest really uses) and take
//! the same amount back right after the hypercall, before tasks thaw.
//!
//! Both halves are the balloon's own mechanism (`ballooning`): only frames
//! the allocator holds free are released, never memory a task owns. A
//! reserve stays populated so that the resume path itself (rings, re-sent
//! xenstore requests, log lines) never needs a frame from Xen. If Xen
//! cannot supply everything afterwards, the guest thaws with what it got
//! and the balloon driver keeps asking, as after any short deflate.

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

/// What `repopulate` asked Xen for and got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repopulated {
    pub wanted: u64,
    pub got: u64,
}

/// Takes back what is missing since `release_free`. After a live migration
/// every released frame comes back populated and is adopted before this
/// runs (`reservation::adopt_backed_unmapped`), so only the difference is
/// asked for; whatever Xen does not supply stays ballooned for the balloon
/// driver.
pub fn repopulate(r: &Released) -> Repopulated {
    let wanted = r.populated_before.saturating_sub(ballooning::populated_pages());
    let got = if wanted == 0 { 0 } else { ballooning::deflate(wanted).pages };
    Repopulated { wanted, got }
}
