//! What a slot holds besides the queue's words: the message head (payload length and kind,
//! `hints`, `clientid`, a side allocation's descriptor) and the inline payload; and the types
//! a send or receive describes a message with.
//!
//! # Memory layout (from the slot start)
//! ```text
//! [SlotHead 8 B (queue)][MsgHead 40 B: len u32, flags u32, hints u64, clientid u64,
//!  side descriptor 16 B][inline payload, block_size bytes], padded to whole 64-byte lines
//! ```
//! A slot's message part is written by its sender between claim and publish and read by its
//! receiver between claim and release: the claim makes each access exclusive, so plain
//! (volatile) accesses suffice. Everything read is validated by the channel before use.
//!
//! # Payload kinds (`MsgHead::flags`)
//! `F_INLINE`: `len` bytes inline; `F_SIDE`: the payload is in the side allocation the
//! descriptor names; `F_TOMBSTONE`: a position a dead sender took, skipped by receivers;
//! `F_FREE_PENDING`: a free slot whose last side allocation still has to be freed.

use core::mem::{MaybeUninit, offset_of, size_of};

use crate::pool::Alloc;
use crate::queue::SLOT_HEAD;
use crate::region::Region;

/// The slot holds its payload inline.
pub(crate) const F_INLINE: u32 = 1;
/// The slot holds the descriptor of a side allocation.
pub(crate) const F_SIDE: u32 = 2;
/// A position a dead sender took: receivers skip it.
pub(crate) const F_TOMBSTONE: u32 = 8;
/// The slot is free, but the side allocation its descriptor names still has to be freed (the
/// receiver could not take the pool lock): the next sender to claim the slot frees it.
pub(crate) const F_FREE_PENDING: u32 = 16;

/// A `u64` stored as two `u32` halves, low first (no 64-bit alignment needed on any target).
pub(crate) type SplitU64 = [u32; 2];

/// The message part of a slot, after the queue's `SlotHead`. `hints` and `clientid` are
/// 8-aligned (slots are 64-aligned), so each is one access.
#[repr(C)]
struct MsgHead {
    /// Payload bytes.
    len: u32,
    /// `F_*` flags.
    flags: u32,
    hints: SplitU64,
    clientid: SplitU64,
    /// [`Alloc`] descriptor of a side allocation.
    desc: [u8; Alloc::SERIALIZED_LEN],
}

/// Offset of the message head in a slot.
const MSG: usize = SLOT_HEAD;
/// Offset of the inline payload in a slot.
const DATA: usize = SLOT_HEAD + size_of::<MsgHead>();
#[cfg(not(loom))]
const _: () = assert!(
    DATA == 48
        && (MSG + offset_of!(MsgHead, hints)).is_multiple_of(8)
        && (MSG + offset_of!(MsgHead, clientid)).is_multiple_of(8)
);

/// Bytes from one slot to the next for `block_size` inline bytes: whole cache lines, so that
/// neighbouring slots never share one.
pub(crate) const fn slot_stride(block_size: u32) -> usize {
    (DATA + block_size as usize).div_ceil(64) * 64
}

/// What a slot's message head says, read once.
#[derive(Clone, Copy)]
pub(crate) struct Head {
    /// Payload bytes (unvalidated).
    pub(crate) len: usize,
    /// `F_*` flags (unvalidated).
    pub(crate) flags: u32,
}

/// The message part of one slot at a validated offset. Only the party that holds the slot's
/// claim uses it (or the creator before publishing, or recovery after taking a claim over).
#[derive(Clone, Copy)]
pub(crate) struct MsgSlot {
    r: Region,
    slot: usize,
}

impl MsgSlot {
    /// The slot at `slot`, an offset derived from validated geometry.
    #[inline(always)]
    pub(crate) fn new(r: Region, slot: usize) -> Self {
        Self { r, slot }
    }

    #[inline(always)]
    fn at(&self, field: usize) -> usize {
        self.slot + MSG + field
    }

    /// Length and flags, read once.
    #[inline(always)]
    pub(crate) fn head(&self) -> Head {
        Head {
            len: self.r.read_u32_validated(self.at(offset_of!(MsgHead, len))) as usize,
            flags: self
                .r
                .read_u32_validated(self.at(offset_of!(MsgHead, flags))),
        }
    }

    /// The payload kind alone (a sender's look for a pending free reads no more).
    #[inline(always)]
    pub(crate) fn flags(&self) -> u32 {
        self.r
            .read_u32_validated(self.at(offset_of!(MsgHead, flags)))
    }

    /// Sets the payload kind and length.
    #[inline(always)]
    pub(crate) fn set(&self, flags: u32, len: usize) {
        self.r
            .write_u32_validated(self.at(offset_of!(MsgHead, len)), len as u32);
        self.r
            .write_u32_validated(self.at(offset_of!(MsgHead, flags)), flags);
    }

