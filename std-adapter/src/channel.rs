//! [`Channel`]: an MPMC message channel living in a [`MemoryPool`], attachable from any
//! process through its serialized descriptor.
//!
//! # Serialized descriptor
//! The core's channel descriptor names the channel inside its pool; a process that has not
//! mapped the pool also needs to find the pool. The adapter's descriptor therefore wraps both:
//! ```text
//! [magic "DRCW" u32][version u32][pool descriptor length u16][pool descriptor]
//! [core channel descriptor, 48 B][checksum of everything before, u32]
//! ```
//! a sealed descriptor of `dragon_channels_core::descriptor` (little endian, FNV-1a checksum).
//! The pool descriptor holds the pool's name, uid and creation nonce
//! ([`MemoryPool::serialize`]), so [`Channel::attach`] maps the pool when this process has
//! not, and refuses a descriptor of a pool that was destroyed and created again.

use dragon_channels_core::descriptor::{DescriptorError, Reader, Writer};
use dragon_channels_core::{
    Channel as CoreChannel, ChannelAttrs, ChannelError as CoreChannelError, Poll,
};

use crate::error::{Error, Op, Reason};
use crate::handle::{ChannelRecvH, ChannelSendH};
use crate::pool::descriptor_version;
use crate::pool::{MemoryPool, Recovery};
use crate::wait::{self, Ctx, Timeout, WaitMode};

/// `"DRCW"`: marks a serialized channel descriptor of the adapter.
const SER_MAGIC: u32 = 0x5743_5244;
/// Bytes before the pool descriptor: magic, version, pool descriptor length.
const SER_HEAD: usize = 10;
/// Layout version of serialized channel descriptors: 2 since pool descriptors name their host
/// (version 1 bytes are refused with their own message).
const SER_VERSION: u32 = 2;

/// A channel: a bounded MPMC FIFO queue of messages in a pool.
///
/// Cheap to clone; clones (and attachments in other processes) all use the same queue.
/// Sending and receiving goes through [`ChannelSendH`] and [`ChannelRecvH`] handles.
///
/// # Examples
/// ```
/// use dragon_channels::{Channel, MemoryPool, Timeout};
/// # let name = format!("doc-chan-{}", std::process::id());
/// let pool = MemoryPool::create(1 << 20, &name, 0)?;
/// let ch = Channel::create(&pool, 1, None)?;
/// let bytes = ch.serialize(); // hand these to another process
/// let same = Channel::attach(&bytes)?;
/// let mut sendh = ch.sendh()?;
/// sendh.open()?;
/// let mut recvh = same.recvh()?;
/// recvh.open()?;
/// sendh.send_bytes(b"hi", 2, None, Timeout::Default)?;
/// assert_eq!(recvh.recv_bytes(Timeout::Try)?, b"hi");
/// ch.destroy()?;
/// pool.destroy()?;
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Channel {
    pub(crate) pool: MemoryPool,
    pub(crate) core: CoreChannel,
    /// For a channel on another host: the target (then `pool` and `core` are this node's
    /// gateway pool and gateway channel, through which its operations go; see
    /// [`crate::remote`]).
    pub(crate) remote: Option<std::sync::Arc<crate::remote::RemoteChannel>>,
}

impl core::fmt::Debug for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if let Some(r) = &self.remote {
            return f.debug_struct("Channel").field("remote", r).finish();
        }
        f.debug_struct("Channel")
            .field("c_uid", &self.core.uid())
            .field("pool", &self.pool.name())
            .field("capacity", &self.core.capacity())
            .field("block_size", &self.core.block_size())
            .finish()
    }
}

impl Channel {
    /// Creates a channel in `mem_pool` under the unique id `c_uid`. `attr` defaults to
    /// Dragon's: capacity 100 messages, 1024 bytes stored inline per message (larger payloads
    /// go to a side allocation from the pool).
    ///
    /// # Errors
    /// [`Error::ChannelError`] with [`Reason::UidInUse`] when the uid is taken in this pool,
    /// with a pool reason when the pool is full, with a core reason for bad attributes.
    pub fn create(
        mem_pool: &MemoryPool,
        c_uid: u64,
        attr: Option<ChannelAttrs>,
    ) -> Result<Self, Error> {
        let attrs = attr.unwrap_or_default();
        Self::create_with(mem_pool, |p| CoreChannel::create(p, c_uid, &attrs))
    }

