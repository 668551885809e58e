//! Python bindings of the `dragon-channels` std adapter: the module `dragon_channels`, with
//! the classes and verbs of Dragon's `dragon.channels` / `dragon.managed_memory` pages
//! (`MemoryPool`, `Channel`, `Message`, `ChannelSendH`, `ChannelRecvH`, `ChannelSet`,
//! `EventType`, the wait modes, the exceptions).
//!
//! Blocking calls release the GIL and wait in slices of [`timeout::WAIT_SLICE`], checking for
//! signals (Ctrl-C) between slices.
//!
//! One file per concept: [`errors`] (exceptions), [`timeout`] (timeout arguments and sliced
//! waiting), [`pool`], [`channel`], [`message`], [`handle`], [`poll`] (`Channel.poll`,
//! `EventType`, wait modes), [`set`] (`ChannelSet`).

mod channel;
mod errors;
mod handle;
mod message;
mod poll;
mod pool;
mod set;
mod timeout;

use pyo3::prelude::*;

use channel::PyChannel;
use errors::exc_module;
use handle::{OwnershipOnSend, PyChannelRecvH, PyChannelSendH};
use message::PyMessage;
use poll::{PyWaitMode, poll_module};
use pool::PyMemoryPool;
use set::PyChannelSet;
use timeout::{UseDefault, WAIT_SLICE, use_default};

/// The module `dragon_channels`.
#[pymodule]
#[pyo3(name = "dragon_channels")]
fn dragon_channels_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let errs = exc_module(py)?;
    let names: Vec<String> = errs.getattr("NAMES")?.extract()?;
    for n in names {
        m.add(n.as_str(), errs.getattr(n.as_str())?)?;
    }
    m.add_class::<PyMemoryPool>()?;
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
