//! `Channel`: create, attach, serialize, destroy; handles; properties.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

use dragon_channels as dc;

use crate::errors::{channel_err, raise, types_attr};
use crate::handle::{PyChannelRecvH, PyChannelSendH};
use crate::poll::{WaitModeArg, poll_channel, poll_op};
use crate::pool::{PyMemoryPool, native_uid_name};
use crate::timeout::seconds_timeout;
use dragon_channels::dragon_channels_core::Channel as CoreChannel;

/// Dragon's smallest block size.
pub(crate) const MIN_BLOCK_SIZE: u32 = 256;

fn channel_attrs(
    py: Python<'_>,
    attr: Option<&Bound<'_, PyAny>>,
    capacity: Option<u32>,
    block_size: Option<u32>,
) -> PyResult<dc::ChannelAttrs> {
    if attr.is_some_and(|a| !a.is_none()) {
        return Err(raise(
            py,
            "ChannelError",
            "channel attr objects are not supported: pass capacity= and block_size=".into(),
        ));
    }
    let mut a = dc::ChannelAttrs::default();
    if let Some(c) = capacity {
        if c == 0 {
            return Err(raise(
                py,
                "ChannelError",
                "a channel's capacity is at least 1 message (DRAGON_CHANNEL_CAPACITY_BELOW_REQUIRED_MINIMUM)".into(),
            ));
        }
        a.capacity = c;
    }
    if let Some(b) = block_size {
        if b < MIN_BLOCK_SIZE {
            return Err(raise(
                py,
                "ChannelError",
                format!(
                    "a channel's block size is at least {MIN_BLOCK_SIZE} bytes, not {b} \
                     (DRAGON_CHANNEL_BLOCKSIZE_BELOW_REQUIRED_MINIMUM)"
                ),
            ));
        }
        a.block_size = b;
    }
    Ok(a)
}

/// Checks that `v` is None or a member of the enumeration `enum_name`; returns the member
/// (or `default`'s member).
fn enum_arg(
    py: Python<'_>,
    v: Option<&Bound<'_, PyAny>>,
    enum_name: &str,
    arg: &str,
    default: &str,
) -> PyResult<Py<PyAny>> {
    let e = types_attr(py, enum_name)?;
    match v.filter(|v| !v.is_none()) {
        None => Ok(e.getattr(default)?.unbind()),
        Some(v) if v.is_instance(&e)? => Ok(v.clone().unbind()),
        Some(v) => Err(raise(
            py,
            "ChannelError",
            format!("{arg} must be a {enum_name}, not {}", v.repr()?),
        )),
    }
}

/// Refuses a default allocation pool other than the channel's own pool.
fn check_alloc_pool(
    py: Python<'_>,
    pool: &dc::MemoryPool,
    def_alloc_pool: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let Some(d) = def_alloc_pool.filter(|d| !d.is_none()) else {
        return Ok(());
    };
    let d = d.cast::<PyMemoryPool>().map_err(|_| {
        raise(
            py,
            "ChannelError",
            "def_alloc_pool must be a MemoryPool or None".into(),
        )
    })?;
    let d = d.borrow();
    match &d.pool {
        Some(p) if p.same_pool(pool) => Ok(()),
        _ => Err(raise(
            py,
            "ChannelError",
            "def_alloc_pool must be the channel's own pool: received messages are allocated \
             there"
                .into(),
        )),
    }
}

