//! A channel's serialized descriptor and attaching to a channel from one: the descriptor
//! names the pool, the channel's allocation and uid (`[magic][version][pool uid u64]
//! [channel allocation 16 B][c_uid u64][buffer pool tag u32][checksum]`, see
//! [`crate::descriptor`]); attach validates the bytes, then the channel's header and geometry,
//! once, and keeps the result in the handle. Inspection tools, which find channels by walking
//! the pool's allocations instead of holding descriptors, attach from the allocation
//! ([`Channel::attach_alloc`]) with the same checks.

use super::*;

impl Channel {
    /// The serialized descriptor: another party attaches with it.
    pub fn serialize(&self) -> ChannelDescriptor {
        let mut b = [0u8; Self::DESCRIPTOR_LEN];
        let mut w = Writer::sealed(&mut b, CHAN_MAGIC, CHANNEL_LAYOUT_VERSION);
        w.u64(self.pool.uid())
            .bytes(&self.alloc.to_bytes())
            .u64(self.uid)
            .u32(self.buffer_pool.map_or(0, |p| p.uid() as u32));
        let n = w.seal();
        debug_assert_eq!(n, Self::DESCRIPTOR_LEN);
        b
    }

    /// The pool allocation the channel lives in (its record id names the channel's structure
    /// owner, `STRUCT_OWNER_BIT | alloc().id()`, under which the allocations it owns are
    /// recorded).
    pub fn alloc(&self) -> Alloc {
        self.alloc
    }

    /// Checks a descriptor; returns `(pool uid, channel allocation bytes, c_uid, buffer pool
    /// tag)`.
    fn open_descriptor(bytes: &[u8]) -> Result<(u64, &[u8], u64, u32), ChannelError> {
        let mut r = Reader::open(
            bytes,
            Some(Self::DESCRIPTOR_LEN),
            CHAN_MAGIC,
            CHANNEL_LAYOUT_VERSION,
        )
        .map_err(|e| match e {
            DescriptorError::Magic => ChannelError::BadDescriptor("not a channel descriptor"),
            e => ChannelError::BadDescriptor(e.as_str()),
        })?;
        let parts = (r.u64(), r.bytes(Alloc::SERIALIZED_LEN), r.u64(), r.u32());
        r.finish()
            .map_err(|e| ChannelError::BadDescriptor(e.as_str()))?;
        Ok(parts)
    }

    /// Reads the channel uid and pool uid out of a descriptor without attaching.
    ///
    /// # Errors
    /// [`ChannelError::BadDescriptor`] when the bytes are not a valid descriptor.
    pub fn peek_descriptor(bytes: &[u8]) -> Result<(u64, u64), ChannelError> {
        let (pool_uid, _, uid, _) = Self::open_descriptor(bytes)?;
        Ok((uid, pool_uid))
    }

    /// Attaches to a channel from its serialized descriptor. `pool` must be the channel's
    /// pool (attached by this party); `buffer_pool` its buffer pool if it has one.
    ///
    /// # Errors
    /// [`ChannelError::BadDescriptor`] for malformed, truncated or foreign bytes,
    /// [`ChannelError::Destroyed`] for a channel that no longer exists.
    pub fn attach(
        pool: &Pool,
        bytes: &[u8],
        buffer_pool: Option<&Pool>,
    ) -> Result<Self, ChannelError> {
        let (pool_uid, alloc, uid, buf_tag) = Self::open_descriptor(bytes)?;
        if pool_uid != pool.uid() {
            return Err(ChannelError::BadDescriptor(
                "descriptor is for another pool",
            ));
        }
        let alloc = Alloc::from_bytes(alloc).ok_or(ChannelError::BadDescriptor("allocation"))?;
        Self::attach_at(pool, alloc, Some((uid, buf_tag)), buffer_pool)
    }

