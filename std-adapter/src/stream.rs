//! [`RecvStream`] and [`SendSink`]: a receive handle as a stream of messages and a send
//! handle as a sink of byte messages, owning their handles (so a spawned task can hold
//! them). Their `poll_*` methods are always there; with the `futures` feature they also
//! implement `futures::Stream` and `futures::Sink`.
//!
//! Both wait as the futures of the handles' `*_async` methods do ([`crate::ChannelFuture`]),
//! through one [`AsyncWait`].
//!
//! # Cancellation
//! A stream that is dropped, or not polled again, after `poll_next` returned `Pending`
//! received nothing. A sink buffers one item between `start_send` and the flush that sends
//! it (`poll_ready`, `poll_flush` and `poll_close` flush): an item given to `start_send` is
//! sent by the next of those to return `Ready(Ok)`; dropping the sink before that drops the
//! item unsent (the `futures::Sink` contract: flush or close before dropping).

use core::task::{Context, Poll};

use crate::error::Error;
use crate::future::AsyncWait;
use crate::handle::{ChannelRecvH, ChannelSendH};
use crate::wait::Timeout;

/// A receive handle as a stream of byte messages ([`ChannelRecvH::into_stream`]).
///
/// Yields `Ok(bytes)` for each message, `Err` for a receive that failed (the message stays
/// queued, as for [`ChannelRecvH::recv_bytes`]), and ends (`None`) once the channel is
/// destroyed.
///
/// # Examples
/// ```
/// # #[cfg(feature = "futures")] {
/// use dragon_channels::{Channel, MemoryPool, Timeout};
/// use futures::StreamExt as _;
/// # let name = format!("doc-stream-{}", std::process::id());
/// let pool = MemoryPool::create(1 << 20, &name, 0)?;
/// let ch = Channel::create(&pool, 1, None)?;
/// let mut sendh = ch.sendh()?;
/// sendh.open()?;
/// let mut recvh = ch.recvh()?;
/// recvh.open()?;
/// sendh.send_bytes(b"one", 3, None, Timeout::Default)?;
/// let mut stream = recvh.into_stream();
/// let got = futures::executor::block_on(stream.next());
/// assert_eq!(got.unwrap()?, b"one");
/// # drop((stream, sendh)); ch.destroy()?; pool.destroy()?;
/// # }
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RecvStream {
    h: ChannelRecvH,
    wait: AsyncWait,
    ended: bool,
}

impl ChannelRecvH {
    /// This handle as a [`RecvStream`] of byte messages.
    pub fn into_stream(self) -> RecvStream {
        RecvStream {
            wait: AsyncWait::receiving(self.wait_mode()),
            h: self,
            ended: false,
        }
    }
}

impl RecvStream {
    /// The next message: `Ready(Some(Ok(bytes)))`, `Ready(Some(Err(_)))` for a receive that
    /// failed, `Ready(None)` once the channel is destroyed, or `Pending` (the task is woken
    /// when a message may be there).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Vec<u8>, Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let h = &self.h;
        match self
            .wait
            .poll_op(h.channel(), cx, || h.recv_bytes(Timeout::Try))
        {
            Poll::Ready(Err(Error::ChannelDestroyed)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The handle back (a pending wait is dropped: nothing was received).
    pub fn into_inner(self) -> ChannelRecvH {
        self.h
    }
}

#[cfg(feature = "futures")]
impl futures_core::Stream for RecvStream {
    type Item = Result<Vec<u8>, Error>;

    fn poll_next(
        self: core::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

/// A send handle as a sink of byte messages ([`ChannelSendH::into_sink`]): each item is
/// sent as one message of its length (as [`ChannelSendH::send_bytes`]).
///
/// # Examples
/// ```
/// # #[cfg(feature = "futures")] {
/// use dragon_channels::{Channel, MemoryPool, Timeout};
/// use futures::SinkExt as _;
/// # let name = format!("doc-sink-{}", std::process::id());
/// let pool = MemoryPool::create(1 << 20, &name, 0)?;
/// let ch = Channel::create(&pool, 1, None)?;
/// let mut sendh = ch.sendh()?;
/// sendh.open()?;
/// let mut recvh = ch.recvh()?;
/// recvh.open()?;
/// let mut sink = sendh.into_sink();
/// futures::executor::block_on(sink.send(b"one".to_vec()))?;
/// assert_eq!(recvh.recv_bytes(Timeout::Try)?, b"one");
/// # drop((sink, recvh)); ch.destroy()?; pool.destroy()?;
/// # }
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SendSink {
    h: ChannelSendH,
    wait: AsyncWait,
    /// The item given to `start_send` and not sent yet.
    buffered: Option<Vec<u8>>,
}

impl ChannelSendH {
    /// This handle as a [`SendSink`] of byte messages.
    pub fn into_sink(self) -> SendSink {
        SendSink {
            wait: AsyncWait::sending(self.wait_mode()),
            h: self,
            buffered: None,
        }
    }
}

impl SendSink {
    /// Sends `bytes` as one message: `Ready(Ok)` once sent, `Pending` while the channel is
    /// full (call again with the same bytes when woken; nothing was sent).
    pub fn poll_send(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<Result<(), Error>> {
        let h = &self.h;
        self.wait.poll_op(h.channel(), cx, || {
            h.send_bytes(bytes, bytes.len(), None, Timeout::Try)
        })
    }

    /// Sends the buffered item, if any.
    pub fn poll_flush_buffered(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(item) = self.buffered.take() else {
            return Poll::Ready(Ok(()));
        };
        let r = self.poll_send(cx, &item);
        match r {
            Poll::Ready(Ok(())) => {}
            // Not sent: keep it for the next flush (a failed one is dropped, as the error
            // is reported).
            Poll::Pending => self.buffered = Some(item),
            Poll::Ready(Err(_)) => {}
        }
        r
    }

    /// Buffers `item` to be sent by the next flush (call after the flush of the previous
    /// one returned `Ready(Ok)`; an item still buffered is replaced).
    pub fn buffer(&mut self, item: Vec<u8>) {
        self.buffered = Some(item);
    }

    /// The handle back (an item still buffered is dropped unsent).
    pub fn into_inner(self) -> ChannelSendH {
        self.h
    }
}

#[cfg(feature = "futures")]
impl futures_sink::Sink<Vec<u8>> for SendSink {
    type Error = Error;

    fn poll_ready(
        self: core::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_flush_buffered(cx)
    }

    fn start_send(self: core::pin::Pin<&mut Self>, item: Vec<u8>) -> Result<(), Self::Error> {
        self.get_mut().buffer(item);
        Ok(())
    }

    fn poll_flush(
        self: core::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_flush_buffered(cx)
    }

    fn poll_close(
        self: core::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_flush_buffered(cx)
    }
}
