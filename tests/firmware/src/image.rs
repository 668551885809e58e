//! The region-image exchange between a 32-bit firmware and a 64-bit host program: what both
//! sides agree on. The firmware crate and `host-check` (through `#[path]`) compile this same
//! file, so the two sides cannot drift apart.
//!
//! The sender side creates a pool and one channel in an [`IMAGE_LEN`]-byte region, sends
//! [`MESSAGES`] messages (inline copies, one larger than the block size that goes to a side
//! allocation, and transfers of the sender's own allocations), leaves one marker allocation,
//! and writes the region image plus a descriptor file. The receiver loads the image into a
//! 64-byte aligned buffer of exactly that length, attaches pool and channel, and checks every
//! message byte by byte (each carries its sequence number and an FNV-1a checksum), the 64-bit
//! `hints`/`clientid` values and the marker.
//!
//! Descriptor file: the 48-byte serialized channel descriptor, then the marker allocation's
//! 16-byte descriptor ([`DESC_FILE_LEN`] bytes in all).

use dragon_channels_core::pool::STRUCT_OWNER_BIT;
use dragon_channels_core::{
    Alloc, AllocKind, Channel, ChannelAttrs, ChannelError, Pool, PoolConfig, PoolError, Region,
    SendMode, checksum,
};

/// Region length of both images (the pool records it; attach needs exactly this length).
pub const IMAGE_LEN: usize = 8 * 1024;
/// Bytes of the descriptor file.
pub const DESC_FILE_LEN: usize = Channel::DESCRIPTOR_LEN + Alloc::SERIALIZED_LEN;
/// Messages each side sends.
pub const MESSAGES: u32 = 7;
/// Largest message.
pub const MAX_MESSAGE: usize = 300;
/// Bytes of the marker allocation.
pub const MARKER_LEN: usize = 100;

/// Image written by the firmware, read by the host.
pub const FW_TO_HOST_IMAGE: &str = "fw2host.img";
/// Descriptors written by the firmware, read by the host.
pub const FW_TO_HOST_DESC: &str = "fw2host.desc";
/// Image written by the host, read by the firmware.
pub const HOST_TO_FW_IMAGE: &str = "host2fw.img";
/// Descriptors written by the host, read by the firmware.
pub const HOST_TO_FW_DESC: &str = "host2fw.desc";

/// Who made an image: decides uids, owner ids and the payload seed, so that an image from the
/// wrong side (or a stale file) is caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A 32-bit Cortex-M firmware.
    Firmware,
    /// The 64-bit host program.
    Host,
}

impl Side {
    /// Pool uid (high half non-zero: the u64 is stored as two u32 halves).
    pub const fn pool_uid(self) -> u64 {
        match self {
            Self::Firmware => 0xF1A7_0032_0000_0001,
            Self::Host => 0x4057_0064_0000_0002,
        }
    }

    /// Channel uid.
    pub const fn channel_uid(self) -> u64 {
        match self {
            Self::Firmware => 0x0C4A_0000_0000_0032,
            Self::Host => 0x0C4A_0000_0000_0064,
        }
    }

    /// Owner id the sender uses.
    pub const fn owner(self) -> u32 {
        match self {
            Self::Firmware => 32,
            Self::Host => 64,
        }
    }

    fn seed(self) -> u32 {
        match self {
            Self::Firmware => 0x3232_3232,
            Self::Host => 0x6464_6464,
        }
    }

    /// Pool configuration of this side's image.
    pub const fn pool_config(self) -> PoolConfig {
        PoolConfig {
            min_block: 32,
            max_allocations: Some(24),
            uid: self.pool_uid(),
        }
    }
}

/// Attributes of the image channel: room for every message; block size below the largest
/// message so one of them needs a side allocation.
pub const ATTRS: ChannelAttrs = ChannelAttrs {
    capacity: 8,
    block_size: 96,
};

/// How message `seq` travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Copied inline into the slot.
    Inline,
    /// Copied into a side allocation (payload > block size).
    Side,
    /// The sender's own allocation is transferred (zero copy).
    Transfer,
}

