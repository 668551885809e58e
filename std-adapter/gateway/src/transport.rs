//! [`Transport`]: what a gateway needs of the network between nodes, and nothing more.
//!
//! Ranks `0..size` are the job's gateways, one per node. Messages between two ranks arrive
//! whole, in the order they were sent (MPI's non-overtaking rule on one communicator and
//! tag; a TCP stream's order), which is what keeps a sender's messages in order end to end.
//! Every call returns at once: the gateway's progress loop calls [`Transport::progress`]
//! between its other work, and nothing in a transport may block it.
//!
//! Large payloads travel as [`Body`]s: a body is sent straight from the gateway's memory (a
//! pool allocation) as a message of its own, right behind the message that announces it,
//! and the receiving gateway, once it has read that announcement, names the memory the body
//! goes into (an allocation of the target channel's pool), so neither side copies it.

use core::fmt;

use crate::body::Body;

/// Why a transport call failed.
#[derive(Debug)]
pub enum TransportError {
    /// The peer is gone (its connection closed or failed); nothing more reaches it.
    PeerLost(usize),
    /// Setting the transport up failed.
    Setup(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerLost(r) => write!(f, "the gateway of rank {r} is gone"),
            Self::Setup(why) => write!(f, "transport setup failed: {why}"),
        }
    }
}

impl core::error::Error for TransportError {}

/// The network between gateways.
pub trait Transport {
    /// This gateway's rank.
    fn rank(&self) -> usize;

    /// Number of gateways (nodes) in the job.
    fn size(&self) -> usize;

    /// Queues `msg` for rank `to` (one message, however large; the transport owns it until
    /// it is sent). Never blocks.
    ///
    /// # Errors
    /// [`TransportError::PeerLost`] when `to` is known gone.
    fn send(&mut self, to: usize, msg: Vec<u8>) -> Result<(), TransportError>;

    /// Queues `body` for rank `to` behind what was queued for it so far, as a message of
    /// its own read from the body's memory in place (kept until it is sent). The receiver
    /// takes bodies with [`Transport::recv_body`], in the order they were sent. Never blocks.
    ///
    /// # Errors
    /// [`TransportError::PeerLost`] when `to` is known gone.
    fn send_body(&mut self, to: usize, body: Body) -> Result<(), TransportError>;

    /// One message that arrived, with its sender's rank, if any. Never blocks.
    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)>;

    /// Names the memory the next body from rank `from` goes into (bodies from one rank fill
    /// the memory named for them in order; `into` must be exactly the body's length, which
    /// the message announcing it says). It comes back filled from
    /// [`Transport::try_recv_body`] with `token`. Never blocks.
    fn recv_body(&mut self, from: usize, token: u64, into: Body);

    /// A body that arrived whole: its token and memory. Never blocks.
    fn try_recv_body(&mut self) -> Option<(u64, Body)>;

    /// Moves queued sends and receives along; whether anything moved.
    fn progress(&mut self) -> bool;

    /// Ranks found gone since the last call (each reported once).
    fn lost(&mut self) -> Vec<usize>;

    /// Whether sends are still on their way out.
    fn sending(&self) -> bool;

    /// Whether bodies named by [`Transport::recv_body`] are still arriving (the loop must
    /// keep calling [`Transport::progress`] for them).
    fn receiving(&self) -> bool;

    /// The largest message [`Transport::send`] takes.
    fn max_message(&self) -> usize {
        usize::MAX
    }
}
