//! Memory: frames, heap, page tables, address spaces.

pub mod frames;
pub mod heap;
pub mod pagetable;

#[cfg(target_os = "none")]
pub mod aspace;
#[cfg(target_os = "none")]
pub mod kernel_memory;
#[cfg(target_os = "none")]
pub mod physmap;
#[cfg(target_os = "none")]
pub mod reservation;
#[cfg(target_os = "none")]
pub mod suspend_release;
