//! Pages a frontend shares with its backend: a frame the driver owns for
//! as long as the value lives, granted to the backend's domain.
//!
//! The backend writes these pages whenever it likes (a read's data, ring
//! responses), so they are never handed out as Rust references: bytes go
//! in and out by copy, and a ring is set up over the page by
//! [`SharedRing`], which owns it. A page the backend still has mapped when
//! it is dropped is leaked, never reused: the backend could still write it.

use crate::grant::{self, GrantError};
use crate::mm::pressure::{OutOfMemory, TaskPages};
use crate::platform::pfn_to_va;
use xen::ring::{FrontRing, PAGE_SIZE};

/// Why a shared page could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedPageError {
    NoMemory(OutOfMemory),
    Grant(GrantError),
}

/// One zeroed page granted to `domid`.
pub struct GrantedPage {
    /// None once leaked.
    page: Option<TaskPages>,
    gref: u32,
    domid: u16,
    readonly: bool,
}

impl GrantedPage {
    /// A zeroed page that `domid` may map (read-only if `readonly`).
    pub fn new(domid: u16, readonly: bool) -> Result<Self, SharedPageError> {
        let mut page = TaskPages::try_new(0).map_err(SharedPageError::NoMemory)?;
        page.words_mut().fill(0);
        let gref = grant::grant_access(domid, page.pfn(), readonly).map_err(SharedPageError::Grant)?;
        Ok(Self { page: Some(page), gref, domid, readonly })
    }

    pub fn gref(&self) -> u32 {
        self.gref
    }

    pub fn domid(&self) -> u16 {
        self.domid
    }

    /// Grants the page afresh to `domid` (a new backend after a resume):
    /// the old grant ends first, which fails while the old backend still
    /// has the page mapped.
    pub fn regrant(&mut self, domid: u16) -> Result<(), GrantError> {
        let pfn = self.pfn();
        grant::end_access(self.gref)?;
        self.gref = grant::grant_access(domid, pfn, self.readonly)?;
        self.domid = domid;
        Ok(())
    }

    fn pfn(&self) -> u64 {
        self.page.as_ref().map_or(0, TaskPages::pfn)
    }

    fn base(&self) -> *mut u8 {
        pfn_to_va(self.pfn()) as *mut u8
    }

    /// Copies `out.len()` bytes from `offset` in the page.
    ///
    /// Panics if the range leaves the page (a driver bug, not input).
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= PAGE_SIZE, "copy_out past the page");
        // SAFETY: the range lies in the page this value owns, mapped at
        // its direct-map address; the backend may write it meanwhile, which
        // a byte copy tolerates (the protocol says when the bytes are
        // final).
        unsafe { core::ptr::copy_nonoverlapping(self.base().add(offset), out.as_mut_ptr(), out.len()) }
    }

    /// Copies `data` into the page at `offset`.
    ///
    /// Panics if the range leaves the page (a driver bug, not input).
    pub fn copy_in(&mut self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= PAGE_SIZE, "copy_in past the page");
        // SAFETY: as in `copy_out`; `&mut self` keeps this side's writers
        // to one.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.base().add(offset), data.len()) }
    }
}

impl GrantedPage {
    /// Waits up to `ms` for the backend to unmap the page (it may go
    /// `Closed` a moment before it does), so that dropping the page ends
    /// the grant instead of leaking it. True once the page is unmapped.
    pub fn wait_unmapped(&self, ms: u64) -> bool {
        let busy = grant::GrantFlags::READING | grant::GrantFlags::WRITING;
        let deadline = crate::time::now_ns() + ms * 1_000_000;
        loop {
            match grant::entry(self.gref) {
                Ok(e) if e.flags.intersects(busy) => {}
                _ => return true,
            }
            if crate::time::now_ns() >= deadline {
                return false;
            }
            crate::sched::sleep_ms(10);
        }
    }
}

impl Drop for GrantedPage {
    fn drop(&mut self) {
        if let Err(e) = grant::end_access(self.gref) {
            log::error!("shared page: grant {} to dom{} not ended ({:?}): page leaked", self.gref, self.domid, e);
            core::mem::forget(self.page.take());
        }
    }
}

/// The front end of a shared ring on a granted page it owns.
pub struct SharedRing<Req: Copy, Rsp: Copy> {
    ring: FrontRing<Req, Rsp>,
    // Dropped after the ring (which only points into it).
    page: GrantedPage,
}

// SAFETY: the ring points only into `page`, which this value owns; moving
// the value to another task moves that ownership with it.
unsafe impl<Req: Copy, Rsp: Copy> Send for SharedRing<Req, Rsp> {}

impl<Req: Copy, Rsp: Copy> SharedRing<Req, Rsp> {
    /// A fresh ring on a new page granted (writable) to `domid`.
    pub fn new(domid: u16) -> Result<Self, SharedPageError> {
        let page = GrantedPage::new(domid, false)?;
        // SAFETY: the page is page-aligned, mapped writable, owned by the
        // value built here and used for nothing else; it outlives the ring.
        let ring = unsafe { FrontRing::init(page.base()) };
        Ok(Self { ring, page })
    }

    /// The ring page's grant ref, for the backend.
    pub fn gref(&self) -> u32 {
        self.page.gref()
    }

    /// See [`GrantedPage::wait_unmapped`].
    pub fn wait_unmapped(&self, ms: u64) -> bool {
        self.page.wait_unmapped(ms)
    }

    pub fn ring(&mut self) -> &mut FrontRing<Req, Rsp> {
        &mut self.ring
    }
}
