//! Dragon's poll operations on a channel, answered at once from its state (a blocking poll is
//! the caller's wait layer: it waits on the channel's events, as a blocking receive does).

use crate::channel::Channel;
use crate::error::ChannelError;

/// Poll operations (Dragon's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Poll {
    /// A message can be received (1) or not (0).
    In,
    /// A message can be sent (1) or not (0).
    Out,
    /// Either.
    InOut,
    /// The channel is empty.
    Empty,
    /// The channel is full.
    Full,
    /// Number of queued messages.
    Size,
    /// Capacity.
    Capacity,
    /// Receivers registered as blocked (sleeping) on the channel.
    BlockedReceivers,
}

impl Channel {
    /// Dragon's poll, answered at once: booleans as 0/1, counts as numbers.
    ///
    /// # Errors
    /// [`ChannelError::Destroyed`].
    pub fn poll(&self, op: Poll) -> Result<u64, ChannelError> {
        self.check_ready()?;
        let len = self.len();
        let cap = self.capacity();
        Ok(match op {
            Poll::In => u64::from(len > 0),
            Poll::Out => u64::from(len < cap),
            Poll::InOut => u64::from(len > 0 || len < cap),
            Poll::Empty => u64::from(len == 0),
            Poll::Full => u64::from(len == cap),
            Poll::Size => len as u64,
            Poll::Capacity => cap as u64,
            Poll::BlockedReceivers => u64::from(self.recv_event().waiters()),
        })
    }
}
