//! Address space standing for the guest's pseudo-physical memory: pfn N at
//! `base + N * 4096`, as the real kernel maps it at `KERNEL_BASE`. Reserved
//! without backing (pages cost host memory only once touched), because the
//! kernel's layout reaches ~2 GiB of pfn space (the p2m region and the
//! grant table's slot sit near its top).

/// pfns the arena covers: 2 GiB.
pub const ARENA_PFNS: u64 = 1 << 19;
const ARENA_BYTES: usize = (ARENA_PFNS as usize) << 12;
/// The arena is aligned to a page-directory-pointer entry (1 GiB), as the
/// real kernel mapping is, so table walks see the same index arithmetic;
/// aligned to its own size, it can never straddle a top-level (512 GiB)
/// slot, wherever the host places the mapping.
const ALIGN: usize = ARENA_BYTES;

pub struct Arena {
    mapping: *mut libc::c_void,
    mapping_len: usize,
    base: u64,
}

// SAFETY: the arena is plain memory; the simulator serialises its use.
unsafe impl Send for Arena {}

impl Arena {
    pub fn new() -> Arena {
        let len = ARENA_BYTES + ALIGN;
        // SAFETY: an anonymous private mapping; nothing else refers to it.
        let mapping = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(mapping != libc::MAP_FAILED, "sim: cannot reserve the guest's memory arena");
        let base = (mapping as usize).next_multiple_of(ALIGN) as u64;
        assert_eq!(base >> 39, (base + ARENA_BYTES as u64 - 1) >> 39, "sim: arena straddles a top-level slot");
        Arena { mapping, mapping_len: len, base }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn va(&self, pfn: u64) -> u64 {
        self.base + (pfn << 12)
    }

    pub fn contains_pfn(&self, pfn: u64) -> bool {
        pfn < ARENA_PFNS
    }

    pub fn contains_va(&self, va: u64) -> bool {
        va >= self.base && va < self.base + ARENA_BYTES as u64
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; the simulator drops the
        // arena only when a new guest boots, after the old one's last use.
        unsafe { libc::munmap(self.mapping, self.mapping_len) };
    }
}
