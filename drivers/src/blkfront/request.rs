//! One request as the frontend keeps it until it completes: the operation,
//! the sectors, and the granted pages its data lives in. From it the ring
//! request is written, the first time and again on a new ring.

use alloc::vec::Vec;
use kernel::grant::GrantError;
use kernel::shared_page::GrantedPage;
use xen::blkif::{IndirectRequest, Request, Segment, SECTORS_PER_PAGE};

/// Pages of one indirect request: 128 KiB, in one indirect page.
pub const MAX_INDIRECT_PAGES_USED: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
}

pub(super) struct Pending {
    pub op: Op,
    pub sector: u64,
    pub sectors: u32,
    /// The data: sector `sector + 8 * i` starts page `i`.
    pub pages: Vec<GrantedPage>,
    /// The segment list, for requests of more pages than a ring slot holds.
    pub indirect: Option<GrantedPage>,
}

impl Pending {
    /// Grants every page to `backend` (a new backend after a resume); the
    /// old grants end first.
    pub fn grant_to(&mut self, backend: u16) -> Result<(), GrantError> {
        for page in self.pages.iter_mut().chain(self.indirect.as_mut()) {
            if page.domid() != backend {
                page.regrant(backend)?;
            }
        }
        Ok(())
    }

    /// Grants every page again, to `backend`, whoever held them: a new
    /// domain's backend never saw the old grants.
    pub fn regrant_all(&mut self, backend: u16) -> Result<(), GrantError> {
        for page in self.pages.iter_mut().chain(self.indirect.as_mut()) {
            page.regrant(backend)?;
        }
        Ok(())
    }

    fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        let per_page = SECTORS_PER_PAGE as u32;
        self.pages.iter().enumerate().map(move |(i, page)| {
            let left = self.sectors - i as u32 * per_page;
            // `prepare` made exactly the pages the sectors need: 1..=8 here.
            Segment { gref: page.gref(), first_sect: 0, last_sect: (left.min(per_page) - 1) as u8, _pad: 0 }
        })
    }

    /// The ring request for this request, with id `id`; the segment list
    /// of an indirect request is written into its page first.
    pub fn ring_request(&mut self, handle: u16, id: u64) -> Request {
        let write = self.op == Op::Write;
        match (self.op, self.indirect.is_some()) {
            (Op::Flush, _) => Request::flush(handle, id),
            (_, false) => {
                let segs: Vec<Segment> = self.segments().collect();
                Request::read_write(write, handle, id, self.sector, &segs).unwrap_or_else(|e| {
                    // `submit` bounds the pages; reaching here is a bug.
                    panic!("blkfront: a request of {} pages: {:?}", segs.len(), e)
                })
            }
            (_, true) => {
                let bytes: Vec<u8> = self.segments().flat_map(Segment::to_bytes).collect();
                let n = self.pages.len() as u16;
                let list = self.indirect.as_mut().expect("indirect page");
                list.copy_in(0, &bytes);
                IndirectRequest::read_write(write, handle, id, self.sector, n, &[list.gref()])
                    .unwrap_or_else(|e| panic!("blkfront: an indirect request of {n} pages: {e:?}"))
                    .to_slot()
            }
        }
    }
}
