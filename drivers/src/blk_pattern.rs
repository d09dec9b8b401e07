//! The block self-test's on-disk format, so that dom0 can check a disk
//! after the guest stops: every 512-byte sector starts with the ASCII line
//! `ballast-blk sector=<decimal sector number> gen=<decimal pass>` and a
//! newline, and is zero after it.

use core::fmt::Write;

pub const SECTOR_SIZE: usize = 512;
const PREFIX: &str = "ballast-blk sector=";

/// What is wrong with a sector read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectorError {
    /// The line is missing or malformed.
    NoHeader,
    /// A well-formed line naming another sector.
    WrongSector(u64),
    /// Something other than zeros after the line.
    NotZeroFilled { at: usize },
}

/// A `core::fmt::Write` over a byte buffer.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes sector `sector` of pass `gen` into `out`.
pub fn fill(out: &mut [u8; SECTOR_SIZE], sector: u64, gen: u64) {
    out.fill(0);
    let mut c = Cursor { buf: out, len: 0 };
    // At most 19 + 20 + 5 + 20 + 1 bytes: always fits in a sector.
    let _ = writeln!(c, "{PREFIX}{sector} gen={gen}");
}

/// Checks that `data` is sector `sector` of some pass; returns the pass.
pub fn check(data: &[u8; SECTOR_SIZE], sector: u64) -> Result<u64, SectorError> {
    let nl = data.iter().position(|&b| b == b'\n').ok_or(SectorError::NoHeader)?;
    let line = core::str::from_utf8(&data[..nl]).map_err(|_| SectorError::NoHeader)?;
    let rest = line.strip_prefix(PREFIX).ok_or(SectorError::NoHeader)?;
    let (s, g) = rest.split_once(" gen=").ok_or(SectorError::NoHeader)?;
    let number =
        |t: &str| (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<u64>().ok()).flatten();
    let (Some(named), Some(gen)) = (number(s), number(g)) else { return Err(SectorError::NoHeader) };
    if named != sector {
        return Err(SectorError::WrongSector(named));
    }
    if let Some(at) = data[nl + 1..].iter().position(|&b| b != 0) {
        return Err(SectorError::NotZeroFilled { at: nl + 1 + at });
    }
    Ok(gen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sector_names_itself_and_its_pass() {
        let mut s = [0xFFu8; SECTOR_SIZE];
        fill(&mut s, 2047, 12);
        assert!(s.starts_with(b"ballast-blk sector=2047 gen=12\n"));
        assert!(s[31..].iter().all(|&b| b == 0));
        assert_eq!(check(&s, 2047), Ok(12));
        fill(&mut s, u64::MAX, u64::MAX);
        assert_eq!(check(&s, u64::MAX), Ok(u64::MAX));
    }

    #[test]
    fn damage_is_named() {
        let mut s = [0u8; SECTOR_SIZE];
        fill(&mut s, 5, 1);
        assert_eq!(check(&s, 6), Err(SectorError::WrongSector(5)), "a sector written in the wrong place");
        let mut t = s;
        t[100] = 1;
        assert_eq!(check(&t, 5), Err(SectorError::NotZeroFilled { at: 100 }));
        assert_eq!(check(&[0u8; SECTOR_SIZE], 5), Err(SectorError::NoHeader), "a sector never written");
        let mut u = s;
        u[20] = b'x'; // inside the number
        assert_eq!(check(&u, 5), Err(SectorError::NoHeader));
        let mut v = [0u8; SECTOR_SIZE];
        v[..26].copy_from_slice(b"ballast-blk sector=5 gen=\n");
        assert_eq!(check(&v, 5), Err(SectorError::NoHeader));
    }
}
