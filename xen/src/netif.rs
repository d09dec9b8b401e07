//! The network device protocol (`io/netif.h`): the transmit and receive
//! rings a frontend shares with its backend.
//!
//! Transmit: each request grants one page and names the part of it that
//! holds (a fragment of) a packet; `NETTXF_more_data` chains fragments.
//! Receive: the frontend posts granted empty pages; each response says
//! where in its page a packet landed and how long it is (a status above
//! 0), or that it failed. Sizes, offsets and ids come from the backend and
//! are checked before use.

use crate::ring::FrontRing;

pub const TXF_CSUM_BLANK: u16 = 1 << 0;
pub const TXF_DATA_VALIDATED: u16 = 1 << 1;
pub const TXF_MORE_DATA: u16 = 1 << 2;
pub const TXF_EXTRA_INFO: u16 = 1 << 3;

pub const RXF_DATA_VALIDATED: u16 = 1 << 0;
pub const RXF_CSUM_BLANK: u16 = 1 << 1;
pub const RXF_MORE_DATA: u16 = 1 << 2;
pub const RXF_EXTRA_INFO: u16 = 1 << 3;
pub const RXF_GSO_PREFIX: u16 = 1 << 4;

pub const RSP_DROPPED: i16 = -2;
pub const RSP_ERROR: i16 = -1;
pub const RSP_OKAY: i16 = 0;
/// A transmit response for a slot that carried extra information only.
pub const RSP_NULL: i16 = 1;

/// `struct netif_tx_request`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TxRequest {
    pub gref: u32,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

/// `struct netif_tx_response`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TxResponse {
    pub id: u16,
    pub status: i16,
}

/// `struct netif_rx_request`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RxRequest {
    pub id: u16,
    pub _pad: u16,
    pub gref: u32,
}

/// `struct netif_rx_response`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RxResponse {
    pub id: u16,
    pub offset: u16,
    pub flags: u16,
    /// Bytes received if above 0, else an `RSP_*` error.
    pub status: i16,
}

/// What a receive response says, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// `len` bytes at `offset` in the page posted with this id.
    Data { offset: u16, len: u16, more: bool },
    /// The backend dropped or failed the packet.
    Failed(i16),
}

/// A receive response that cannot be right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRx {
    /// The data would run past the page.
    PastThePage { offset: u16, len: u16 },
    /// A status with no meaning.
    Status(i16),
}

impl RxResponse {
    /// The response checked against the page size: a backend cannot make
    /// the frontend read outside the page it posted.
    pub fn received(&self) -> Result<Received, BadRx> {
        match self.status {
            RSP_DROPPED | RSP_ERROR => Ok(Received::Failed(self.status)),
            s if s > 0 => {
                let len = s as u16;
                if self.offset as usize + len as usize > 4096 {
                    return Err(BadRx::PastThePage { offset: self.offset, len });
                }
                Ok(Received::Data { offset: self.offset, len, more: self.flags & RXF_MORE_DATA != 0 })
            }
            s => Err(BadRx::Status(s)),
        }
    }
}

/// The transmit ring: 256 slots of 12 bytes.
pub type TxRing = FrontRing<TxRequest, TxResponse>;
/// The receive ring: 256 slots of 8 bytes.
pub type RxRing = FrontRing<RxRequest, RxResponse>;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_are_xens() {
        assert_eq!(size_of::<TxRequest>(), 12);
        assert_eq!([offset_of!(TxRequest, offset), offset_of!(TxRequest, id), offset_of!(TxRequest, size)], [4, 8, 10]);
        assert_eq!(size_of::<TxResponse>(), 4);
        assert_eq!(size_of::<RxRequest>(), 8);
        assert_eq!(offset_of!(RxRequest, gref), 4);
        assert_eq!(size_of::<RxResponse>(), 8);
        assert_eq!(offset_of!(RxResponse, status), 6);
        assert_eq!((TxRing::SIZE, RxRing::SIZE), (256, 256));
    }

    #[test]
    fn receive_responses_are_checked_against_the_page() {
        let rx = |offset, flags, status| RxResponse { id: 3, offset, flags, status };
        assert_eq!(rx(0, 0, 60).received(), Ok(Received::Data { offset: 0, len: 60, more: false }));
        assert_eq!(rx(4036, RXF_MORE_DATA, 60).received(), Ok(Received::Data { offset: 4036, len: 60, more: true }));
        assert_eq!(rx(4037, 0, 60).received(), Err(BadRx::PastThePage { offset: 4037, len: 60 }));
        assert_eq!(
            rx(u16::MAX, 0, i16::MAX).received(),
            Err(BadRx::PastThePage { offset: u16::MAX, len: i16::MAX as u16 })
        );
        assert_eq!(rx(0, 0, RSP_DROPPED).received(), Ok(Received::Failed(RSP_DROPPED)));
        assert_eq!(rx(0, 0, RSP_ERROR).received(), Ok(Received::Failed(RSP_ERROR)));
        assert_eq!(rx(0, 0, 0).received(), Err(BadRx::Status(0)), "an empty packet is no packet");
        assert_eq!(rx(0, 0, -7).received(), Err(BadRx::Status(-7)));
    }
}