/// Mode of message `seq`.
pub const fn mode(seq: u32) -> Mode {
    match seq {
        2 => Mode::Side,
        4 | 6 => Mode::Transfer,
        _ => Mode::Inline,
    }
}

/// Length of message `seq` (sequence number and checksum included).
pub const fn message_len(seq: u32) -> usize {
    match mode(seq) {
        Mode::Side => MAX_MESSAGE,
        Mode::Transfer => 150 + seq as usize,
        Mode::Inline => 8 + 11 * seq as usize,
    }
}

/// The `hints` of message `seq` (both u32 halves non-zero).
pub const fn hints(seq: u32) -> u64 {
    0xA5A5_0000_0000_0000 | ((seq as u64) << 32) | 0x1000 | seq as u64
}

/// The `clientid` of message `seq`.
pub const fn clientid(side: Side, seq: u32) -> u64 {
    side.pool_uid() ^ ((seq as u64) << 40)
}

/// Writes message `seq` of `side` into `buf`: `[seq u32 LE][payload][checksum of the rest u32
/// LE]` ([`checksum`], FNV-1a). Returns its length.
///
/// # Panics
/// When `buf` is shorter than [`message_len`].
pub fn make_message(side: Side, seq: u32, buf: &mut [u8]) -> usize {
    let len = message_len(seq);
    let buf = &mut buf[..len];
    buf[..4].copy_from_slice(&seq.to_le_bytes());
    let mut x = side.seed() ^ seq.wrapping_mul(0x9E37_79B9);
    for b in &mut buf[4..len - 4] {
        // xorshift32
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let sum = checksum(&buf[..len - 4]);
    buf[len - 4..].copy_from_slice(&sum.to_le_bytes());
    len
}

/// Whether `got` is exactly message `seq` of `side`.
pub fn verify_message(side: Side, seq: u32, got: &[u8]) -> bool {
    let mut want = [0u8; MAX_MESSAGE];
    let len = make_message(side, seq, &mut want);
    got.len() == len && got == &want[..len] && {
        let sum = u32::from_le_bytes([got[len - 4], got[len - 3], got[len - 2], got[len - 1]]);
        sum == checksum(&got[..len - 4])
    }
}

/// Byte `i` of the marker allocation of `side`.
pub const fn marker_byte(side: Side, i: usize) -> u8 {
    (i as u8).wrapping_mul(7) ^ side.owner() as u8
}

/// Copies `bytes` into the allocation `a` of `pool` (which the caller owns exclusively).
///
/// # Panics
/// When `a` is not live or `bytes` does not fit it.
pub fn write_alloc(pool: &Pool, a: &Alloc, bytes: &[u8]) {
    let (off, size) = match pool.resolve(a) {
        Ok(s) => s,
        Err(e) => panic!("resolve: {}", e),
    };
    assert!(bytes.len() <= size, "payload larger than its allocation");
    // SAFETY: `resolve` checked that `a` is live and that `off..off + size` lies in the region;
    // the caller owns the allocation, so no other party touches these bytes now.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), pool.region().base().add(off), bytes.len())
    };
}

/// Copies the first `out.len()` bytes of allocation `a` of `pool` into `out`.
///
/// # Panics
/// When `a` is not live or `out` is longer than the allocation.
pub fn read_alloc(pool: &Pool, a: &Alloc, out: &mut [u8]) {
    let (off, size) = match pool.resolve(a) {
        Ok(s) => s,
        Err(e) => panic!("resolve: {}", e),
    };
    assert!(out.len() <= size, "read past the allocation");
    // SAFETY: as in `write_alloc`; the caller owns the allocation (it received it).
    unsafe {
        core::ptr::copy_nonoverlapping(pool.region().base().add(off), out.as_mut_ptr(), out.len())
    };
}

/// Why an image step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// A pool operation failed.
    Pool(PoolError),
    /// A channel operation failed.
    Channel(ChannelError),
    /// A value differs from what the sender put in.
    Mismatch,
}

