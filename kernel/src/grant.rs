//! The grant table (v1): how the guest lets another domain (a backend in
//! dom0) map one of its pages. Xen owns the table's frames; the guest maps
//! them and writes entries {flags, domid, frame}.
//!
//! Like shared_info, the table's frames belong to Xen, so a mapping of them
//! must not be in the page tables when the domain is saved: the suspend
//! callback unmaps them. In a new domain `GNTTABOP_setup_table` hands out
//! new frames and every earlier grant is gone, so resume maps the new
//! frames and writes every live grant again (with the pages' new machine
//! frames); a cancelled suspend maps the same frames again.

use crate::mm::kernel_memory::with_frames;
use crate::mm::pagetable::data_entry;
use crate::mm::physmap::{self, pfn_to_mfn};
use crate::platform::pfn_to_va;
use crate::{Hv, Hypervisor, XenError};
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU16, Ordering};
use spin::Mutex;

bitflags::bitflags! {
    /// The `flags` half-word of a v1 grant entry (`grant_table.h`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct GrantFlags: u16 {
        const PERMIT_ACCESS = 1;
        const READONLY = 1 << 2;
        /// Set by Xen while the grantee has the page mapped for reading.
        const READING = 1 << 3;
        /// Set by Xen while the grantee has the page mapped for writing.
        const WRITING = 1 << 4;
    }
}

/// Frames the table starts with; it grows a frame at a time (512 entries
/// each) when every ref is in use, up to what Xen allows.
const FIRST_FRAMES: usize = 1;
const ENTRIES_PER_FRAME: u32 = 512;
/// Virtual slots kept for the table: Xen's default limit for a domU.
const MAX_FRAMES: usize = 64;
/// The first refs are reserved for the toolstack (console, xenstore).
const FIRST_FREE_REF: u32 = 8;

/// Why a grant operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// No grant table (setting it up failed at boot).
    NoTable,
    /// Every ref is in use.
    Full,
    /// The ref is outside the table or was not granted by this guest.
    BadRef(u32),
    /// The grantee still has the page mapped; try again after it unmaps.
    InUse(u32),
    /// Xen refused to set the table up.
    Setup(XenError),
    /// No page table for the table's virtual slot, and no frame to make one.
    NoPageTable,
    /// Xen refused to map a table frame.
    Map(XenError),
    /// Growing the table failed (Xen's limit, or no memory for it).
    Grow(XenError),
}
/// Virtual slot (as a pfn-sized index past the p2m region) for the table.
const TABLE_SLOT: u64 = physmap::MAX_SUPPORTED_PFN as u64 + 8 * 1024;

#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    flags: u16,
    domid: u16,
    frame: u32,
}

#[derive(Clone, Copy)]
struct Grant {
    gref: u32,
    domid: u16,
    pfn: u64,
    readonly: bool,
}

struct Table {
    mfns: Vec<u64>,
    grants: Vec<Grant>,
    /// Refs never handed out start here; ended refs wait in `free_refs`.
    next_ref: u32,
    free_refs: Vec<u32>,
    max_frames: u32,
}

/// The table's state; taken by tasks only (never from the upcall).
static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// Sets the table up with `frames` frames and maps them: at boot, in a new
/// domain, and to grow it (Xen keeps the frames it had and adds more).
fn setup_and_map(frames: usize) -> Result<Vec<u64>, GrantError> {
    let mut mfns = alloc::vec![0u64; frames];
    Hv::grant_setup_table(&mut mfns).map_err(GrantError::Setup)?;
    map(&mfns)?;
    Ok(mfns)
}

fn map(mfns: &[u64]) -> Result<(), GrantError> {
    for (i, &mfn) in mfns.iter().enumerate() {
        let slot = TABLE_SLOT + i as u64;
        physmap::ensure_l1(slot, || with_frames(|f| f.alloc(0))).ok_or(GrantError::NoPageTable)?;
        // SAFETY: the slot is the grant table's own virtual page; `mfn` is
        // a table frame Xen handed to this domain.
        unsafe { Hv::update_va_mapping(pfn_to_va(slot), data_entry(mfn, true), crate::smp::invlpg_flags()) }
            .map_err(GrantError::Map)?;
    }
    Ok(())
}

