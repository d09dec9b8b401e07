//! What ballastd asks Xen itself: the host's free memory (`XEN_SYSCTL_physinfo`)
//! and every domain's real size (`XEN_SYSCTL_getdomaininfolist`), through
//! Linux's privcmd driver, as libxenctrl does but without the library, so
//! that the daemon is one static binary. Layouts and numbers are Xen
//! 4.17's (`public/sysctl.h`, `public/domctl.h`, interface version 0x15);
//! Xen refuses a call with another interface version (EACCES), so a
//! mismatch is an error, never a misread.
//!
//! Arguments live in a page from `/dev/xen/hypercall`, which Linux keeps
//! present for Xen to read and write (ordinary process memory could be
//! paged or moved under the hypercall).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

const HYPERVISOR_SYSCTL: u64 = 35;
const HYPERVISOR_DOMCTL: u64 = 36;
const DOMCTL_INTERFACE_VERSION: u32 = 0x15;
const DOMCTL_MAX_MEM: u32 = 11;
/// `struct xen_domctl`: cmd, interface_version, domain (u16), padding,
/// then the 128-byte union at 16.
const DOMCTL_SIZE: usize = 144;
const SYSCTL_INTERFACE_VERSION: u32 = 0x15;
const SYSCTL_PHYSINFO: u32 = 3;
const SYSCTL_GETDOMAININFOLIST: u32 = 6;
/// `struct xen_sysctl`: cmd, interface_version, then the 128-byte union at 8.
const SYSCTL_SIZE: usize = 136;
const SYSCTL_UNION: usize = 8;
/// `struct xen_domctl_getdomaininfo`, 112 bytes on x86_64.
const DOMINFO_SIZE: usize = 112;
const DOMINF_DYING: u32 = 1 << 0;
const DOMINF_SHUTDOWN: u32 = 1 << 2;
const DOMINF_PAUSED: u32 = 1 << 3;
const DOMINF_XS_DOMAIN: u32 = 1 << 7;
/// `struct privcmd_hypercall { u64 op; u64 arg[5]; }`: `_IOC(_IOC_NONE, 'P', 0, 48)`.
const IOCTL_PRIVCMD_HYPERCALL: libc::Ioctl = 0x0030_5000;
/// Domains listed per call; the buffer page holds the sysctl, then these.
const MAX_DOMAINS: usize = 32;
const BUF_LEN: usize = 2 * 4096;

/// One domain as Xen sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    pub domid: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    /// Dying or shut down: not a domain to balance.
    pub going: bool,
    /// Paused by the toolstack (being built, restored, or received by a
    /// migration): its memory is in flux and not the guest's doing.
    pub paused: bool,
    /// The xenstore domain: never ballooned.
    pub xenstore_domain: bool,
}

pub struct Xen {
    privcmd: File,
    _buf_file: File,
    buf: *mut u8,
}

