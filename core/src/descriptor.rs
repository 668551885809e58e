//! Serialized descriptors: the one little-endian reader/writer and the one checksum that every
//! byte format of the project uses (allocation descriptors, channel descriptors, the std
//! adapter's pool and channel descriptors, the fuzz targets and the firmware tests).
//!
//! A sealed descriptor is `[magic u32][version u32][body ...][checksum u32]`, all little
//! endian, where the checksum is [`checksum`] (32-bit FNV-1a) of every byte before it.
//! [`Writer::sealed`] starts one and [`Writer::seal`] appends the checksum;
//! [`Reader::open`] checks the length, magic, version and checksum before any field is read.
//! Unsealed records (an [`crate::Alloc`] inside a channel slot) use [`Writer::new`] and
//! [`Reader::new`] without the envelope.
//!
//! Reads past the end never panic: a [`Reader`] that runs out returns zeros and remembers it,
//! and [`Reader::finish`] reports it, so a parser reads every field and checks once.

use core::fmt;

/// 32-bit FNV-1a of `bytes`: the checksum of every descriptor (and of the test payloads).
#[must_use]
pub const fn checksum(bytes: &[u8]) -> u32 {
    let mut h = 0x811C_9DC5u32;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
}

/// Why bytes are not a valid descriptor of the expected kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DescriptorError {
    /// Shorter or longer than the format allows (truncated or padded).
    Length,
    /// Not this kind of descriptor (its magic differs).
    Magic,
    /// Made by an incompatible layout version.
    Version,
    /// The checksum does not match: the bytes were damaged.
    Checksum,
}

impl DescriptorError {
    /// What went wrong, in words (the `Display` text).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Length => "wrong length (truncated or padded)",
            Self::Magic => "not this kind of descriptor (bad magic)",
            Self::Version => "unsupported layout version",
            Self::Checksum => "checksum mismatch (corrupt bytes)",
        }
    }
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for DescriptorError {}

/// Bytes of the envelope: magic, version and checksum.
pub const ENVELOPE_LEN: usize = 12;

/// Writes little-endian fields into a byte buffer.
///
/// Writing past the end of the buffer is a bug of the format's code, not of its input:
/// it panics in debug builds and is dropped in release builds.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`, without an envelope.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// A writer that has written the envelope's magic and version.
    pub fn sealed(buf: &'a mut [u8], magic: u32, version: u32) -> Self {
        let mut w = Self::new(buf);
        w.u32(magic).u32(version);
        w
    }

    /// Appends `bytes`.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let end = self.pos + bytes.len();
        debug_assert!(end <= self.buf.len(), "descriptor writer overflow");
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
        self
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Appends the checksum of everything written; returns the total length.
    pub fn seal(mut self) -> usize {
        let sum = checksum(&self.buf[..self.pos.min(self.buf.len())]);
        self.u32(sum);
        self.pos
    }
}

/// Reads little-endian fields from a byte slice.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    short: bool,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`, without an envelope.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            short: false,
        }
    }

    /// Checks a sealed descriptor of `len` bytes (`None`: any length of at least the envelope)
    /// with this `magic` and `version`, and returns a reader positioned after them over the
    /// body (the checksum excluded).
    ///
    /// # Errors
    /// [`DescriptorError`]: the first check that failed, in the order length, magic,
    /// version, checksum.
    pub fn open(
        bytes: &'a [u8],
        len: Option<usize>,
        magic: u32,
        version: u32,
    ) -> Result<Self, DescriptorError> {
        if bytes.len() < ENVELOPE_LEN || len.is_some_and(|n| n != bytes.len()) {
            return Err(DescriptorError::Length);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        let mut r = Self::new(body);
        if r.u32() != magic {
            return Err(DescriptorError::Magic);
        }
        if r.u32() != version {
            return Err(DescriptorError::Version);
        }
        if checksum(body) != Self::new(sum).u32() {
            return Err(DescriptorError::Checksum);
        }
        Ok(r)
    }

    /// The next `n` bytes (zeros past the end; see [`Reader::finish`]).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n);
        match self.buf.get(self.pos..end) {
            Some(b) => {
                self.pos = end;
                b
            }
            None => {
                self.short = true;
                self.pos = self.buf.len();
                &[]
            }
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        if b.len() == N {
            a.copy_from_slice(b);
        }
        a
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every read so far was inside the bytes.
    ///
    /// # Errors
    /// [`DescriptorError::Length`] when a read ran past the end.
    pub fn finish(&self) -> Result<(), DescriptorError> {
        if self.short {
            Err(DescriptorError::Length)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_refusal() {
        let mut b = [0u8; 24];
        let mut w = Writer::sealed(&mut b, 0xAABB_CCDD, 3);
        w.u64(7).u8(1).u16(2).u8(9);
        assert_eq!(w.seal(), 24);
        let mut r = Reader::open(&b, Some(24), 0xAABB_CCDD, 3).unwrap();
        assert_eq!((r.u64(), r.u8(), r.u16(), r.u8()), (7, 1, 2, 9));
        assert_eq!(r.remaining(), 0);
        assert!(r.finish().is_ok());
        assert_eq!(r.u32(), 0);
        assert_eq!(r.finish(), Err(DescriptorError::Length));

        let open = |b: &[u8]| Reader::open(b, Some(24), 0xAABB_CCDD, 3).map(|_| ());
        assert_eq!(open(&b[..20]), Err(DescriptorError::Length));
        assert_eq!(
            Reader::open(&b, None, 0xAABB_CCDE, 3).map(|_| ()),
            Err(DescriptorError::Magic)
        );
        assert_eq!(
            Reader::open(&b, None, 0xAABB_CCDD, 4).map(|_| ()),
            Err(DescriptorError::Version)
        );
        for i in 8..24 {
            let mut c = b;
            c[i] ^= 0x10;
            assert_eq!(open(&c), Err(DescriptorError::Checksum), "byte {i}");
        }
    }

    #[test]
    fn checksum_is_fnv1a() {
        // Published FNV-1a 32 test vectors.
        assert_eq!(checksum(b""), 0x811C_9DC5);
        assert_eq!(checksum(b"a"), 0xE40C_292C);
        assert_eq!(checksum(b"foobar"), 0xBF9C_F968);
    }
}