impl From<PoolError> for ImageError {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

impl From<ChannelError> for ImageError {
    fn from(e: ChannelError) -> Self {
        Self::Channel(e)
    }
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Pool(e) => write!(f, "pool: {e}"),
            Self::Channel(e) => write!(f, "channel: {e}"),
            Self::Mismatch => f.write_str("value differs from what the sender put in"),
        }
    }
}

/// The result of one receiver check, handed to the caller's reporter.
pub type Outcome = Result<(), ImageError>;

fn expect(ok: bool) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(ImageError::Mismatch)
    }
}

/// Builds `side`'s image in `region` (which must be [`IMAGE_LEN`] bytes): pool, channel,
/// [`MESSAGES`] messages and the marker allocation. Returns the descriptor file.
///
/// # Errors
/// The first pool or channel operation that fails.
pub fn build(region: Region, side: Side) -> Result<[u8; DESC_FILE_LEN], ImageError> {
    if region.len() != IMAGE_LEN {
        return Err(ImageError::Mismatch);
    }
    let pool = Pool::init(region, &side.pool_config(), side.owner())?;
    let ch = Channel::create(&pool, side.channel_uid(), &ATTRS)?;
    let mut buf = [0u8; MAX_MESSAGE];
    for seq in 0..MESSAGES {
        let len = make_message(side, seq, &mut buf);
        let (h, c) = (hints(seq), clientid(side, seq));
        match mode(seq) {
            Mode::Inline | Mode::Side => ch.try_send(&buf[..len], h, c)?,
            Mode::Transfer => {
                let alloc = pool.alloc(len, AllocKind::Data)?;
                write_alloc(&pool, &alloc, &buf[..len]);
                ch.try_send_mode(SendMode::Transfer { alloc, len }, h, c)?;
            }
        }
    }
    let marker = pool.alloc(MARKER_LEN, AllocKind::Data)?;
    let mut m = [0u8; MARKER_LEN];
    for (i, b) in m.iter_mut().enumerate() {
        *b = marker_byte(side, i);
    }
    write_alloc(&pool, &marker, &m);
    let mut desc = [0u8; DESC_FILE_LEN];
    desc[..Channel::DESCRIPTOR_LEN].copy_from_slice(&ch.serialize());
    desc[Channel::DESCRIPTOR_LEN..].copy_from_slice(&marker.to_bytes());
    Ok(desc)
}

/// Live allocations the sender leaves: channel, side buffer, two transfers, marker.
const LIVE_IN_IMAGE: u32 = 5;

