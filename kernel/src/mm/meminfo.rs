//! Where the guest's memory is, in pages, for `data/meminfo` and reports.
//!
//! Every figure is read from the owner that counts it (the frame
//! allocator, the heap, the page-table counter, the pressure counters);
//! what no owner claims is the kernel's (its image, the p2m, the frame
//! bitmap, grant and ring pages).

use super::{kernel_memory, pagetable, pressure};
use crate::sched;

/// Memory figures in pages, counts as counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// Pages Xen backs now.
    pub total: u64,
    pub free: u64,
    /// Free pages a task can still be given without asking Xen.
    pub available: u64,
    /// Used pages no owner below claims.
    pub kernel: u64,
    /// Heap pages, task stacks excluded.
    pub heap: u64,
    pub task_stacks: u64,
    pub page_tables: u64,
    /// Pages tasks hold through `pressure::TaskPages`.
    pub task_pages: u64,
    /// Requests refused (heap and task pages) since boot.
    pub alloc_failures: u64,
    /// Times memory was taken back from Xen under pressure.
    pub pressure_deflates: u64,
    /// Pages taken back that way.
    pub pressure_pages: u64,
}

pub fn snapshot() -> MemInfo {
    let (total, free, used) =
        kernel_memory::with_frames(|f| (f.total_pfns() - f.ballooned_count(), f.free_count(), f.used_count()));
    let heap = kernel_memory::heap_stats();
    // Stacks are heap allocations: they come out of the heap's pages (on
    // the host the heap is std's and holds no frames).
    let stacks = (sched::task_count() as u64 * (sched::STACK_SIZE as u64 / 4096)).min(heap.pages_held as u64);
    let heap_pages = heap.pages_held as u64 - stacks;
    let tables = pagetable::table_frames();
    let p = pressure::figures();
    let task_pages = pressure::task_pages();
    MemInfo {
        total,
        free,
        available: free.saturating_sub(pressure::TASK_RESERVE_PAGES),
        kernel: used.saturating_sub(heap_pages + stacks + tables + task_pages),
        heap: heap_pages,
        task_stacks: stacks,
        page_tables: tables,
        task_pages,
        alloc_failures: heap.failed_allocations as u64 + p.failures,
        pressure_deflates: p.deflates,
        pressure_pages: p.pages,
    }
}