    /// Creates a channel with `make` (a core constructor), retrying while the pool lock is
    /// held by a live party and recovering a dead holder.
    pub(crate) fn create_with(
        mem_pool: &MemoryPool,
        make: impl Fn(&dragon_channels_core::Pool) -> Result<CoreChannel, CoreChannelError>,
    ) -> Result<Self, Error> {
        let ctx = Ctx::pool_op(&mem_pool.inner);
        let core = ctx.block(Timeout::Try, Timeout::Try, |_| make(&mem_pool.inner.core))?;
        Ok(Self {
            pool: mem_pool.clone(),
            core,
            remote: None,
        })
    }

    /// Attaches to a channel from bytes made by [`Channel::serialize`], in this or another
    /// process; maps the channel's pool if this process has not.
    ///
    /// # Errors
    /// [`Error::ChannelError`] with [`Reason::BadDescriptor`] for garbage, truncated or
    /// corrupt bytes; [`Error::MemoryPool`] when the pool does not exist
    /// ([`crate::MemoryPoolError::NotFound`]) or was created again since
    /// ([`crate::MemoryPoolError::Stale`]); [`Error::ChannelDestroyed`] when the channel was
    /// destroyed. A descriptor of another host gives a remote channel when this process
    /// has a gateway ([`crate::remote`]), else [`crate::MemoryPoolError::RemoteHost`].
    pub fn attach(ser_bytes: &[u8]) -> Result<Self, Error> {
        let (pool_bytes, ch_bytes) = parse(ser_bytes)?;
        let pool = match MemoryPool::attach_serialized(pool_bytes) {
            Ok(p) => p,
            Err(e) => match crate::remote::remote_host(&e) {
                Some(host) if crate::remote::has_gateway() => {
                    return crate::remote::attach(ser_bytes, host);
                }
                _ => return Err(e.into()),
            },
        };
        let ctx = Ctx::pool_op(&pool.inner);
        let core = ctx.block(Timeout::Try, Timeout::Try, |_| {
            CoreChannel::attach(&pool.inner.core, ch_bytes, None)
        })?;
        Ok(Self {
            pool,
            core,
            remote: None,
        })
    }

    /// The serialized descriptor (see the module docs): bytes any process passes to
    /// [`Channel::attach`].
    pub fn serialize(&self) -> Vec<u8> {
        if let Some(r) = &self.remote {
            return r.serialize();
        }
        let pool = self.pool.serialize();
        let core = self.core.serialize();
        let mut b = vec![0u8; SER_HEAD + pool.len() + core.len() + 4];
        let mut w = Writer::sealed(&mut b, SER_MAGIC, SER_VERSION);
        w.u16(pool.len() as u16).bytes(&pool).bytes(&core);
        let n = w.seal();
        debug_assert_eq!(n, b.len());
        b
    }