/// The parts of a channel descriptor: `(cuid, pool uid, pool file name)` (layout:
/// `dragon_channels::Channel::serialize`).
fn describe(py: Python<'_>, ser: &[u8]) -> PyResult<(u64, u64, String)> {
    let bad = || raise(py, "ChannelError", "not a channel descriptor".into());
    if ser.len() < 10 || &ser[..4] != b"DRCW" {
        return Err(bad());
    }
    let n = usize::from(u16::from_le_bytes([ser[8], ser[9]]));
    let pool = ser.get(10..10 + n).ok_or_else(bad)?;
    let (uid, name) = native_uid_name(pool).ok_or_else(bad)?;
    let core = ser.get(10 + n..).ok_or_else(bad)?;
    let cuid = u64::from_le_bytes(
        core.get(32..40)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    Ok((cuid, uid, name))
}

/// A channel in a memory pool (Dragon's `Channel`).
///
/// The object names the channel: after `detach(serialize=True)` it still `serialize()`s
/// and `destroy()`s it (attaching again to destroy).
#[pyclass(module = "dragon_channels", name = "Channel")]
pub(crate) struct PyChannel {
    ch: Option<dc::Channel>,
    /// Kept by `detach(serialize=True)`.
    saved: Option<Vec<u8>>,
    /// Whether this object created the channel (`with` then destroys it, else detaches).
    created: bool,
    /// Dragon's name of the pool, when this object was made from a `MemoryPool`.
    pool_name: Option<String>,
    lock_type: Option<Py<PyAny>>,
    fc_type: Option<Py<PyAny>>,
    flags: Option<Py<PyAny>>,
    max_spinners: u32,
    max_event_bcasts: u32,
}

impl PyChannel {
    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<&dc::Channel> {
        self.ch.as_ref().ok_or_else(|| {
            raise(
                py,
                "ChannelError",
                "channel object was destroyed or detached: attach again".into(),
            )
        })
    }

    fn attached(ch: dc::Channel) -> Self {
        Self {
            ch: Some(ch),
            saved: None,
            created: false,
            pool_name: None,
            lock_type: None,
            fc_type: None,
            flags: None,
            max_spinners: DEFAULT_MAX_SPINNERS,
            max_event_bcasts: DEFAULT_MAX_EVENT_BCASTS,
        }
    }
}

/// Dragon's default `max_spinners`.
const DEFAULT_MAX_SPINNERS: u32 = 5;
/// Dragon's default `max_event_bcasts`.
const DEFAULT_MAX_EVENT_BCASTS: u32 = 8;

#[pymethods]
impl PyChannel {
    /// Creates a channel in `mem_pool` with the unique id `c_uid` (the same as
    /// `Channel.create`), of `capacity` messages (default 100, at least 1) whose payloads up
    /// to `block_size` bytes (default 1024, at least 256) are stored inline; larger ones go
    /// into a side allocation of the pool.
    ///
    /// Dragon's tuning arguments are checked as Dragon checks them and change nothing here:
    /// `lock_type` (a `LockType`: the channel is lock-free), `fc_type` (a `FlowControl`: a send
    /// waits while the channel is full, whatever the kind), `max_spinners` (Dragon lets that
    /// many waiters spin before the rest sleep; here each waiter spins for a few
    /// microseconds, then sleeps) and `max_event_bcasts` (ints >= 0). `flags` is a
    /// `ChannelFlags` (`MASQUERADE_AS_REMOTE` is refused: there is no gateway).
    /// `def_alloc_pool` must be None or the channel's pool.
    ///
    /// With `semaphore=True` or `bounded_semaphore=True` it is a semaphore channel of value
    /// `initial_sem_value` (a bounded one refuses a V past that value); `capacity` and
    /// `block_size` are then ignored, as in Dragon.
    ///
    /// Raises `ChannelError` for a block size under 256, a capacity of 0, a uid in use, and
    /// a channel that does not fit its pool (saying the pool size it needs); `TypeError` /
    /// `OverflowError` for a `c_uid` that is not an int / is negative.
    #[new]
    #[pyo3(signature = (
        mem_pool, c_uid, block_size = None, capacity = None, lock_type = None, fc_type = None,
        flags = None, def_alloc_pool = None, max_spinners = DEFAULT_MAX_SPINNERS,
        max_event_bcasts = DEFAULT_MAX_EVENT_BCASTS, semaphore = false,
        bounded_semaphore = false, initial_sem_value = 0, *, attr = None
    ))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, Dragon's names
    fn new(
        py: Python<'_>,
        mem_pool: PyRef<'_, PyMemoryPool>,
        c_uid: u64,
        block_size: Option<u32>,
        capacity: Option<u32>,
        lock_type: Option<&Bound<'_, PyAny>>,
        fc_type: Option<&Bound<'_, PyAny>>,
        flags: Option<&Bound<'_, PyAny>>,
        def_alloc_pool: Option<&Bound<'_, PyAny>>,
        max_spinners: u32,
        max_event_bcasts: u32,
        semaphore: bool,
        bounded_semaphore: bool,
        initial_sem_value: u32,
        attr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let attrs = channel_attrs(py, attr, capacity, block_size)?;
        let lock_type = enum_arg(py, lock_type, "LockType", "lock_type", "FIFO")?;
        let fc_type = enum_arg(py, fc_type, "FlowControl", "fc_type", "NO_FLOW_CONTROL")?;
        let flags = match flags.filter(|f| !f.is_none()) {
            None => types_attr(py, "ChannelFlags")?.call1((0,))?.unbind(),
            Some(f) => {
                let v: u32 = f
                    .extract()
                    .map_err(|_| raise(py, "ChannelError", "flags must be ChannelFlags".into()))?;
                if v & 1 != 0 {
                    return Err(raise(
                        py,
                        "ChannelError",
                        "MASQUERADE_AS_REMOTE is not supported: there is no gateway".into(),
                    ));
                }
                types_attr(py, "ChannelFlags")?.call1((v,))?.unbind()
            }
        };
        let pool = mem_pool.get(py)?;
        check_alloc_pool(py, pool, def_alloc_pool)?;
        let ch = match (semaphore, bounded_semaphore) {
            (true, true) => {
                return Err(raise(
                    py,
                    "ChannelError",
                    "only one of semaphore and bounded_semaphore may be True".into(),
                ));
            }
            (false, false) => {
                let need = CoreChannel::required_size(&attrs)
                    .ok()
                    .and_then(usize::checked_next_power_of_two);
                if let Some(need) = need.filter(|&n| n > pool.max_alloc()) {
                    return Err(raise(
                        py,
                        "ChannelError",
                        format!(
                            "a channel of {} messages of {} bytes needs a pool block of {need} \
                             bytes, and the largest block of pool {:?} ({} bytes) is {} bytes: \
                             make the pool at least {need} bytes",
                            attrs.capacity,
                            attrs.block_size,
                            mem_pool.name,
                            pool.size(),
                            pool.max_alloc()
                        ),
                    ));
                }
                dc::Channel::create(pool, c_uid, Some(attrs))
            }
            (_, bounded) => dc::Channel::create_semaphore(
                pool,
                c_uid,
                dc::SemaphoreAttrs {
                    initial: initial_sem_value,
                    bounded,
                },
            ),
        }
        .map_err(|e| channel_err(py, e))?;
        Ok(Self {
            ch: Some(ch),
            saved: None,
            created: true,
            pool_name: Some(mem_pool.name.clone()),
            lock_type: Some(lock_type),
            fc_type: Some(fc_type),
            flags: Some(flags),
            max_spinners,
            max_event_bcasts,
        })
    }

    /// Creates a channel: the same as `Channel(...)`, with the same arguments.
    #[classmethod]
    #[pyo3(signature = (*args, **kwargs))]
    fn create<'py>(
        cls: &Bound<'py, PyType>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        cls.call(args, kwargs)
    }

    /// Attaches to a channel from `Channel.serialize()` bytes (in any process). `mem_pool`,
    /// Dragon's default allocation pool, must be None or the channel's pool.
    #[staticmethod]
    #[pyo3(signature = (serialized_bytes, mem_pool = None))]
    fn attach(
        py: Python<'_>,
        serialized_bytes: Vec<u8>,
        mem_pool: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let ch = dc::Channel::attach(&serialized_bytes).map_err(|e| channel_err(py, e))?;
        check_alloc_pool(py, ch.pool(), mem_pool)?;
        Ok(Self::attached(ch))
    }

    /// Destroys the channel (also from an object detached with `serialize=True`, which
    /// names the channel by its descriptor).
    fn destroy(&mut self, py: Python<'_>) -> PyResult<()> {
        let ch = match (self.ch.take(), self.saved.take()) {
            (Some(ch), _) => ch,
            (None, Some(ser)) => dc::Channel::attach(&ser).map_err(|e| channel_err(py, e))?,
            (None, None) => return self.get(py).map(drop),
        };
        ch.destroy().map_err(|e| channel_err(py, e))
    }

    /// The channel's pool, as a `MemoryPool` object.
    fn get_pool(&self, py: Python<'_>) -> PyResult<PyMemoryPool> {
        let ch = self.get(py)?;
        Ok(PyMemoryPool::local(
            ch.pool().clone(),
            self.pool_name.clone(),
        ))
    }

    /// The channel uid in a serialized descriptor, without attaching.
    #[staticmethod]
    fn serialized_uid(py: Python<'_>, ch_ser: &[u8]) -> PyResult<u64> {
        Ok(describe(py, ch_ser)?.0)
    }

    /// `(channel uid, type)` of a serialized descriptor, without attaching; the type is 1
    /// (Dragon's channel type).
    #[staticmethod]
    fn serialized_uid_type(py: Python<'_>, ch_ser: &[u8]) -> PyResult<(u64, u32)> {
        Ok((describe(py, ch_ser)?.0, 1))
    }

    /// `(pool uid, pool manifest name)` of a serialized descriptor, without attaching; the
    /// name in Dragon's form, `/_dragon_<pool file name>_manifest`.
    #[staticmethod]
    fn serialized_pool_uid_fname(py: Python<'_>, ch_ser: &[u8]) -> PyResult<(u64, String)> {
        let (_, uid, name) = describe(py, ch_ser)?;
        Ok((uid, format!("/_dragon_{name}_manifest")))
    }

    /// `with Channel(...) as ch:` destroys a channel this object created at the end, and
    /// detaches from one it attached.
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if self.created && self.ch.is_some() {
            self.destroy(py)?;
        } else {
            self.ch = None;
        }
        Ok(false)
    }

    /// The `LockType` given at creation (`LockType.FIFO` when unknown, as for an attached
    /// channel).
    #[getter]
    fn lock_type(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.lock_type {
            Some(l) => Ok(l.clone_ref(py)),
            None => Ok(types_attr(py, "LockType")?.getattr("FIFO")?.unbind()),
        }
    }

    /// The `FlowControl` given at creation (`NO_FLOW_CONTROL` when unknown).
    #[getter]
    fn fc_type(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.fc_type {
            Some(f) => Ok(f.clone_ref(py)),
            None => Ok(types_attr(py, "FlowControl")?
                .getattr("NO_FLOW_CONTROL")?
                .unbind()),
        }
    }

    /// The `ChannelFlags` given at creation.
    #[getter]
    fn flags(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.flags {
            Some(f) => Ok(f.clone_ref(py)),
            None => Ok(types_attr(py, "ChannelFlags")?.call1((0,))?.unbind()),
        }
    }

    /// `max_spinners` given at creation (no effect here; see the constructor).
    #[getter]
    fn max_spinners(&self) -> u32 {
        self.max_spinners
    }

    /// `max_event_bcasts` given at creation (no effect here).
    #[getter]
    fn max_event_bcasts(&self) -> u32 {
        self.max_event_bcasts
    }

    /// The pool received messages are allocated from: the channel's pool.
    #[getter]
    fn default_alloc_pool(&self, py: Python<'_>) -> PyResult<PyMemoryPool> {
        self.get_pool(py)
    }

    /// Always True: every channel here is on this host.
    #[getter]
    fn is_local(&self) -> bool {
        true
    }

    /// Detaches from the channel; with `serialize`, keeps its descriptor for `serialize()`.
    #[pyo3(signature = (serialize = false))]
    fn detach(&mut self, py: Python<'_>, serialize: bool) -> PyResult<()> {
        let ch = self.get(py)?;
        if serialize {
            self.saved = Some(ch.serialize());
        }
        self.ch = None;
        Ok(())
    }

    /// The serialized descriptor (`bytes`) another process passes to `Channel.attach`.
    fn serialize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        match (&self.ch, &self.saved) {
            (Some(ch), _) => Ok(PyBytes::new(py, &ch.serialize())),
            (None, Some(s)) => Ok(PyBytes::new(py, s)),
            (None, None) => self.get(py).map(|_| PyBytes::new(py, b"")),
        }
    }

    /// A new, unopened send handle; `timeout` is its default (None: block), `wait_mode`
    /// (a `WaitMode`) how its blocked sends wait, `return_mode` (a
    /// `ChannelSendReturnWhen`) when a send returns: a local send returns once the message
    /// is in the channel (`WHEN_DEPOSITED`, which also satisfies `WHEN_BUFFERED` and
    /// `WHEN_NONE`); on a remote channel `WHEN_NONE` and `WHEN_BUFFERED` return once the
    /// request is queued at this node's gateway; `WHEN_RECEIVED` raises `ChannelError`.
    #[pyo3(signature = (timeout = None, wait_mode = WaitModeArg(dc::WaitMode::Adaptive), return_mode = None))]
    fn sendh(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        wait_mode: WaitModeArg,
        return_mode: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyChannelSendH> {
        let mut mode = None;
        if let Some(r) = return_mode.filter(|r| !r.is_none()) {
            let e = types_attr(py, "ChannelSendReturnWhen")?;
            if !r.is_instance(&e)? {
                return Err(raise(
                    py,
                    "ChannelError",
                    "return_mode must be a ChannelSendReturnWhen".into(),
                ));
            }
            if r.eq(e.getattr("WHEN_RECEIVED")?)? {
                return Err(raise(
                    py,
                    "ChannelError",
                    "return_mode WHEN_RECEIVED is not supported: a send returns once the \
                     message is in the channel"
                        .into(),
                ));
            }
            // Only a remote channel's sends differ (see dragon_channels::remote).
            mode = Some(if r.eq(e.getattr("WHEN_NONE")?)? {
                dc::ReturnMode::Immediately
            } else if r.eq(e.getattr("WHEN_BUFFERED")?)? {
                dc::ReturnMode::WhenBuffered
            } else {
                dc::ReturnMode::WhenDeposited
            });
        }
        let default = timeout.map_or(Ok(dc::Timeout::Block), seconds_timeout)?;
        let mut h = self
            .get(py)?
            .sendh_with(default)
            .map_err(|e| channel_err(py, e))?;
        h.set_wait_mode(wait_mode.0);
        if let Some(m) = mode {
            h.set_return_mode(m);
        }
        Ok(PyChannelSendH { h })
    }

    /// A new, unopened receive handle; `timeout` is its default (None: block), `wait_mode`
    /// (a `WaitMode`) how its blocked receives wait. `notification_type` (Dragon's signal
    /// notification) must be None.
    #[pyo3(signature = (timeout = None, wait_mode = WaitModeArg(dc::WaitMode::Adaptive), notification_type = None, signal = None))]
    fn recvh(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        wait_mode: WaitModeArg,
        notification_type: Option<&Bound<'_, PyAny>>,
        signal: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyChannelRecvH> {
        if notification_type.is_some_and(|n| !n.is_none()) || signal.is_some_and(|n| !n.is_none()) {
            return Err(raise(
                py,
                "ChannelError",
                "receive notifications by signal are not supported".into(),
            ));
        }
        let default = timeout.map_or(Ok(dc::Timeout::Block), seconds_timeout)?;
        let mut h = self
            .get(py)?
            .recvh_with(default)
            .map_err(|e| channel_err(py, e))?;
        h.set_wait_mode(wait_mode.0);
        Ok(PyChannelRecvH { h })
    }

    /// Messages queued now.
    #[getter]
    fn num_msgs(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.num_msgs())
    }

    /// Messages the channel holds at most.
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.capacity())
    }

    /// Payload bytes stored inline per message.
    #[getter]
    fn block_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.block_size())
    }

    /// The channel's unique id.
    #[getter]
    fn cuid(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.get(py)?.cuid())
    }

    /// Receivers sleeping on the channel now.
    #[getter]
    fn blocked_receivers(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.blocked_receivers())
    }

    /// Parties arrived at the barrier in the current round.
    #[getter]
    fn barrier_count(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.barrier_count())
    }

    /// Whether the barrier is broken (aborted, or an arrival timed out) until a POLLRESET.
    #[getter]
    fn broken_barrier(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.get(py)?.broken_barrier())
    }

    /// Whether this is a semaphore channel.
    #[getter]
    fn is_semaphore(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.get(py)?.is_semaphore())
    }

    /// Dragon's poll: waits until the `event_mask` operation's condition holds or `timeout`
    /// seconds pass (None: block; 0: try once), waiting as `wait_mode` says (a `WaitMode`,
    /// default `ADAPTIVE_WAIT`). Returns True when it completed, False when the condition
    /// did not hold in time. With `poll_result` (a `PollResult`, or any object), its
    /// `value` is set to the number a count or semaphore operation answers (POLLSIZE,
    /// POLLCAPACITY, POLLBARRIER_ISBROKEN, POLLBARRIER_WAITERS, POLLBLOCKED_RECEIVERS,
    /// SEMAPHORE_PEEK, the value before SEMAPHORE_P / SEMAPHORE_V, the messages
    /// POLLBARRIER_RELEASE deposited), else to the event mask, and its `rc` to 'SUCCESS'
    /// or 'TIMEOUT'.
    ///
    /// Raises `ChannelBarrierReady` to the last party arriving at the barrier (it must then
    /// poll POLLBARRIER_RELEASE), `ChannelBarrierBroken` for an arrival at a broken barrier
    /// (or one whose timeout passed: that breaks it), `ChannelValueError` for an
    /// `event_mask` that is no operation and for a V past a bounded semaphore's bound,
    /// `ChannelError` for a semaphore operation on a message channel or the other way
    /// round, `ChannelDestroyed`; `ValueError` for a negative timeout or a mask <= 0.
    #[pyo3(
        signature = (timeout = None, wait_mode = WaitModeArg(dc::WaitMode::Adaptive), event_mask = 1, poll_result = None),
        text_signature = "($self, timeout=None, wait_mode=ADAPTIVE_WAIT, event_mask=EventType.POLLIN, poll_result=None)"
    )]
    fn poll(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        wait_mode: WaitModeArg,
        event_mask: i64,
        poll_result: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let op = poll_op(py, event_mask)?;
        poll_channel(py, self.get(py)?, timeout, wait_mode.0, op, poll_result)
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let ser = slf.borrow().serialize(py)?;
        let attach = slf.get_type().getattr("attach")?;
        Ok((attach, PyTuple::new(py, [ser])?))
    }

    fn __repr__(&self) -> String {
        match &self.ch {
            Some(c) => format!(
                "Channel(c_uid={}, pool={:?}, capacity={}, block_size={})",
                c.cuid(),
                c.pool().name(),
                c.capacity(),
                c.block_size()
            ),
            None => "Channel(<detached>)".into(),
        }
    }
}
