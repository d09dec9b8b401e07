//! x86-64 4-level page tables as a PV guest sees them.
//!
//! Entries hold machine frame numbers. A frame Xen knows as a page table
//! must never be mapped writable, so live tables are changed only through
//! `mmu_update`; a new table is filled while it is still an ordinary page,
//! then mapped read-only, then linked in (Xen validates it at that moment).

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::paging::PageTableFlags as Flags;

/// Frames in use as page tables (Xen's bootstrap tables, the kernel
/// mapping's, every address space's), for `data/meminfo`.
static TABLE_FRAMES: AtomicU64 = AtomicU64::new(0);

/// Starts the count at boot with Xen's bootstrap tables.
pub fn count_boot_tables(n: u64) {
    TABLE_FRAMES.store(n, Ordering::Relaxed);
}

/// Counts `n` frames becoming page tables.
pub fn count_tables(n: u64) {
    TABLE_FRAMES.fetch_add(n, Ordering::Relaxed);
}

/// Counts `n` page-table frames given back.
pub fn uncount_tables(n: u64) {
    TABLE_FRAMES.fetch_sub(n, Ordering::Relaxed);
}

pub fn table_frames() -> u64 {
    TABLE_FRAMES.load(Ordering::Relaxed)
}

/// Bits 12..51 of an entry hold the machine frame number.
const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Every kernel mapping: user-accessible because a 64-bit PV kernel runs in
/// ring 3; accessed set so the CPU need not write the entry back.
const MAPPED: Flags = Flags::PRESENT.union(Flags::USER_ACCESSIBLE).union(Flags::ACCESSED);

pub const ENTRIES: usize = 512;

/// Table indices (L4, L3, L2, L1) of a virtual address.
pub const fn indices(va: u64) -> [usize; 4] {
    [
        ((va >> 39) & 0x1ff) as usize,
        ((va >> 30) & 0x1ff) as usize,
        ((va >> 21) & 0x1ff) as usize,
        ((va >> 12) & 0x1ff) as usize,
    ]
}

/// The machine frame an entry points to.
pub const fn entry_mfn(entry: u64) -> u64 {
    (entry & FRAME_MASK) >> 12
}

pub const fn is_present(entry: u64) -> bool {
    Flags::from_bits_truncate(entry).contains(Flags::PRESENT)
}

/// A kernel data mapping of `mfn`.
pub const fn data_entry(mfn: u64, writable: bool) -> u64 {
    let flags = MAPPED.union(Flags::DIRTY);
    let flags = if writable { flags.union(Flags::WRITABLE) } else { flags };
    (mfn << 12) | flags.bits()
}

/// An entry linking a lower-level table `mfn` (writable so leaves decide).
pub const fn table_entry(mfn: u64) -> u64 {
    (mfn << 12) | MAPPED.union(Flags::WRITABLE).bits()
}

/// The `ptr` field of an `mmu_update` that writes entry `index` of the
/// table in machine frame `table_mfn`.
pub const fn update_ptr(table_mfn: u64, index: usize) -> u64 {
    ((table_mfn << 12) + (index as u64) * 8) | xen::abi::mmu::NORMAL_PT_UPDATE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_base_indices() {
        assert_eq!(indices(0xffff_ffff_8000_0000), [511, 510, 0, 0]);
        assert_eq!(indices(0xffff_ffff_8000_0000 + (3 << 21) + (5 << 12)), [511, 510, 3, 5]);
        assert_eq!(indices(0xffff_ffff_c000_0000), [511, 511, 0, 0]);
    }

    #[test]
    fn entries_round_trip() {
        let e = data_entry(0x12345, true);
        assert!(is_present(e));
        assert_eq!(entry_mfn(e), 0x12345);
        assert!(Flags::from_bits_truncate(e).contains(Flags::WRITABLE));
        assert!(!Flags::from_bits_truncate(data_entry(1, false)).contains(Flags::WRITABLE));
        assert_eq!(table_entry(1) & 0xfff, 0x27);
        assert_eq!(update_ptr(2, 3), 0x2000 + 24);
    }
}
