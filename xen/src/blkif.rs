//! The block device protocol (`io/blkif.h`, x86_64 layout): the requests a
//! frontend puts on its ring and the responses its backend returns.
//!
//! A request names up to [`MAX_SEGMENTS`] granted pages, each with the
//! first and last 512-byte sector used in it; an indirect request names
//! up to [`MAX_INDIRECT_PAGES`] granted pages that hold the segment lists
//! instead. Responses echo the request's `id` and carry a status; a status
//! outside the three the protocol defines is the backend's error.

use crate::ring::FrontRing;

pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
pub const OP_WRITE_BARRIER: u8 = 2;
pub const OP_FLUSH_DISKCACHE: u8 = 3;
pub const OP_DISCARD: u8 = 5;
pub const OP_INDIRECT: u8 = 6;

/// Segments in a direct request.
pub const MAX_SEGMENTS: usize = 11;
/// Pages of segment lists in an indirect request.
pub const MAX_INDIRECT_PAGES: usize = 8;
/// Segments one indirect page holds (8 bytes each).
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = 4096 / 8;
pub const SECTOR_SIZE: usize = 512;
/// Sectors in one page: `last_sect` is at most this minus one.
pub const SECTORS_PER_PAGE: u8 = 8;

/// `struct blkif_request_segment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    pub gref: u32,
    /// First and last sector of the page used, inclusive.
    pub first_sect: u8,
    pub last_sect: u8,
    pub _pad: u16,
}

/// `struct blkif_request`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Request {
    pub operation: u8,
    pub nr_segments: u8,
    /// The device (`blkif_vdev_t`).
    pub handle: u16,
    /// The frontend's own value, echoed in the response.
    pub id: u64,
    /// First sector on the disk (reads and writes).
    pub sector_number: u64,
    pub seg: [Segment; MAX_SEGMENTS],
}

/// `struct blkif_request_indirect`: the same slot as a [`Request`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IndirectRequest {
    /// [`OP_INDIRECT`].
    pub operation: u8,
    /// [`OP_READ`] or [`OP_WRITE`].
    pub indirect_op: u8,
    pub nr_segments: u16,
    pub id: u64,
    pub sector_number: u64,
    pub handle: u16,
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
}

/// `struct blkif_response`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Response {
    pub id: u64,
    pub operation: u8,
    pub status: i16,
}

/// A response's status, as the protocol defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Okay,
    /// The request failed.
    Error,
    /// The backend does not do this operation (flush, barrier, discard).
    NotSupported,
}

/// A status no protocol value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadStatus(pub i16);

impl Response {
    pub fn status(&self) -> Result<Status, BadStatus> {
        match self.status {
            0 => Ok(Status::Okay),
            -1 => Ok(Status::Error),
            -2 => Ok(Status::NotSupported),
            other => Err(BadStatus(other)),
        }
    }
}

/// Why a segment cannot be described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// More segments than a direct request holds.
    TooMany,
    /// Sectors outside one page, or first after last.
    BadSectors { first: u8, last: u8 },
}

impl Request {
    /// A read or write of the pages `segs` ([`Segment`]s with their
    /// sectors) starting at disk sector `sector`.
    pub fn read_write(write: bool, handle: u16, id: u64, sector: u64, segs: &[Segment]) -> Result<Self, SegmentError> {
        if segs.len() > MAX_SEGMENTS {
            return Err(SegmentError::TooMany);
        }
        if let Some(s) = segs.iter().find(|s| s.first_sect > s.last_sect || s.last_sect >= SECTORS_PER_PAGE) {
            return Err(SegmentError::BadSectors { first: s.first_sect, last: s.last_sect });
        }
        let mut r = Request {
            operation: if write { OP_WRITE } else { OP_READ },
            nr_segments: segs.len() as u8,
            handle,
            id,
            sector_number: sector,
            seg: [Segment::default(); MAX_SEGMENTS],
        };
        r.seg[..segs.len()].copy_from_slice(segs);
        Ok(r)
    }

    /// A cache flush (`feature-flush-cache`): no segments.
    pub fn flush(handle: u16, id: u64) -> Self {
        Request { operation: OP_FLUSH_DISKCACHE, handle, id, ..Default::default() }
    }

    /// Sectors the request moves.
    pub fn sectors(&self) -> u64 {
        self.seg[..(self.nr_segments as usize).min(MAX_SEGMENTS)]
            .iter()
            .map(|s| (s.last_sect as u64 + 1).saturating_sub(s.first_sect as u64))
            .sum()
    }
}

impl Segment {
    /// A segment of `sectors` sectors from the start of page `gref`.
    pub fn whole(gref: u32, sectors: u8) -> Result<Self, SegmentError> {
        if sectors == 0 || sectors > SECTORS_PER_PAGE {
            return Err(SegmentError::BadSectors { first: 0, last: sectors.wrapping_sub(1) });
        }
        Ok(Segment { gref, first_sect: 0, last_sect: sectors - 1, _pad: 0 })
    }

    /// The segment as it sits in an indirect page.
    pub fn to_bytes(self) -> [u8; 8] {
        let g = self.gref.to_le_bytes();
        [g[0], g[1], g[2], g[3], self.first_sect, self.last_sect, 0, 0]
    }
}

