//! What the backends' tests share: helpers for a frontend written by hand
//! in a booted simulated domain, and a guest of a few leaked pages with a
//! grant table in a map for the data paths alone.

use super::backend::{GrantEntry, GuestMemory, GTF_PERMIT_ACCESS, GTF_READONLY};
use super::{with, SimConfig, SimSession, SimXen};
use crate::abi::start_info;
use crate::seam::Hypervisor;
use std::collections::HashMap;
use std::string::String;

pub fn boot() -> SimSession {
    let (session, _) = SimXen::boot(SimConfig::default());
    SimXen::grant_setup_table(&mut [0u64; 1]).unwrap();
    session
}

pub fn mfn(pfn: u64) -> u64 {
    with(|s| s.mfn_of_pfn(pfn).unwrap())
}

pub fn page(pfn: u64) -> *mut u8 {
    with(|s| s.mem.frame_ptr(&s.arena, s.mfn_of_pfn(pfn).unwrap()).unwrap())
}

/// Writes grant entry `gref` as the guest does: {flags, domid, frame}.
pub fn grant(gref: u32, domid: u16, pfn: u64, flags: u16) {
    let e = flags as u64 | (domid as u64) << 16 | mfn(pfn) << 32;
    with(|s| assert!(s.mem.write_u64(&s.arena, s.grant_frames[0], gref as usize, e)));
}

pub fn grant_flags(gref: u32) -> u16 {
    with(|s| s.grant_entry(gref).unwrap().0)
}

/// Writes node `node` of the frontend's directory `device/{kind}/{id}`.
pub fn front_write(kind: &str, id: u32, node: &str, value: &str) {
    with(|s| s.toolstack_write(&format!("device/{kind}/{id}/{node}"), value.as_bytes()));
}

pub fn node(path: &str) -> Option<String> {
    with(|s| s.xenstore.value(path).map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Whether `port` is pending in shared_info (cleared as it is read).
pub fn take_pending(port: u32) -> bool {
    with(|s| {
        let si = s.shared_info().unwrap();
        let (w, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        // SAFETY: shared_info's bytes; nothing runs the guest meanwhile.
        unsafe {
            let was = (*si).evtchn_pending[w] & bit != 0;
            (*si).evtchn_pending[w] &= !bit;
            was
        }
    })
}

/// Publishes the p2m frame lists in shared_info, as the guest's kernel
/// does before a save, so the toolstack can restore the domain; returns
/// start_info's frame.
pub fn prepare_save() -> u64 {
    with(|s| {
        let si = s.arena.va(s.start_info_pfn) as *const start_info;
        // SAFETY: start_info's page, in the arena.
        let (list_va, nr) = unsafe { ((*si).mfn_list, (*si).nr_pages) };
        let list_pfn = (list_va - s.arena.base()) >> 12;
        let (lol, list) = (s.mfn_of_pfn(4000).unwrap(), s.mfn_of_pfn(4001).unwrap());
        for i in 0..(nr * 8).div_ceil(4096) {
            s.mem.write_u64(&s.arena, list, i as usize, s.mfn_of_pfn(list_pfn + i).unwrap());
        }
        s.mem.write_u64(&s.arena, lol, 0, list);
        let shared = s.shared_info().unwrap();
        // SAFETY: Xen's copy of shared_info (the guest never mapped it).
        unsafe {
            (*shared).arch.max_pfn = nr;
            (*shared).arch.pfn_to_mfn_frame_list_list = lol;
        }
        s.mfn_of_pfn(s.start_info_pfn).unwrap()
    })
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Frames the test guest owns: 100..116.
pub const FRAMES: core::ops::Range<u64> = 100..116;

/// A guest of leaked pages (frames [`FRAMES`]) and a grant table in a map.
pub struct Guest {
    pub pages: HashMap<u64, *mut u8>,
    pub grants: HashMap<u32, GrantEntry>,
}

impl Guest {
    pub fn new() -> Guest {
        let pages = FRAMES.map(|f| (f, Box::leak(Box::new(Page([0; 4096]))).0.as_mut_ptr())).collect();
        Guest { pages, grants: HashMap::new() }
    }

    /// Grants `frame` to dom0 as ref `gref`.
    pub fn grant_frame(&mut self, gref: u32, frame: u64, readonly: bool) {
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.grants.insert(gref, GrantEntry { flags, domid: 0, frame: frame as u32 });
    }
}

// SAFETY: every page is leaked (lives for the test binary's life) and
// page-aligned.
unsafe impl GuestMemory for Guest {
    fn grant(&self, gref: u32) -> Option<GrantEntry> {
        self.grants.get(&gref).copied()
    }
    fn page(&self, frame: u64) -> Option<*mut u8> {
        self.pages.get(&frame).copied()
    }
}