fn unmap(frames: usize) {
    for i in 0..frames as u64 {
        // SAFETY: only `TABLE` refers to the slot, and it is locked by the
        // caller (the suspend path) for as long as the table is unmapped.
        let _ = unsafe { Hv::update_va_mapping(pfn_to_va(TABLE_SLOT + i), 0, crate::smp::invlpg_flags()) };
    }
}

/// The entry of `gref`, or an error if the ref is outside the table.
fn entry_ptr(t: &Table, gref: u32) -> Result<*mut Entry, GrantError> {
    if gref >= t.refs() {
        return Err(GrantError::BadRef(gref));
    }
    Ok((pfn_to_va(TABLE_SLOT) as *mut Entry).wrapping_add(gref as usize))
}

/// The flags half-word of an entry, shared with Xen (which sets READING and
/// WRITING), so every change is atomic.
///
/// # Safety
/// The table must be mapped at TABLE_SLOT and `e` point into it.
unsafe fn flags_of<'a>(e: *mut Entry) -> &'a AtomicU16 {
    // SAFETY: the caller guarantees `e` points into the mapped table; the
    // field is 2-byte aligned, as AtomicU16 requires.
    unsafe { AtomicU16::from_ptr(core::ptr::addr_of_mut!((*e).flags)) }
}

fn write_entry(t: &Table, g: &Grant) {
    let Ok(e) = entry_ptr(t, g.gref) else { return };
    let flags = if g.readonly { GrantFlags::PERMIT_ACCESS | GrantFlags::READONLY } else { GrantFlags::PERMIT_ACCESS };
    // SAFETY: the table frames are mapped writable at TABLE_SLOT whenever a
    // `Table` exists, and `entry_ptr` checked the bound. The frame and
    // domid must be visible before the flags that publish the entry.
    unsafe {
        core::ptr::addr_of_mut!((*e).domid).write_volatile(g.domid);
        core::ptr::addr_of_mut!((*e).frame).write_volatile(pfn_to_mfn(g.pfn) as u32);
        fence(Ordering::Release);
        flags_of(e).store(flags.bits(), Ordering::Release);
    }
}

impl Table {
    fn refs(&self) -> u32 {
        self.mfns.len() as u32 * ENTRIES_PER_FRAME
    }

    /// One more frame, if Xen allows it.
    fn grow(&mut self) -> Result<(), GrantError> {
        let frames = self.mfns.len() + 1;
        if frames > (self.max_frames as usize).min(MAX_FRAMES) {
            return Err(GrantError::Full);
        }
        self.mfns = setup_and_map(frames).map_err(|e| match e {
            GrantError::Setup(x) => GrantError::Grow(x),
            other => other,
        })?;
        log::info!("grant: table grown to {} frames ({} refs, Xen allows {})", frames, self.refs(), self.max_frames);
        Ok(())
    }

    fn take_ref(&mut self) -> Result<u32, GrantError> {
        if let Some(r) = self.free_refs.pop() {
            return Ok(r);
        }
        if self.next_ref >= self.refs() {
            self.grow()?;
        }
        self.next_ref += 1;
        Ok(self.next_ref - 1)
    }
}

/// Sets the table up at boot.
pub fn init() {
    let max_frames = Hv::grant_query_size().map_or(0, |(_, max)| max);
    match setup_and_map(FIRST_FRAMES) {
        Ok(mfns) => {
            *TABLE.lock() =
                Some(Table { mfns, grants: Vec::new(), next_ref: FIRST_FREE_REF, free_refs: Vec::new(), max_frames });
            log::info!("grant: table of {} frame(s) mapped (Xen allows {})", FIRST_FRAMES, max_frames);
        }
        Err(e) => log::error!("grant: no grant table: {:?}", e),
    }
}

