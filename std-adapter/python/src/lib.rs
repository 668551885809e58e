//! Python bindings of the `dragon-channels` std adapter: the native module
//! `dragon_channels._native` of the package `dragon_channels` (`python/dragon_channels`),
//! with the classes and verbs of Dragon's `dragon.channels` / `dragon.managed_memory` pages
//! (`MemoryPool`, `MemoryAlloc`, `MemoryAllocations`, `Channel`, `Message`, `ChannelSendH`,
//! `ChannelRecvH`, `ChannelSet`, `EventType`, the wait modes). The exceptions and
//! enumerations are Python classes of `dragon_channels._types`, which this module raises.
//!
//! Blocking calls release the GIL and wait in slices of [`timeout::WAIT_SLICE`], checking for
//! signals (Ctrl-C) between slices.
//!
//! One file per concept: [`buffer`] (the buffer protocol on 3.9+), [`errors`] (exceptions), [`timeout`] (timeout arguments and sliced
//! waiting), [`pool`], [`alloc`] (`MemoryAlloc`, `MemoryAllocations`), [`channel`],
//! [`message`], [`handle`], [`poll`] (`Channel.poll`, `EventType`, wait modes), [`set`]
//! (`ChannelSet`), [`asyncio`] (`await recvh.recv_async()` and friends).

mod alloc;
mod asyncio;
mod buffer;
mod channel;
mod errors;
mod handle;
mod message;
mod poll;
mod pool;
mod set;
mod timeout;

use pyo3::prelude::*;

use alloc::{PyMemoryAlloc, PyMemoryAllocations};
use channel::PyChannel;
use handle::{OwnershipOnSend, PyChannelRecvH, PyChannelSendH};
use message::PyMessage;
use poll::{PyWaitMode, poll_module};
use pool::PyMemoryPool;
use set::PyChannelSet;
use timeout::{UseDefault, WAIT_SLICE, use_default};

/// The module `dragon_channels._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn dragon_channels_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyMemoryPool>()?;
    m.add_class::<PyMemoryAlloc>()?;
    m.add_class::<PyMemoryAllocations>()?;
    m.add_class::<PyChannel>()?;
    m.add_class::<PyMessage>()?;
    m.add_class::<PyChannelSendH>()?;
    m.add_class::<PyChannelRecvH>()?;
    m.add_class::<OwnershipOnSend>()?;
    m.add_class::<UseDefault>()?;
    m.add("copy_on_send", OwnershipOnSend::CopyOnSend)?;
    m.add(
        "transfer_ownership_on_send",
        OwnershipOnSend::TransferOwnershipOnSend,
    )?;
    m.add_class::<PyChannelSet>()?;
    m.add_class::<PyWaitMode>()?;
    let poll = poll_module(py)?;
    m.add("EventType", poll.getattr("EventType")?)?;
    m.add("PollResult", poll.getattr("PollResult")?)?;
    m.add("IDLE_WAIT", PyWaitMode::Idle)?;
    m.add("SPIN_WAIT", PyWaitMode::Spin)?;
    m.add("ADAPTIVE_WAIT", PyWaitMode::Adaptive)?;
    m.add("DEFAULT_WAIT_MODE", PyWaitMode::Adaptive)?;
    m.add("USE_DEFAULT", use_default(py)?)?;
    m.add("WAIT_SLICE_SECONDS", WAIT_SLICE.as_secs_f64())?;
    Ok(())
}