    /// Attaches to the channel that lives in `alloc`, an allocation of kind
    /// [`AllocKind::Channel`] of `pool` (as [`Pool::allocations`] lists them): how a tool
    /// that inspects a pool finds its channels without their descriptors. The channel's uid
    /// is read from its header; everything is validated as [`Channel::attach`] does.
    ///
    /// # Examples
    /// ```
    /// # use dragon_channels_core::{AllocKind, Channel, ChannelAttrs, Pool, PoolConfig, Region};
    /// # #[repr(C, align(64))] struct Mem([u8; 1 << 16]);
    /// # let mut mem = Box::new(Mem([0; 1 << 16]));
    /// # // SAFETY: `mem` outlives the region and is only accessed through it.
    /// # let region = unsafe { Region::new(mem.0.as_mut_ptr(), 1 << 16) }?;
    /// let pool = Pool::init(region, &PoolConfig::default(), 1)?;
    /// let attrs = ChannelAttrs { capacity: 4, block_size: 64 };
    /// let ch = Channel::create(&pool, 42, &attrs)?;
    /// ch.try_send(b"hi", 0, 0)?;
    /// for info in pool.allocations() {
    ///     let info = info?;
    ///     if info.kind == AllocKind::Channel {
    ///         let found = Channel::attach_alloc(&pool, &info.alloc, None)?;
    ///         assert_eq!((found.uid(), found.len()), (42, 1));
    ///     }
    /// }
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ChannelError::Destroyed`] when the allocation holds no live channel (it was
    /// destroyed, or is being created), [`ChannelError::BadDescriptor`] when `alloc` names
    /// no allocation of this pool or the channel needs a buffer pool that was not given,
    /// [`ChannelError::Corrupt`] for a header that does not hold together.
    pub fn attach_alloc(
        pool: &Pool,
        alloc: &Alloc,
        buffer_pool: Option<&Pool>,
    ) -> Result<Self, ChannelError> {
        Self::attach_at(pool, *alloc, None, buffer_pool)
    }

    /// Attaches to the channel in `alloc`; `expect` is the uid and buffer pool tag a
    /// descriptor named (`None`: take them from the header).
    fn attach_at(
        pool: &Pool,
        alloc: Alloc,
        expect: Option<(u64, u32)>,
        buffer_pool: Option<&Pool>,
    ) -> Result<Self, ChannelError> {
        let (base, size) = match pool.resolve(&alloc) {
            Ok(s) => s,
            Err(PoolError::Stale) => return Err(ChannelError::Destroyed),
            Err(PoolError::BadDescriptor) => {
                return Err(ChannelError::BadDescriptor(
                    "names no allocation of this pool",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let r = pool.region();
        let cfg = |field: usize| base + offset_of!(ChannelHeader, config) + field;
        if size < HEADER_BYTES || r.read_u32(cfg(offset_of!(ChannelConfig, magic))) != CHAN_MAGIC {
            return Err(ChannelError::Destroyed);
        }
        let found_uid = r.read_u64(cfg(offset_of!(ChannelConfig, uid)));
        let want = r.read_u64(cfg(offset_of!(ChannelConfig, buffer_pool)));
        let (uid, buf_tag) = expect.unwrap_or((found_uid, want as u32));
        if found_uid != uid {
            return Err(ChannelError::Destroyed);
        }
        if r.read_u32(cfg(offset_of!(ChannelConfig, version))) != CHANNEL_LAYOUT_VERSION {
            return Err(ChannelError::BadDescriptor("channel layout version"));
        }
        let attrs = ChannelAttrs {
            capacity: r.read_u32(cfg(offset_of!(ChannelConfig, capacity))),
            block_size: r.read_u32(cfg(offset_of!(ChannelConfig, block_size))),
        };
        let stride = attrs
            .stride()
            .map_err(|_| ChannelError::Corrupt("channel attributes"))?;
        if r.read_u32(cfg(offset_of!(ChannelConfig, one_lap))) != Queue::one_lap(attrs.capacity)
            || r.read_u32(cfg(offset_of!(ChannelConfig, stride))) as usize != stride
            || r.read_u32(cfg(offset_of!(ChannelConfig, slots_off))) as usize != HEADER_BYTES
            || HEADER_BYTES + stride * attrs.capacity as usize > size
            || r.read_u32(cfg(offset_of!(ChannelConfig, struct_owner)))
                != STRUCT_OWNER_BIT | alloc.id()
        {
            return Err(ChannelError::Corrupt("channel geometry"));
        }
        let flags = r.read_u32(cfg(offset_of!(ChannelConfig, flags)));
        let sem_bound = r.read_u32(cfg(offset_of!(ChannelConfig, sem_bound)));
        if flags & !(HAS_BUFFER_POOL | SEMAPHORE | BOUNDED) != 0
            || (flags & BOUNDED != 0 && flags & SEMAPHORE == 0)
            || (flags & BOUNDED == 0 && sem_bound != 0)
        {
            return Err(ChannelError::Corrupt("channel kind"));
        }
        let has_buf = flags & HAS_BUFFER_POOL != 0;
        match (has_buf, buffer_pool) {
            (false, None) => {}
            (true, Some(bp)) if bp.uid() == want && want as u32 == buf_tag => {}
            (true, None) => {
                return Err(ChannelError::BadDescriptor("channel needs its buffer pool"));
            }
            _ => return Err(ChannelError::BadDescriptor("wrong buffer pool")),
        }
        let ch = Self::handle(
            pool,
            buffer_pool,
            alloc,
            uid,
            base,
            &attrs,
            stride,
            (flags, sem_bound),
        );
        ch.check_ready()?;
        Ok(ch)
    }
}