/// Lets `domid` map `pfn` (read-only if asked); returns the grant ref.
pub fn grant_access(domid: u16, pfn: u64, readonly: bool) -> Result<u32, GrantError> {
    let mut guard = TABLE.lock();
    let t = guard.as_mut().ok_or(GrantError::NoTable)?;
    let gref = t.take_ref()?;
    let g = Grant { gref, domid, pfn, readonly };
    write_entry(t, &g);
    t.grants.push(g);
    Ok(gref)
}

/// Refs in use and refs the table holds now.
pub fn usage() -> (usize, u32) {
    TABLE.lock().as_ref().map_or((0, 0), |t| (t.grants.len(), t.refs()))
}

/// Takes the grant back. Fails with `InUse` while the grantee still has
/// the page mapped: the page must not be reused until this succeeds.
pub fn end_access(gref: u32) -> Result<(), GrantError> {
    let mut guard = TABLE.lock();
    let t = guard.as_mut().ok_or(GrantError::NoTable)?;
    let at = t.grants.iter().position(|g| g.gref == gref).ok_or(GrantError::BadRef(gref))?;
    let e = entry_ptr(t, gref)?;
    // SAFETY: a `Table` exists, so the frames are mapped; `entry_ptr`
    // checked the bound.
    let flags = unsafe { flags_of(e) };
    let busy = (GrantFlags::READING | GrantFlags::WRITING).bits();
    // Clear the entry only if Xen has not marked it mapped in between.
    flags
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| (f & busy == 0).then_some(0))
        .map_err(|_| GrantError::InUse(gref))?;
    t.grants.swap_remove(at);
    t.free_refs.push(gref);
    Ok(())
}

/// A grant entry as Xen sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryView {
    pub flags: GrantFlags,
    pub domid: u16,
    pub frame: u32,
}

/// The entry of `gref` as Xen sees it.
pub fn entry(gref: u32) -> Result<EntryView, GrantError> {
    let guard = TABLE.lock();
    let t = guard.as_ref().ok_or(GrantError::NoTable)?;
    let e = entry_ptr(t, gref)?;
    // SAFETY: a `Table` exists, so the frames are mapped; the bound is
    // checked. Plain reads of fields Xen may change concurrently.
    unsafe {
        Ok(EntryView {
            flags: GrantFlags::from_bits_retain(flags_of(e).load(Ordering::Acquire)),
            domid: core::ptr::addr_of!((*e).domid).read_volatile(),
            frame: core::ptr::addr_of!((*e).frame).read_volatile(),
        })
    }
}

/// The grant table as a suspend-aware device.
pub struct GrantDevice;

impl crate::pm::Device for GrantDevice {
    fn name(&self) -> &'static str {
        "grant-table"
    }
    fn suspend(&self) -> Result<(), &'static str> {
        unmap(TABLE.lock().as_ref().map_or(0, |t| t.mfns.len()));
        Ok(())
    }
    fn resume(&self) {
        let mut guard = TABLE.lock();
        let Some(t) = guard.as_mut() else { return };
        let frames = t.mfns.len();
        match crate::transient::retry(format_args!("grant: setting the table up again"), || setup_and_map(frames)) {
            Ok(mfns) => {
                t.mfns = mfns;
                for g in &t.grants {
                    write_entry(t, g);
                }
                log::info!(
                    "grant: table set up again ({} frame(s), max {}), {} grants rewritten",
                    t.mfns.len(),
                    t.max_frames,
                    t.grants.len()
                );
            }
            Err(e) => {
                // The old frames are gone with the old domain: no table at
                // all, so that every grant fails cleanly rather than write
                // through a mapping that no longer exists.
                log::error!("grant: no table after the resume ({:?}); {} grants lost", e, t.grants.len());
                *guard = None;
            }
        }
    }
    fn cancel(&self) {
        if let Some(t) = TABLE.lock().as_ref() {
            if let Err(e) = map(&t.mfns) {
                log::error!("grant: remapping after a cancelled suspend: {:?}", e);
            }
        }
    }
}
