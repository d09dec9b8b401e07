//! Xen PV interfaces for ballast.
//!
//! Everything the guest shares with the hypervisor or its peers: ABI
//! numbers and layouts, the hypercall page, and the shared-ring protocols
//! (console, xenstore). Ring and protocol logic is plain code over memory
//! the caller provides, so it runs under `cargo test` on the host; only
//! `hypercall` needs the real Xen and is built for the bare-metal target
//! alone.

#![cfg_attr(not(any(test, feature = "sim")), no_std)]

// `alloc` needs a `#[global_allocator]` in the final image: the kernel
// turns this feature on once its heap is installed.
#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

pub mod abi;
pub mod blkif;
pub mod console;
#[cfg(target_os = "none")]
pub mod hv;
#[cfg(target_os = "none")]
pub mod hypercall;
pub mod netif;
pub mod ring;
pub mod seam;
// Also in the crate's own tests, which test the simulated backends.
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod xenbus;
#[cfg(any(test, feature = "alloc"))]
pub mod xenstore;