impl IndirectRequest {
    /// A read or write of `nr_segments` segments listed in the pages
    /// `indirect` (each holding [`SEGMENTS_PER_INDIRECT_PAGE`]).
    pub fn read_write(
        write: bool,
        handle: u16,
        id: u64,
        sector: u64,
        nr_segments: u16,
        indirect: &[u32],
    ) -> Result<Self, SegmentError> {
        let pages_needed = (nr_segments as usize).div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
        if nr_segments == 0 || indirect.len() != pages_needed || pages_needed > MAX_INDIRECT_PAGES {
            return Err(SegmentError::TooMany);
        }
        let mut grefs = [0u32; MAX_INDIRECT_PAGES];
        grefs[..indirect.len()].copy_from_slice(indirect);
        Ok(IndirectRequest {
            operation: OP_INDIRECT,
            indirect_op: if write { OP_WRITE } else { OP_READ },
            nr_segments,
            id,
            sector_number: sector,
            handle,
            indirect_grefs: grefs,
        })
    }

    /// The request as it sits in a ring slot, whose type is [`Request`]:
    /// its 64 bytes first, zeros after.
    pub fn to_slot(&self) -> Request {
        let mut slot = Request::default();
        // SAFETY: both types are plain `repr(C)` integers (any bytes are a
        // valid `Request`), the source is smaller than the destination, and
        // the two do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (self as *const IndirectRequest).cast::<u8>(),
                (&mut slot as *mut Request).cast::<u8>(),
                core::mem::size_of::<IndirectRequest>(),
            )
        };
        slot
    }
}

/// The blkif ring: 32 slots of 112 bytes.
pub type BlkRing = FrontRing<Request, Response>;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_are_xens() {
        assert_eq!(size_of::<Segment>(), 8);
        assert_eq!(size_of::<Request>(), 112);
        assert_eq!(
            [
                offset_of!(Request, handle),
                offset_of!(Request, id),
                offset_of!(Request, sector_number),
                offset_of!(Request, seg)
            ],
            [2, 8, 16, 24]
        );
        assert_eq!(size_of::<IndirectRequest>(), 64);
        assert_eq!([offset_of!(IndirectRequest, handle), offset_of!(IndirectRequest, indirect_grefs)], [24, 28]);
        assert_eq!(size_of::<Response>(), 16);
        assert_eq!([offset_of!(Response, operation), offset_of!(Response, status)], [8, 10]);
        assert_eq!(BlkRing::SIZE, 32);
    }

    #[test]
    fn requests_are_checked_and_statuses_parsed() {
        let seg = |first, last| Segment { gref: 9, first_sect: first, last_sect: last, _pad: 0 };
        let r = Request::read_write(true, 51712, 7, 100, &[seg(0, 7), seg(2, 3)]).unwrap();
        assert_eq!((r.operation, r.nr_segments, r.sectors()), (OP_WRITE, 2, 10));
        assert_eq!(
            Request::read_write(false, 0, 0, 0, &[seg(0, 8)]),
            Err(SegmentError::BadSectors { first: 0, last: 8 })
        );
        assert_eq!(
            Request::read_write(false, 0, 0, 0, &[seg(5, 4)]),
            Err(SegmentError::BadSectors { first: 5, last: 4 })
        );
        assert_eq!(Request::read_write(false, 0, 0, 0, &[seg(0, 0); 12]), Err(SegmentError::TooMany));
        assert_eq!(Request::flush(3, 1).sectors(), 0);
        let rsp = |status| Response { id: 1, operation: OP_READ, status };
        assert_eq!(rsp(0).status(), Ok(Status::Okay));
        assert_eq!(rsp(-1).status(), Ok(Status::Error));
        assert_eq!(rsp(-2).status(), Ok(Status::NotSupported));
        assert_eq!(rsp(5).status(), Err(BadStatus(5)));
        assert_eq!(rsp(i16::MIN).status(), Err(BadStatus(i16::MIN)));
    }

    #[test]
    fn indirect_requests_fill_a_slot_as_xen_reads_it() {
        let r = IndirectRequest::read_write(true, 768, 0x1234, 99, 32, &[77]).unwrap();
        let slot = r.to_slot();
        assert_eq!((slot.operation, slot.nr_segments), (OP_INDIRECT, OP_WRITE));
        assert_eq!((slot.id, slot.sector_number), (0x1234, 99));
        // handle at 24 = seg[0].gref's low half; indirect_grefs[0] at 28.
        assert_eq!(slot.seg[0].gref & 0xffff, 768);
        assert_eq!(slot.seg[0].first_sect, 77);
        assert_eq!(IndirectRequest::read_write(true, 0, 0, 0, 513, &[1]), Err(SegmentError::TooMany));
        assert_eq!(IndirectRequest::read_write(true, 0, 0, 0, 0, &[]), Err(SegmentError::TooMany));
        assert_eq!(Segment::whole(5, 8).unwrap().to_bytes(), [5, 0, 0, 0, 0, 7, 0, 0]);
        assert!(Segment::whole(5, 0).is_err() && Segment::whole(5, 9).is_err());
    }
}
