//! The simulated domain's memory: an arena standing for pseudo-physical
//! memory, Xen's m2p and frame ownership, the page tables Xen validates,
//! and the pages Xen itself owns (shared_info, grant frames).
//!
//! Content lives where the guest reads it: a RAM frame's bytes are at its
//! pfn's place in the arena (or, once the guest maps it somewhere else as
//! it does the p2m's pages, copied there and kept there), a Xen-owned page's bytes are copied in when the
//! guest maps it and out when it unmaps it. Every guest mistake Xen would
//! refuse is an error; every one it would let pass but that corrupts the
//! guest (giving away a frame still mapped, mapping a frame it does not
//! own) is recorded as a violation that tests check.

use super::arena::Arena;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::vec::Vec;

pub const PTE_PRESENT: u64 = 1;
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

pub fn pte_mfn(e: u64) -> Option<u64> {
    (e & PTE_PRESENT != 0).then_some((e & PTE_ADDR) >> 12)
}

pub fn indices(va: u64) -> [usize; 4] {
    [(va >> 39) as usize & 511, (va >> 30) as usize & 511, (va >> 21) as usize & 511, (va >> 12) as usize & 511]
}

/// A page Xen owns and the guest may map.
pub struct XenPage {
    pub content: Box<[u8; 4096]>,
    pub mapped_at: Option<u64>,
}

#[derive(Default)]
pub struct Memory {
    pub m2p: HashMap<u64, u64>,
    pub owned: BTreeSet<u64>,
    pub xen_pages: HashMap<u64, XenPage>,
    /// RAM frames mapped somewhere other than their pfn's place (va).
    pub remapped: HashMap<u64, u64>,
    /// Mappings of Xen pages outside the arena (va -> mfn), e.g. a slot in
    /// the kernel image.
    pub outside: HashMap<u64, u64>,
    /// Frames in use as page tables, with their level (4 = root).
    pub tables: HashMap<u64, u8>,
    pub pinned: HashSet<u64>,
    pub root: u64,
    pub next_mfn: u64,
    pub next_xen_mfn: u64,
    /// pfns given back, for a simulated live migration (they were sent
    /// before the guest gave them away, so they come back populated).
    pub released_pfns: HashSet<u64>,
    pub violations: Vec<String>,
}

impl Memory {
    pub fn is_ram(&self, mfn: u64) -> bool {
        self.owned.contains(&mfn)
    }

    /// Where `mfn`'s bytes are now.
    pub fn frame_ptr(&self, arena: &Arena, mfn: u64) -> Option<*mut u8> {
        if let Some(p) = self.xen_pages.get(&mfn) {
            return Some(match p.mapped_at {
                Some(va) => va as *mut u8,
                None => p.content.as_ptr() as *mut u8,
            });
        }
        if !self.is_ram(mfn) {
            return None;
        }
        if let Some(&va) = self.remapped.get(&mfn) {
            return Some(va as *mut u8);
        }
        let pfn = *self.m2p.get(&mfn)?;
        arena.contains_pfn(pfn).then(|| arena.va(pfn) as *mut u8)
    }

    pub fn read_u64(&self, arena: &Arena, mfn: u64, index: usize) -> Option<u64> {
        let p = self.frame_ptr(arena, mfn)? as *const u64;
        // SAFETY: `frame_ptr` names a live 4 KiB page; index < 512.
        Some(unsafe { p.add(index & 511).read_volatile() })
    }

    pub fn write_u64(&self, arena: &Arena, mfn: u64, index: usize, val: u64) -> bool {
        let Some(p) = self.frame_ptr(arena, mfn) else { return false };
        // SAFETY: as in `read_u64`.
        unsafe { (p as *mut u64).add(index & 511).write_volatile(val) };
        true
    }

    /// The L1 table that maps `va`, walking from the root.
    pub fn l1_for(&self, arena: &Arena, va: u64) -> Option<u64> {
        let mut table = self.root;
        for &i in &indices(va)[..3] {
            table = pte_mfn(self.read_u64(arena, table, i)?)?;
        }
        Some(table)
    }

    /// Whether `mfn` is mapped anywhere the guest could still reach it.
    pub fn is_mapped(&self, arena: &Arena, mfn: u64) -> bool {
        if self.remapped.contains_key(&mfn) || self.outside.values().any(|&m| m == mfn) {
            return true;
        }
        let Some(&pfn) = self.m2p.get(&mfn) else { return false };
        if !arena.contains_pfn(pfn) {
            return false;
        }
        let va = arena.va(pfn);
        self.l1_for(arena, va)
            .and_then(|l1| self.read_u64(arena, l1, indices(va)[3]))
            .and_then(pte_mfn)
            .is_some_and(|m| m == mfn)
    }

