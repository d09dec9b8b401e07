//! The few libxenctrl and libxenstore calls memtime needs, loaded at run time with dlopen so the build host
//! needs no Xen headers or libraries (dom0 has Debian 12's libxenctrl.so.4.17 and libxenstore.so.4).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io;

use crate::Error;

const RTLD_NOW: c_int = 2;
/// `XBT_NULL`: no transaction (libxl writes the two nodes in one; memtime does not need that).
const XBT_NULL: u32 = 0;

// In glibc's libc since 2.34; no -ldl needed.
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
    fn free(ptr: *mut c_void);
}

/// The latest dlerror() text, or a placeholder when there is none.
fn dl_error() -> String {
    // SAFETY: dlerror takes no arguments; it returns NULL or a NUL-terminated string valid until the next
    // dl* call on this thread, which is copied out before returning.
    unsafe {
        let e = dlerror();
        if e.is_null() {
            "unknown dlerror".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// A dlopen'ed library. Never closed: the handles below use its code until the process exits.
struct Lib {
    handle: *mut c_void,
    name: &'static CStr,
}

impl Lib {
    /// Opens the first of `names` that loads (the versioned soname first: dom0 has no -dev symlinks).
    fn open(names: &[&'static CStr]) -> Result<Lib, Error> {
        let mut why = Vec::new();
        for &name in names {
            // SAFETY: `name` is NUL-terminated; loading a system library runs only its initialisers.
            let handle = unsafe { dlopen(name.as_ptr(), RTLD_NOW) };
            if !handle.is_null() {
                return Ok(Lib { handle, name });
            }
            why.push(dl_error());
        }
        Err(Error::Load(why.join("; ")))
    }

    /// Looks up `symbol` as a function pointer of type `F`.
    ///
    /// # Safety
    /// `F` must be an `unsafe extern "C" fn` type matching the C declaration of `symbol`.
    unsafe fn sym<F: Copy>(&self, symbol: &'static CStr) -> Result<F, Error> {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: the handle is live (never closed) and `symbol` is NUL-terminated.
        let p = unsafe { dlsym(self.handle, symbol.as_ptr()) };
        if p.is_null() {
            return Err(Error::Symbol { lib: self.name.to_string_lossy().into_owned(), why: dl_error() });
        }
        // SAFETY: `p` is a non-null code address and the caller vouches that `F` is its signature.
        Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
    }
}

type XcInterfaceOpen = unsafe extern "C" fn(*mut c_void, *mut c_void, c_uint) -> *mut c_void;
type XcInterfaceClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type XcDomainSetmaxmem = unsafe extern "C" fn(*mut c_void, u32, u64) -> c_int;
type XcDomainGetinfolist = unsafe extern "C" fn(*mut c_void, u32, c_uint, *mut c_void) -> c_int;
type XsOpen = unsafe extern "C" fn(std::ffi::c_ulong) -> *mut c_void;
type XsClose = unsafe extern "C" fn(*mut c_void);
type XsRead = unsafe extern "C" fn(*mut c_void, u32, *const c_char, *mut c_uint) -> *mut c_void;
type XsWrite = unsafe extern "C" fn(*mut c_void, u32, *const c_char, *const c_void, c_uint) -> bool;

/// Room for one `xc_domaininfo_t` (struct xen_domctl_getdomaininfo, well under 256 bytes in 4.17) with
/// slack for layout growth; 8-byte aligned for its uint64_aligned_t fields.
#[repr(C, align(8))]
struct InfoBuf([u8; 1024]);

/// `domain` (domid_t) and `tot_pages` from a Xen 4.17 xen_domctl_getdomaininfo:
/// offset 0 domain u16, 2 pad1 u16, 4 flags u32, 8 tot_pages u64.
pub fn parse_info(buf: &[u8]) -> (u16, u64) {
    let domid = u16::from_ne_bytes([buf[0], buf[1]]);
    let mut pages = [0u8; 8];
    pages.copy_from_slice(&buf[8..16]);
    (domid, u64::from_ne_bytes(pages))
}

/// Open libxenctrl and xenstore handles; both closed on drop.
pub struct Xen {
    xc: *mut c_void,
    xs: *mut c_void,
    xc_interface_close: XcInterfaceClose,
    xc_domain_setmaxmem: XcDomainSetmaxmem,
    xc_domain_getinfolist: XcDomainGetinfolist,
    xs_close: XsClose,
    xs_read: XsRead,
    xs_write: XsWrite,
}

impl Xen {
    pub fn open() -> Result<Xen, Error> {
        let xc_lib = Lib::open(&[c"libxenctrl.so.4.17", c"libxenctrl.so"])?;
        let xs_lib = Lib::open(&[c"libxenstore.so.4", c"libxenstore.so"])?;
        // SAFETY: each type alias above transcribes the Xen 4.17 xenctrl.h / xenstore.h prototype.
        let (xc_open, xs_open): (XcInterfaceOpen, XsOpen) =
            unsafe { (xc_lib.sym(c"xc_interface_open")?, xs_lib.sym(c"xs_open")?) };
        // Handles start null so that Drop closes exactly the ones that got opened.
        // SAFETY: as above.
        let mut xen = unsafe {
            Xen {
                xc: std::ptr::null_mut(),
                xs: std::ptr::null_mut(),
                xc_interface_close: xc_lib.sym(c"xc_interface_close")?,
                xc_domain_setmaxmem: xc_lib.sym(c"xc_domain_setmaxmem")?,
                xc_domain_getinfolist: xc_lib.sym(c"xc_domain_getinfolist")?,
                xs_close: xs_lib.sym(c"xs_close")?,
                xs_read: xs_lib.sym(c"xs_read")?,
                xs_write: xs_lib.sym(c"xs_write")?,
            }
        };
        // SAFETY: NULL loggers select libxenctrl's default stderr logger; flags 0 is the plain open.
        xen.xc = unsafe { xc_open(std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if xen.xc.is_null() {
            return Err(Error::Call { what: "xc_interface_open".into(), err: io::Error::last_os_error() });
        }
        // SAFETY: flags 0 opens the default xenstore connection (socket, else the kernel device).
        xen.xs = unsafe { xs_open(0) };
        if xen.xs.is_null() {
            return Err(Error::Call { what: "xs_open".into(), err: io::Error::last_os_error() });
        }
        Ok(xen)
    }

    /// Reads a xenstore node; `None` when it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<String>, Error> {
        let cpath = CString::new(path).map_err(|_| Error::BadPath(path.into()))?;
        let mut len: c_uint = 0;
        // SAFETY: `xs` is an open handle and both pointers are valid for the call.
        let p = unsafe { (self.xs_read)(self.xs, XBT_NULL, cpath.as_ptr(), &mut len) };
        if p.is_null() {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(Error::Call { what: format!("xs_read {path}"), err }),
            };
        }
        // SAFETY: on success xs_read returns a malloc'd buffer of `len` bytes, which is copied out and then
        // freed exactly once with the libc free it was allocated by.
        let value = unsafe {
            let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len as usize);
            let s = String::from_utf8_lossy(bytes).into_owned();
            free(p);
            s
        };
        Ok(Some(value))
    }

    pub fn write(&self, path: &str, value: &str) -> Result<(), Error> {
        let cpath = CString::new(path).map_err(|_| Error::BadPath(path.into()))?;
        let len = c_uint::try_from(value.len()).map_err(|_| Error::BadPath(path.into()))?;
        // SAFETY: `xs` is open; `cpath` is NUL-terminated and `value` is valid for `len` bytes.
        let ok = unsafe { (self.xs_write)(self.xs, XBT_NULL, cpath.as_ptr(), value.as_ptr().cast(), len) };
        if ok {
            Ok(())
        } else {
            Err(Error::Call { what: format!("xs_write {path}"), err: io::Error::last_os_error() })
        }
    }

    pub fn set_max_mem(&self, domid: u16, max_kib: u64) -> Result<(), Error> {
        // SAFETY: `xc` is an open handle; the arguments are plain integers.
        let rc = unsafe { (self.xc_domain_setmaxmem)(self.xc, u32::from(domid), max_kib) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::Call {
                what: format!("xc_domain_setmaxmem({domid}, {max_kib})"),
                err: io::Error::last_os_error(),
            })
        }
    }

    /// The domain's current page count, or `None` when it no longer exists (or the query failed).
    pub fn tot_pages(&self, domid: u16) -> Option<u64> {
        let mut buf = InfoBuf([0; 1024]);
        // SAFETY: `xc` is open and `buf` has room for the one entry asked for (max_domains = 1).
        let n = unsafe { (self.xc_domain_getinfolist)(self.xc, u32::from(domid), 1, buf.0.as_mut_ptr().cast()) };
        // getinfolist returns the first domain at or above `domid`: a different id means ours is gone.
        match (n, parse_info(&buf.0)) {
            (1, (id, pages)) if id == domid => Some(pages),
            _ => None,
        }
    }
}

impl Drop for Xen {
    fn drop(&mut self) {
        // SAFETY: each handle was returned by its open call and is closed once, here; null means not opened.
        unsafe {
            if !self.xs.is_null() {
                (self.xs_close)(self.xs);
            }
            if !self.xc.is_null() {
                (self.xc_interface_close)(self.xc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_at_4_17_offsets() {
        let mut buf = [0u8; 64];
        buf[0..2].copy_from_slice(&7u16.to_ne_bytes());
        buf[4..8].copy_from_slice(&0xffff_ffffu32.to_ne_bytes()); // flags: must not leak into either field
        buf[8..16].copy_from_slice(&65536u64.to_ne_bytes());
        buf[16..24].copy_from_slice(&1u64.to_ne_bytes()); // max_pages
        assert_eq!(parse_info(&buf), (7, 65536));
    }
}