/// Attaches to an image `from` built (already loaded into `region`, whose length is the
/// image file's), receives and checks everything, then destroys the channel and frees the
/// marker. Every check goes to `report(name, outcome)`; a failed attach ends the run early.
pub fn receive(
    region: Region,
    desc: &[u8],
    from: Side,
    owner: u32,
    report: &mut dyn FnMut(&'static str, Outcome),
) {
    report("image length", expect(region.len() == IMAGE_LEN));
    report(
        "descriptor file length",
        expect(desc.len() == DESC_FILE_LEN),
    );
    if desc.len() != DESC_FILE_LEN {
        return;
    }
    let pool = match Pool::attach(region, owner) {
        Ok(p) => p,
        Err(e) => return report("Pool::attach", Err(e.into())),
    };
    report("Pool::attach", Ok(()));
    report("pool uid", expect(pool.uid() == from.pool_uid()));
    report(
        "min block",
        expect(pool.min_block() == from.pool_config().min_block as usize),
    );
    // The pool records its region size: one cache line less is refused.
    if let Some(shorter) = shrink(region) {
        report(
            "attach with a shorter length is refused",
            expect(matches!(
                Pool::attach(shorter, owner),
                Err(PoolError::SizeMismatch { found, .. }) if found == IMAGE_LEN as u64
            )),
        );
    }
    match pool.stats() {
        Ok(s) => report(
            "live allocations in the image",
            expect(s.live == LIVE_IN_IMAGE),
        ),
        Err(e) => report("stats", Err(e.into())),
    }
    let (mut chans, mut bufs, mut data, mut by_channel, mut by_sender) = (0, 0, 0, 0, 0);
    for info in pool.allocations() {
        match info {
            Ok(i) => {
                match i.kind {
                    AllocKind::Channel => chans += 1,
                    AllocKind::ChannelBuffer => bufs += 1,
                    AllocKind::Data => data += 1,
                }
                if i.owner & STRUCT_OWNER_BIT != 0 {
                    by_channel += 1;
                } else if i.owner == from.owner() {
                    by_sender += 1;
                }
            }
            Err(e) => report("allocations()", Err(e.into())),
        }
    }
    // The channel owns itself, its side buffer and both transfers; the sender the marker.
    report(
        "allocation kinds and owners",
        expect((chans, bufs, data, by_channel, by_sender) == (1, 1, 3, 4, 1)),
    );
    let chan_desc = &desc[..Channel::DESCRIPTOR_LEN];
    report(
        "peek_descriptor",
        expect(Channel::peek_descriptor(chan_desc) == Ok((from.channel_uid(), from.pool_uid()))),
    );
    let ch = match Channel::attach(&pool, chan_desc, None) {
        Ok(c) => c,
        Err(e) => return report("Channel::attach", Err(e.into())),
    };
    report("Channel::attach", Ok(()));
    report(
        "channel geometry",
        expect(
            ch.capacity() == ATTRS.capacity as usize
                && ch.block_size() == ATTRS.block_size as usize
                && ch.len() == MESSAGES as usize,
        ),
    );
    let mut buf = [0u8; MAX_MESSAGE];
    for seq in 0..MESSAGES {
        let got = if mode(seq) == Mode::Transfer {
            ch.try_recv_alloc().map(|(a, got)| {
                read_alloc(&pool, &a, &mut buf[..got.len.min(MAX_MESSAGE)]);
                let mine = pool.owner_of(&a) == Ok(owner);
                let freed = pool.free(a).is_ok();
                (got, mine && freed)
            })
        } else {
            ch.try_recv_into(&mut buf).map(|got| (got, true))
        };
        match got {
            Ok((got, owned)) => report(
                "message",
                expect(
                    owned
                        && got.len <= MAX_MESSAGE
                        && verify_message(from, seq, &buf[..got.len])
                        && got.hints == hints(seq)
                        && got.clientid == clientid(from, seq),
                ),
            ),
            Err(e) => report("receive", Err(e.into())),
        }
    }
    report(
        "channel empty after the last message",
        expect(ch.try_recv_into(&mut buf) == Err(ChannelError::Empty)),
    );
    match Alloc::from_bytes(&desc[Channel::DESCRIPTOR_LEN..]) {
        Some(marker) => {
            report(
                "marker owner",
                expect(pool.owner_of(&marker) == Ok(from.owner())),
            );
            let mut m = [0u8; MARKER_LEN];
            read_alloc(&pool, &marker, &mut m);
            report(
                "marker bytes",
                expect(
                    m.iter()
                        .enumerate()
                        .all(|(i, &b)| b == marker_byte(from, i)),
                ),
            );
            report("free marker", pool.free(marker).map_err(Into::into));
        }
        None => report("marker descriptor", Err(ImageError::Mismatch)),
    }
    report("destroy", ch.destroy().map_err(Into::into));
    match pool.stats() {
        Ok(s) => report(
            "pool empty at the end",
            expect(s.live == 0 && s.free == s.total),
        ),
        Err(e) => report("stats", Err(e.into())),
    }
}

/// The same memory, one cache line shorter.
fn shrink(region: Region) -> Option<Region> {
    let len = region.len().checked_sub(64)?;
    // SAFETY: a prefix of a valid region is valid under the same contract.
    unsafe { Region::new(region.base(), len) }.ok()
}