    fn attach(&mut self, arena: &Arena, mfn: u64, va: u64) {
        if let Some(p) = self.xen_pages.get_mut(&mfn) {
            if let Some(old) = p.mapped_at {
                self.violations.push(format!("Xen page {mfn:#x} mapped twice ({old:#x} and {va:#x})"));
                return;
            }
            // SAFETY: `va` is a page of the arena or of the test binary the
            // guest handed over for this mapping.
            unsafe { core::ptr::copy_nonoverlapping(p.content.as_ptr(), va as *mut u8, 4096) };
            p.mapped_at = Some(va);
        } else if let Some(home) = self.m2p.get(&mfn).map(|&pfn| arena.va(pfn)).filter(|&h| h != va) {
            // A second view of a RAM frame (the p2m's pages): the host has
            // no aliasing, so the bytes prepared at the frame's own place
            // move to the view the guest uses from now on.
            // SAFETY: both are pages of the arena.
            unsafe { core::ptr::copy_nonoverlapping(home as *const u8, va as *mut u8, 4096) };
            self.remapped.insert(mfn, va);
        }
    }

    fn detach(&mut self, mfn: u64, va: u64) {
        if let Some(p) = self.xen_pages.get_mut(&mfn) {
            if p.mapped_at == Some(va) {
                // SAFETY: the page was mapped at `va` until now.
                unsafe { core::ptr::copy_nonoverlapping(va as *const u8, p.content.as_mut_ptr(), 4096) };
                p.mapped_at = None;
            }
        } else if self.remapped.get(&mfn) == Some(&va) {
            self.remapped.remove(&mfn);
        }
    }

    fn check_target(&mut self, what: &str, mfn: u64) -> bool {
        if self.is_ram(mfn) || self.xen_pages.contains_key(&mfn) {
            return true;
        }
        self.violations.push(format!("{what}: frame {mfn:#x} is not the domain's"));
        false
    }

    /// `update_va_mapping`: `Err(())` where Xen refuses (no L1 for `va`).
    pub fn update_va_mapping(&mut self, arena: &Arena, va: u64, pte: u64) -> Result<(), ()> {
        if let Some(m) = pte_mfn(pte) {
            if !self.check_target("update_va_mapping", m) {
                return Err(());
            }
        }
        if arena.contains_va(va) {
            let l1 = self.l1_for(arena, va).ok_or(())?;
            let i = indices(va)[3];
            let old = self.read_u64(arena, l1, i).ok_or(())?;
            if let Some(m) = pte_mfn(old) {
                self.detach(m, va);
            }
            self.write_u64(arena, l1, i, pte);
        } else if let Some(m) = self.outside.remove(&va) {
            self.detach(m, va);
        }
        if let Some(m) = pte_mfn(pte) {
            if !arena.contains_va(va) {
                self.outside.insert(va, m);
            }
            self.attach(arena, m, va);
        }
        Ok(())
    }

    /// One `mmu_update` request.
    pub fn mmu_update(&mut self, arena: &Arena, ptr: u64, val: u64) -> Result<(), ()> {
        let mfn = ptr >> 12;
        match ptr & 3 {
            0 => {
                if !self.is_ram(mfn) {
                    self.violations.push(format!("mmu_update: table {mfn:#x} is not the domain's"));
                    return Err(());
                }
                if let Some(m) = pte_mfn(val) {
                    if !self.check_target("mmu_update", m) {
                        return Err(());
                    }
                    if let Some(&level) = self.tables.get(&mfn) {
                        if level > 1 {
                            self.register_table(arena, m, level - 1);
                        }
                    }
                }
                self.write_u64(arena, mfn, ((ptr & 0xfff) / 8) as usize, val);
                Ok(())
            }
            1 => {
                if !self.is_ram(mfn) {
                    self.violations.push(format!("m2p update for frame {mfn:#x}, not the domain's"));
                    return Err(());
                }
                self.m2p.insert(mfn, val);
                Ok(())
            }
            _ => Err(()),
        }
    }

    /// Records `mfn` as a table of `level` and, below it, its children.
    pub fn register_table(&mut self, arena: &Arena, mfn: u64, level: u8) {
        self.tables.insert(mfn, level);
        if level > 1 {
            for i in 0..512 {
                if let Some(child) = self.read_u64(arena, mfn, i).and_then(pte_mfn) {
                    if self.is_ram(child) && self.tables.get(&child) != Some(&(level - 1)) {
                        self.register_table(arena, child, level - 1);
                    }
                }
            }
        }
    }

    pub fn new_frames(&mut self, n: u64) -> u64 {
        let first = self.next_mfn;
        self.next_mfn += n;
        first
    }

    pub fn new_xen_page(&mut self) -> u64 {
        let mfn = self.next_xen_mfn;
        self.next_xen_mfn += 1;
        self.xen_pages.insert(mfn, XenPage { content: Box::new([0; 4096]), mapped_at: None });
        mfn
    }
}