impl Xen {
    pub fn open() -> io::Result<Self> {
        let privcmd = OpenOptions::new().read(true).write(true).open("/dev/xen/privcmd")?;
        let buf_file = OpenOptions::new().read(true).write(true).open("/dev/xen/hypercall")?;
        // SAFETY: a fresh shared mapping of the hypercall-buffer device,
        // checked for failure below; it lives as long as `Xen`.
        let buf = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BUF_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                buf_file.as_raw_fd(),
                0,
            )
        };
        if buf == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { privcmd, _buf_file: buf_file, buf: buf as *mut u8 })
    }

    fn buf(&mut self) -> &mut [u8] {
        // SAFETY: `buf` is a live BUF_LEN-byte mapping owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.buf, BUF_LEN) }
    }

    /// Issues hypercall `op` on the argument struct at the start of the
    /// buffer; returns the buffer as Xen left it.
    fn hypercall(&mut self, op: u64) -> io::Result<Vec<u8>> {
        let call: [u64; 6] = [op, self.buf as u64, 0, 0, 0, 0];
        // SAFETY: privcmd's hypercall ioctl reads the 48-byte struct; the
        // argument and anything it points to are in our hypercall buffer.
        let rc = unsafe { libc::ioctl(self.privcmd.as_raw_fd(), IOCTL_PRIVCMD_HYPERCALL, call.as_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.buf()[..BUF_LEN].to_vec())
    }

    /// Runs the sysctl `cmd` whose union part `fill` writes (given the
    /// buffer's address, for pointers into it).
    fn sysctl(&mut self, cmd: u32, fill: impl FnOnce(&mut [u8], u64)) -> io::Result<Vec<u8>> {
        let base = self.buf as u64;
        let b = self.buf();
        b.fill(0);
        b[0..4].copy_from_slice(&cmd.to_le_bytes());
        b[4..8].copy_from_slice(&SYSCTL_INTERFACE_VERSION.to_le_bytes());
        fill(&mut b[SYSCTL_UNION..SYSCTL_SIZE], base);
        self.hypercall(HYPERVISOR_SYSCTL)
    }

    /// Sets Xen's limit for `domid` (what `xl mem-set` and libxl's
    /// `xc_domain_setmaxmem` do).
    pub fn set_max_mem(&mut self, domid: u32, kb: u64) -> io::Result<()> {
        let b = &mut self.buf()[..DOMCTL_SIZE];
        b.fill(0);
        b[0..4].copy_from_slice(&DOMCTL_MAX_MEM.to_le_bytes());
        b[4..8].copy_from_slice(&DOMCTL_INTERFACE_VERSION.to_le_bytes());
        b[8..10].copy_from_slice(&(domid as u16).to_le_bytes());
        b[16..24].copy_from_slice(&kb.to_le_bytes());
        self.hypercall(HYPERVISOR_DOMCTL).map(|_| ())
    }

    /// The host's free memory, in pages.
    pub fn free_pages(&mut self) -> io::Result<u64> {
        let b = self.sysctl(SYSCTL_PHYSINFO, |_, _| {})?;
        // physinfo: ten u32s, then total_pages at 40, free_pages at 48.
        Ok(u64_at(&b, SYSCTL_UNION + 48))
    }

    /// Every domain from 0 up (at most MAX_DOMAINS per call, repeated).
    pub fn domains(&mut self) -> io::Result<Vec<DomainInfo>> {
        let mut out = Vec::new();
        let mut first: u32 = 0;
        loop {
            let b = self.sysctl(SYSCTL_GETDOMAININFOLIST, |u, base| {
                u[0..2].copy_from_slice(&(first as u16).to_le_bytes());
                u[4..8].copy_from_slice(&(MAX_DOMAINS as u32).to_le_bytes());
                u[8..16].copy_from_slice(&(base + 4096).to_le_bytes());
            })?;
            let n = (u32_at(&b, SYSCTL_UNION + 16) as usize).min(MAX_DOMAINS);
            for i in 0..n {
                out.push(parse_dominfo(&b[4096 + i * DOMINFO_SIZE..4096 + (i + 1) * DOMINFO_SIZE]));
            }
            match out.last() {
                Some(last) if n == MAX_DOMAINS && last.domid < 0x7fef => first = last.domid + 1,
                _ => return Ok(out),
            }
        }
    }
}

impl Drop for Xen {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `open`, used by nothing else.
        unsafe { libc::munmap(self.buf as *mut libc::c_void, BUF_LEN) };
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `struct xen_domctl_getdomaininfo`: domain (u16) at 0, flags at 4,
/// tot_pages at 8, max_pages at 16.
pub fn parse_dominfo(d: &[u8]) -> DomainInfo {
    let flags = u32_at(d, 4);
    DomainInfo {
        domid: u16::from_le_bytes([d[0], d[1]]) as u32,
        tot_pages: u64_at(d, 8),
        max_pages: u64_at(d, 16),
        going: flags & (DOMINF_DYING | DOMINF_SHUTDOWN) != 0,
        paused: flags & DOMINF_PAUSED != 0,
        xenstore_domain: flags & DOMINF_XS_DOMAIN != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domaininfo_record_is_read_at_xens_offsets() {
        let mut d = [0u8; DOMINFO_SIZE];
        d[0..2].copy_from_slice(&7u16.to_le_bytes());
        d[4..8].copy_from_slice(&(DOMINF_SHUTDOWN | 1 << 4).to_le_bytes());
        d[8..16].copy_from_slice(&65536u64.to_le_bytes());
        d[16..24].copy_from_slice(&131328u64.to_le_bytes());
        let i = parse_dominfo(&d);
        let want = DomainInfo {
            domid: 7,
            tot_pages: 65536,
            max_pages: 131328,
            going: true,
            paused: false,
            xenstore_domain: false,
        };
        assert_eq!(i, want);
        d[4..8].copy_from_slice(&(DOMINF_PAUSED | 1 << 4).to_le_bytes());
        let i = parse_dominfo(&d);
        assert!(!i.going && i.paused);
    }
}
