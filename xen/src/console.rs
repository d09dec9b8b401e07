//! The PV console ring (`io/console.h`): the guest produces into `out`,
//! xenconsoled consumes; xenconsoled produces into `in`, the guest consumes.
//!
//! Only the ring arithmetic lives here, over a shared page the caller maps;
//! notifying the peer and waiting for room are the caller's business.

use core::sync::atomic::{fence, Ordering};

pub const IN_SIZE: usize = 1024;
pub const OUT_SIZE: usize = 2048;

#[repr(C)]
pub struct ConsoleInterface {
    pub input: [u8; IN_SIZE],
    pub output: [u8; OUT_SIZE],
    pub in_cons: u32,
    pub in_prod: u32,
    pub out_cons: u32,
    pub out_prod: u32,
}

impl ConsoleInterface {
    /// A page as the toolstack hands it over: empty rings, indices zero.
    pub const fn zeroed() -> Self {
        Self { input: [0; IN_SIZE], output: [0; OUT_SIZE], in_cons: 0, in_prod: 0, out_cons: 0, out_prod: 0 }
    }
}

/// A view of a console ring page that the other end updates concurrently.
pub struct ConsoleRing {
    page: *mut ConsoleInterface,
}

// SAFETY: the ring is a shared page with its own producer/consumer protocol;
// callers serialise guest-side access (ballast holds a lock around it).
unsafe impl Send for ConsoleRing {}

impl ConsoleRing {
    /// # Safety
    /// `page` must point to a mapped console ring page that stays mapped
    /// for as long as the `ConsoleRing` is used.
    pub const unsafe fn new(page: *mut ConsoleInterface) -> Self {
        Self { page }
    }

    /// Copies as much of `bytes` as fits into the output ring and returns
    /// how many bytes were taken. Zero means the ring is full.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let ring = self.page;
        // SAFETY: `new`'s contract keeps the page mapped; the indices are
        // read with volatile loads because the peer changes them.
        unsafe {
            let cons = core::ptr::addr_of!((*ring).out_cons).read_volatile();
            let prod = core::ptr::addr_of!((*ring).out_prod).read_volatile();
            fence(Ordering::Acquire);
            let used = prod.wrapping_sub(cons) as usize;
            if used > OUT_SIZE {
                // A peer that corrupts the indices gets no more output
                // rather than an overrun of the page.
                return 0;
            }
            let n = bytes.len().min(OUT_SIZE - used);
            let out = core::ptr::addr_of_mut!((*ring).output) as *mut u8;
            for (i, b) in bytes[..n].iter().enumerate() {
                let idx = (prod as usize + i) % OUT_SIZE;
                out.add(idx).write_volatile(*b);
            }
            fence(Ordering::Release);
            core::ptr::addr_of_mut!((*ring).out_prod).write_volatile(prod.wrapping_add(n as u32));
            n
        }
    }

    /// Bytes written but not yet consumed by xenconsoled.
    pub fn pending_output(&self) -> usize {
        // SAFETY: as in `write`.
        unsafe {
            let cons = core::ptr::addr_of!((*self.page).out_cons).read_volatile();
            let prod = core::ptr::addr_of!((*self.page).out_prod).read_volatile();
            prod.wrapping_sub(cons) as usize
        }
    }

    /// Moves input bytes into `buf` and returns how many were read.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let ring = self.page;
        // SAFETY: as in `write`.
        unsafe {
            let cons = core::ptr::addr_of!((*ring).in_cons).read_volatile();
            let prod = core::ptr::addr_of!((*ring).in_prod).read_volatile();
            fence(Ordering::Acquire);
            let avail = prod.wrapping_sub(cons) as usize;
            if avail > IN_SIZE {
                // Corrupt indices: drop what is there instead of reading past the ring.
                core::ptr::addr_of_mut!((*ring).in_cons).write_volatile(prod);
                return 0;
            }
            let n = avail.min(buf.len());
            let input = core::ptr::addr_of!((*ring).input) as *const u8;
            for (i, slot) in buf[..n].iter_mut().enumerate() {
                *slot = input.add((cons as usize + i) % IN_SIZE).read_volatile();
            }
            fence(Ordering::Release);
            core::ptr::addr_of_mut!((*ring).in_cons).write_volatile(cons.wrapping_add(n as u32));
            n
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;

    fn blank() -> Box<ConsoleInterface> {
        Box::new(ConsoleInterface::zeroed())
    }

    #[test]
    fn write_stops_when_full_and_wraps() {
        let mut page = blank();
        page.out_prod = u32::MAX - 3; // indices wrap around u32
        page.out_cons = u32::MAX - 3;
        let mut ring = unsafe { ConsoleRing::new(&mut *page) };
        assert_eq!(ring.write(&[7u8; 3000]), OUT_SIZE);
        assert_eq!(ring.write(b"x"), 0);
        assert_eq!(ring.pending_output(), OUT_SIZE);
        page.out_cons = page.out_cons.wrapping_add(10);
        let mut ring = unsafe { ConsoleRing::new(&mut *page) };
        assert_eq!(ring.write(b"0123456789abc"), 10);
    }

    #[test]
    fn read_takes_in_order_across_the_wrap() {
        let mut page = blank();
        page.in_cons = 1020;
        page.in_prod = 1020;
        for (i, b) in b"hello!".iter().enumerate() {
            page.input[(1020 + i) % IN_SIZE] = *b;
        }
        page.in_prod += 6;
        let mut ring = unsafe { ConsoleRing::new(&mut *page) };
        let mut buf = [0u8; 4];
        assert_eq!(ring.read(&mut buf), 4);
        assert_eq!(&buf, b"hell");
        assert_eq!(ring.read(&mut buf), 2);
        assert_eq!(&buf[..2], b"o!");
        assert_eq!(ring.read(&mut buf), 0);
    }

    #[test]
    fn corrupt_input_indices_are_dropped_not_overrun() {
        let mut page = blank();
        page.in_prod = 5000;
        let mut ring = unsafe { ConsoleRing::new(&mut *page) };
        let mut buf = [0u8; 16];
        assert_eq!(ring.read(&mut buf), 0);
        assert_eq!(page.in_cons, 5000);
    }
}