    /// Sets the flags only (after a receive: free, or free pending).
    #[inline(always)]
    pub(crate) fn set_flags(&self, flags: u32) {
        self.r
            .write_u32_validated(self.at(offset_of!(MsgHead, flags)), flags);
    }

    /// Copies `bytes` inline. The caller checked `bytes.len() <= block_size`, the slot's
    /// validated inline size.
    #[inline(always)]
    pub(crate) fn write_inline(&self, bytes: &[u8]) {
        self.r.copy_in_validated(self.slot + DATA, bytes);
        self.set(F_INLINE, bytes.len());
    }

    /// Copies the inline payload into `dest`, whose length the caller checked against the
    /// block size.
    #[inline(always)]
    pub(crate) fn read_inline(&self, dest: &mut [MaybeUninit<u8>]) {
        self.r.copy_out_validated(self.slot + DATA, dest);
    }

    /// Region offset of the inline payload (for copies between regions).
    #[inline]
    pub(crate) fn inline_offset(&self) -> usize {
        self.slot + DATA
    }

    /// Stores a side allocation's descriptor and marks the slot as holding it.
    pub(crate) fn write_side(&self, a: &Alloc, len: usize) {
        self.r
            .copy_in(self.at(offset_of!(MsgHead, desc)), &a.to_bytes());
        self.set(F_SIDE, len);
    }

    /// The side allocation descriptor (shape-checked only; the pool validates the rest).
    pub(crate) fn side_desc(&self) -> Option<Alloc> {
        let mut d = [0u8; Alloc::SERIALIZED_LEN];
        self.r.copy_out(self.at(offset_of!(MsgHead, desc)), &mut d);
        Alloc::from_bytes(&d)
    }

    /// Writes the message attributes.
    #[inline(always)]
    pub(crate) fn write_attrs(&self, hints: u64, clientid: u64) {
        self.r
            .write_u64_aligned(self.at(offset_of!(MsgHead, hints)), hints);
        self.r
            .write_u64_aligned(self.at(offset_of!(MsgHead, clientid)), clientid);
    }

    /// What a receiver of this slot reports for a payload of `len` bytes.
    #[inline(always)]
    pub(crate) fn received(&self, len: usize) -> Received {
        Received {
            len,
            hints: self.r.read_u64_aligned(self.at(offset_of!(MsgHead, hints))),
            clientid: self
                .r
                .read_u64_aligned(self.at(offset_of!(MsgHead, clientid))),
        }
    }
}

/// What a receive returns besides the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received {
    /// Payload bytes.
    pub len: usize,
    /// The sender's `hints`.
    pub hints: u64,
    /// The sender's `clientid`.
    pub clientid: u64,
}

/// How a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode<'a> {
    /// Copy these bytes (the sender keeps its buffer).
    Copy(&'a [u8]),
    /// Move this allocation (of the channel's pool or buffer pool) to the receiver: zero copy.
    /// `len` payload bytes of it are the message.
    Transfer {
        /// The allocation; owned by the sender until the send succeeds.
        alloc: Alloc,
        /// Payload bytes.
        len: usize,
    },
}

/// A receive destination that is sized once the message's length is known: a byte slice
/// (the message must fit), or a growable buffer of the caller's (the std adapter's `Vec`,
/// which is not zeroed first: the receive writes every byte it hands back).
pub trait RecvBuf {
    /// The first `len` bytes to copy the message into, which need not be initialized, or
    /// `None` when it cannot hold `len` bytes (the message then stays queued). The receive
    /// writes initialized bytes only.
    fn with_len(&mut self, len: usize) -> Option<&mut [MaybeUninit<u8>]>;

    /// Called after the receive wrote all `len` bytes of what `with_len(len)` returned.
    ///
    /// # Safety
    /// The caller wrote every one of those `len` bytes.
    unsafe fn filled(&mut self, len: usize) {
        let _ = len;
    }

    /// How many bytes it can hold (for [`crate::ChannelError::DestinationTooSmall`]).
    fn capacity(&self) -> usize;
}

impl RecvBuf for [u8] {
    #[inline]
    fn with_len(&mut self, len: usize) -> Option<&mut [MaybeUninit<u8>]> {
        let d = self.get_mut(..len)?;
        // SAFETY: same address, length and layout (`MaybeUninit<u8>` is `u8`'s layout); the
        // receive writes only initialized bytes through it (the trait's contract), so the
        // slice stays initialized.
        Some(unsafe { core::slice::from_raw_parts_mut(d.as_mut_ptr().cast(), d.len()) })
    }

    #[inline]
    fn capacity(&self) -> usize {
        self.len()
    }
}

/// Where a receive puts the payload.
pub(crate) enum Sink<'a, B: RecvBuf + ?Sized> {
    /// Copy into this buffer (a side allocation is freed).
    Into(&'a mut B),
    /// Hand over an allocation: the side allocation itself, or a new one for an inline
    /// payload (made before the message is taken, so a full pool leaves it queued).
    Alloc(&'a mut Option<Alloc>),
}
