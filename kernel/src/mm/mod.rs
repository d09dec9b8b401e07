//! Memory: frames, heap, page tables, address spaces, and moving memory
//! to and from Xen.

pub mod frames;
pub mod heap;
pub mod pagetable;

pub mod aspace;
pub mod ballooning;
pub mod kernel_memory;
pub mod limit_probe;
pub mod meminfo;
pub mod physmap;
pub mod pressure;
pub mod reservation;
pub mod suspend_release;
