//! What names an allocation: [`Alloc`], the descriptor every pool operation validates (and
//! its byte form, stored in channel slots and sent to other processes), [`AllocKind`] and
//! [`AllocInfo`].

use crate::descriptor::{Reader, Writer};

/// What an allocation is for; travels in its record and in [`AllocInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum AllocKind {
    /// User data (messages, `Pool::alloc`).
    Data = 0,
    /// A channel's queue.
    Channel = 1,
    /// A channel's side allocation for a payload larger than its block size.
    ChannelBuffer = 2,
}

impl AllocKind {
    pub(super) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Data),
            1 => Some(Self::Channel),
            2 => Some(Self::ChannelBuffer),
            _ => None,
        }
    }
}

/// A live allocation: the descriptor every pool operation validates.
///
/// Plain data, `Copy`; holding one grants nothing by itself. Freeing it twice, or freeing it
/// after its block was reused, is refused because the record's generation moved on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Alloc {
    pub(super) block: u32,
    pub(super) record: u32,
    pub(super) gen_: u16,
    pub(super) order: u8,
    /// Low 32 bits of the pool uid, so a descriptor of another pool is refused.
    pub(super) pool_tag: u32,
}

/// Byte 11 of a serialized [`Alloc`]: tells a descriptor from zeroed or foreign bytes.
const ALLOC_MARK: u8 = 0xA5;

impl Alloc {
    /// Size of the serialized form.
    pub const SERIALIZED_LEN: usize = 16;

    /// The descriptor as bytes (little endian), for storing in a channel slot or sending to
    /// another process.
    pub fn to_bytes(&self) -> [u8; Self::SERIALIZED_LEN] {
        let mut b = [0u8; Self::SERIALIZED_LEN];
        Writer::new(&mut b)
            .u32(self.block)
            .u32(self.record)
            .u16(self.gen_)
            .u8(self.order)
            .u8(ALLOC_MARK)
            .u32(self.pool_tag);
        b
    }

    /// Parses [`Alloc::to_bytes`]. Only the shape is checked here; the pool validates the
    /// rest on every use.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::SERIALIZED_LEN {
            return None;
        }
        let mut r = Reader::new(b);
        let (block, record, gen_, order) = (r.u32(), r.u32(), r.u16(), r.u8());
        (r.u8() == ALLOC_MARK).then(|| Self {
            block,
            record,
            gen_,
            order,
            pool_tag: r.u32(),
        })
    }

    /// Record index (stable while the allocation lives; an id for diagnostics).
    pub fn id(&self) -> u32 {
        self.record
    }

    /// Generation of the record when this allocation was made.
    pub fn generation(&self) -> u16 {
        self.gen_
    }
}

/// One live allocation, as the pool's iteration reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AllocInfo {
    /// Its descriptor.
    pub alloc: Alloc,
    /// Byte offset of the block from the region start.
    pub offset: usize,
    /// Block size in bytes.
    pub size: usize,
    /// Owner id recorded at allocation (or by the last ownership transfer).
    pub owner: u32,
    /// What it is for.
    pub kind: AllocKind,
}