    /// Destroys the channel: other handles (in any process) get [`Error::ChannelDestroyed`],
    /// queued messages are dropped and their memory freed, the uid becomes free. Stop other
    /// users first: operations already running through other handles may still touch the
    /// freed memory.
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`] when it was already destroyed.
    pub fn destroy(self) -> Result<(), Error> {
        if self.remote.is_some() {
            return Err(Error::Remote(crate::remote::RemoteError::LocalOnly(
                "destroying a channel",
            )));
        }
        self.core
            .destroy_with(wait::drain_sleepers)
            .map_err(|e| crate::error::from_core(e, Op::Other))
    }

    /// Detaches this handle (the seed's `detach`; the same as dropping it). The channel lives
    /// on for others.
    pub fn detach(self) {}

    /// A new send handle, unopened, whose default timeout is to block.
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`]; [`Error::ChannelError`] on a semaphore channel.
    pub fn sendh(&self) -> Result<ChannelSendH, Error> {
        self.sendh_with(Timeout::Block)
    }

    /// A new send handle, unopened, with `default_timeout` for calls that pass
    /// [`Timeout::Default`].
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`].
    pub fn sendh_with(&self, default_timeout: Timeout) -> Result<ChannelSendH, Error> {
        self.check_handle()?;
        Ok(ChannelSendH::new(self.clone(), default_timeout))
    }

    /// A new receive handle, unopened, whose default timeout is to block.
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`]; [`Error::ChannelError`] on a semaphore channel.
    pub fn recvh(&self) -> Result<ChannelRecvH, Error> {
        self.recvh_with(Timeout::Block)
    }

    /// A new receive handle, unopened, with `default_timeout` for calls that pass
    /// [`Timeout::Default`].
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`].
    pub fn recvh_with(&self, default_timeout: Timeout) -> Result<ChannelRecvH, Error> {
        self.check_handle()?;
        Ok(ChannelRecvH::new(self.clone(), default_timeout))
    }

    /// Messages queued now (a snapshot; the seed's `num_msgs`).
    pub fn num_msgs(&self) -> usize {
        if let Some(r) = &self.remote {
            return r.value(Poll::Size) as usize;
        }
        self.core.len()
    }

    /// Capacity in messages.
    pub fn capacity(&self) -> usize {
        if let Some(r) = &self.remote {
            return r.info().0;
        }
        self.core.capacity()
    }

    /// Payload bytes stored inline per message.
    pub fn block_size(&self) -> usize {
        if let Some(r) = &self.remote {
            return r.info().1;
        }
        self.core.block_size()
    }

    /// The channel's unique id in its pool.
    pub fn cuid(&self) -> u64 {
        self.core.uid()
    }

    /// The host the channel lives on ([`crate::host::host_id`] for a local one).
    pub fn host_id(&self) -> u64 {
        self.remote
            .as_ref()
            .map_or_else(crate::host::host_id, |r| r.host())
    }

    /// Whether the channel lives on another host (reached through the gateway).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The pool the channel lives in (for a remote channel: this node's gateway pool, where
    /// its received messages are allocated).
    pub fn pool(&self) -> &MemoryPool {
        &self.pool
    }

    /// The core channel handle (diagnostics and tests).
    pub fn core_channel(&self) -> &CoreChannel {
        &self.core
    }

    /// Reclaims what dead processes left in the channel and its pool (claimed slots,
    /// half-sent positions, allocations). Runs by itself when an operation stalls on a dead
    /// party.
    ///
    /// # Errors
    /// [`Error::MemoryPool`] when the pool metadata is corrupt.
    pub fn recover(&self) -> Result<Recovery, Error> {
        if self.remote.is_some() {
            return Err(Error::Remote(crate::remote::RemoteError::LocalOnly(
                "recovering a channel",
            )));
        }
        Ok(self.pool.inner.recover(Some(&self.core))?)
    }

    pub(crate) fn ctx(&self, op: Op) -> Ctx<'_> {
        Ctx {
            pool: &self.pool.inner,
            ch: Some(&self.core),
            op,
            mode: WaitMode::Adaptive,
        }
    }

    pub(crate) fn check_live(&self) -> Result<(), Error> {
        if self.remote.is_some() {
            return Err(Error::Remote(crate::remote::RemoteError::LocalOnly(
                "a channel set (or this check)",
            )));
        }
        match self.core.poll(Poll::Capacity) {
            Ok(_) => Ok(()),
            Err(CoreChannelError::Destroyed) => Err(Error::ChannelDestroyed),
            Err(e) => Err(crate::error::from_core(e, Op::Other)),
        }
    }

    /// [`Channel::check_live`] for a send or receive handle: refused on a semaphore channel.
    fn check_handle(&self) -> Result<(), Error> {
        if self.remote.is_some() {
            return Ok(());
        }
        self.check_live()?;
        if self.core.is_semaphore() {
            return Err(Error::ChannelError(Reason::Core(
                CoreChannelError::BadOperation(
                    "a semaphore channel has no send or receive handles: poll it with the semaphore operations",
                ),
            )));
        }
        Ok(())
    }
}

/// Splits a serialized channel descriptor into the pool's and the core channel's parts.
fn parse(b: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let bad = |why| Error::ChannelError(Reason::BadDescriptor(why));
    let open_err = |e| {
        bad(match e {
            DescriptorError::Magic => "not a channel descriptor (bad magic)",
            DescriptorError::Version if descriptor_version(b) == Some(1) => {
                "made by an older dragon-channels (layout 1, which names no host): serialize \
                 the channel again with this version"
            }
            e => e.as_str(),
        })
    };
    // The length follows from the pool part's length in the header. Without the magic there
    // is no expected length: `open` then says what is wrong.
    let mut head = Reader::new(b);
    let len = (head.u32() == SER_MAGIC).then(|| {
        head.u32();
        SER_HEAD + usize::from(head.u16()) + CoreChannel::DESCRIPTOR_LEN + 4
    });
    let mut r = Reader::open(b, len, SER_MAGIC, SER_VERSION).map_err(open_err)?;
    let pool_len = usize::from(r.u16());
    let (pool, core) = (r.bytes(pool_len), r.bytes(CoreChannel::DESCRIPTOR_LEN));
    r.finish().map_err(open_err)?;
    if MemoryPool::serialized_len(pool) != Some(pool_len) {
        return Err(bad("pool descriptor length mismatch"));
    }
    Ok((pool, core))
}
