//! The gateway envelope: the one byte format of remote operations, used by clients (into
//! their node's gateway channel), between gateways (over the transport, unchanged) and for
//! the answers (into the client's completion channel).
//!
//! ```text
//! [magic "DRGW" u32][version u16][kind u8][return mode u8]
//! [origin host u64][target host u64][sender id u64][sequence u64]
//! [timeout ns u64][status u32][poll op u32][value u64][hints u64][clientid u64]
//! [target descriptor length u16][target channel descriptor]
//! [reply descriptor length u16][reply (completion) channel descriptor]
//! [payload length u64][payload]
//! ```
//! little endian ([`dragon_channels_core::descriptor`]'s reader and writer), without a
//! checksum: envelopes travel through channels and MPI, which do not damage bytes, and a
//! checksum would read a 64 MiB payload once more. Every field is checked for range when
//! decoded; a short or inconsistent envelope is refused, never panicked on.
//!
//! The timeout is relative (nanoseconds; [`WIRE_TRY`] tries once, [`WIRE_BLOCK`] never
//! expires): nodes' clocks differ, so each hop computes its own deadline from it. A payload
//! larger than a gateway channel's block size travels as its own pool allocation: the client
//! writes the envelope straight into an allocation of the gateway's pool and sends it by
//! transfer of ownership (the envelope is the payload's "descriptor" message). A gateway
//! forwards an envelope with a payload over 16 KiB as its header (the envelope with an empty
//! payload) followed by the payload read in place from that allocation, and the far gateway
//! receives the payload straight into an allocation of the target channel's pool; a GET's
//! large answer comes back the same way and reaches the client's completion channel as a
//! reply marked [`OP_PAYLOAD_NEXT`] followed by the allocation itself.

use dragon_channels_core::descriptor::{Reader, Writer};

/// `"DRGW"`.
pub const MAGIC: u32 = 0x5747_5244;
/// Layout version of envelopes.
pub const VERSION: u16 = 1;
/// Bytes of an envelope before its variable parts: every fixed field.
pub const FIXED_LEN: usize = 4 + 2 + 1 + 1 + 8 * 4 + 8 + 4 + 4 + 8 * 3 + 2 + 2 + 8;
/// Wire timeout: try once.
pub const WIRE_TRY: u64 = 0;
/// Wire timeout: no deadline.
pub const WIRE_BLOCK: u64 = u64::MAX;

/// What an envelope asks for or answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Deposit the payload in the target channel.
    Send = 1,
    /// Take the next message of the target channel.
    Get = 2,
    /// A poll operation on the target channel (`op`).
    Poll = 3,
    /// The target channel's geometry: capacity in `value`, block size in `hints`, 1 in
    /// `clientid` for a semaphore channel.
    Info = 4,
    /// An answer: `status`, and for a GET the message, for a POLL the result.
    Reply = 5,
    /// Gateway to gateway: "I am the gateway of host `origin`" (at start).
    Hello = 6,
    /// Gateway to gateway: "my node's clients are done" (`origin` says whose).
    Bye = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Send,
            2 => Self::Get,
            3 => Self::Poll,
            4 => Self::Info,
            5 => Self::Reply,
            6 => Self::Hello,
            7 => Self::Bye,
            _ => return None,
        })
    }
}

/// When a remote send returns (Dragon's return modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReturnMode {
    /// Once the request is queued in this node's gateway channel. Errors at the far side
    /// (a channel full past the deadline, destroyed) are not reported.
    Immediately = 1,
    /// Once the payload is buffered so that the caller's memory may be reused: the envelope
    /// always carries a copy, so this is [`ReturnMode::Immediately`] (as Dragon treats
    /// inline payloads).
    WhenBuffered = 2,
    /// Once the message is in the target channel (the default; what a local send does).
    #[default]
    WhenDeposited = 3,
}

impl ReturnMode {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Immediately,
            2 => Self::WhenBuffered,
            3 => Self::WhenDeposited,
            _ => return None,
        })
    }

    /// Whether the sender waits for the far side's answer.
    pub fn waits(self) -> bool {
        self == Self::WhenDeposited
    }
}

/// `op` of a [`Kind::Reply`] to a GET whose payload is not in the envelope: it is the next
/// message of the completion channel, an allocation moved there by transfer of ownership
/// (a large payload reaches the client without a copy).
pub const OP_PAYLOAD_NEXT: u32 = u32::MAX;

/// Status of a [`Kind::Reply`].
pub mod status {
    /// Done.
    pub const OK: u32 = 0;
    /// Try-once send met a full channel.
    pub const FULL: u32 = 1;
    /// Try-once receive met an empty channel.
    pub const EMPTY: u32 = 2;
    /// The deadline passed (nothing was deposited or taken).
    pub const TIMEOUT: u32 = 3;
    /// The target channel was destroyed (or its pool is gone).
    pub const DESTROYED: u32 = 4;
    /// No gateway serves the target host.
    pub const NO_ROUTE: u32 = 5;
    /// The target node's gateway died or was unreachable while the request was in flight:
    /// a send may or may not have been deposited; a receive took nothing that will be
    /// delivered.
    pub const NODE_LOST: u32 = 6;
    /// Any other failure; the payload holds the far side's message (UTF-8).
    pub const FAILED: u32 = 7;
    /// The operation is not supported on a remote channel; the payload says which.
    pub const UNSUPPORTED: u32 = 8;
    /// The far side answered the poll with the barrier broken.
    pub const BARRIER_BROKEN: u32 = 9;
}

/// A decoded (or to be encoded) envelope; the variable parts borrow the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// What it asks for or answers.
    pub kind: Kind,
    /// When a send returns.
    pub return_mode: ReturnMode,
    /// The client's host.
    pub origin: u64,
    /// The host of the target channel.
    pub target: u64,
    /// The sending or receiving handle (random per handle).
    pub sender: u64,
    /// The handle's request number (per handle, from 1).
    pub seq: u64,
    /// Relative timeout in ns ([`WIRE_TRY`], [`WIRE_BLOCK`]).
    pub timeout_ns: u64,
    /// Reply status ([`status`]).
    pub status: u32,
    /// Poll operation (Dragon's number) for POLL and its reply.
    pub op: u32,
    /// Poll result (replies), capacity (INFO replies).
    pub value: u64,
    /// The message's hints.
    pub hints: u64,
    /// The message's clientid.
    pub clientid: u64,
    /// Serialized target channel.
    pub target_desc: &'a [u8],
    /// Serialized completion channel of the client (on the origin host).
    pub reply_desc: &'a [u8],
    /// The message payload (SEND, GET replies) or an error text (FAILED replies).
    pub payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// An envelope of `kind` with every other field zero or empty.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            return_mode: ReturnMode::WhenDeposited,
            origin: 0,
            target: 0,
            sender: 0,
            seq: 0,
            timeout_ns: WIRE_TRY,
            status: status::OK,
            op: 0,
            value: 0,
            hints: 0,
            clientid: 0,
            target_desc: &[],
            reply_desc: &[],
            payload: &[],
        }
    }

    /// The reply to this request, with `status` and the routing fields copied.
    pub fn reply(&self, status: u32) -> Envelope<'a> {
        Envelope {
            kind: Kind::Reply,
            status,
            payload: &[],
            target_desc: &[],
            hints: 0,
            clientid: 0,
            value: 0,
            ..*self
        }
    }

    /// Bytes [`Envelope::encode`] writes.
    pub fn len(&self) -> usize {
        FIXED_LEN + self.target_desc.len() + self.reply_desc.len() + self.payload.len()
    }

    /// Never: an envelope has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the envelope into `buf`, which must be at least [`Envelope::len`] bytes;
    /// returns the bytes written, or `None` (nothing written) when a descriptor is longer
    /// than 65,535 bytes or `buf` is too short.
    pub fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        let n = self.len();
        if buf.len() < n
            || self.target_desc.len() > usize::from(u16::MAX)
            || self.reply_desc.len() > usize::from(u16::MAX)
        {
            return None;
        }
        let mut w = Writer::new(&mut buf[..n]);
        w.u32(MAGIC)
            .u16(VERSION)
            .u8(self.kind as u8)
            .u8(self.return_mode as u8)
            .u64(self.origin)
            .u64(self.target)
            .u64(self.sender)
            .u64(self.seq)
            .u64(self.timeout_ns)
            .u32(self.status)
            .u32(self.op)
            .u64(self.value)
            .u64(self.hints)
            .u64(self.clientid)
            .u16(self.target_desc.len() as u16)
            .bytes(self.target_desc)
            .u16(self.reply_desc.len() as u16)
            .bytes(self.reply_desc)
            .u64(self.payload.len() as u64)
            .bytes(self.payload);
        debug_assert_eq!(w.len(), n);
        Some(n)
    }

    /// The envelope as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len()];
        let n = self.encode(&mut v);
        v.truncate(n.unwrap_or(0));
        v
    }

    /// Decodes `bytes` (exactly one envelope).
    ///
    /// # Errors
    /// What is wrong with the bytes, in words.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, &'static str> {
        let mut r = Reader::new(bytes);
        if r.u32() != MAGIC {
            return Err("not a gateway envelope (bad magic)");
        }
        if r.u16() != VERSION {
            return Err(
                "gateway envelope of another layout version: run one dragon-channels version across the job",
            );
        }
        let kind = Kind::from_u8(r.u8()).ok_or("unknown envelope kind")?;
        let return_mode = ReturnMode::from_u8(r.u8()).ok_or("unknown return mode")?;
        let mut e = Envelope {
            kind,
            return_mode,
            origin: r.u64(),
            target: r.u64(),
            sender: r.u64(),
            seq: r.u64(),
            timeout_ns: r.u64(),
            status: r.u32(),
            op: r.u32(),
            value: r.u64(),
            hints: r.u64(),
            clientid: r.u64(),
            ..Envelope::new(kind)
        };
        let n = usize::from(r.u16());
        e.target_desc = r.bytes(n);
        let n = usize::from(r.u16());
        e.reply_desc = r.bytes(n);
        let n = r.u64();
        if n != r.remaining() as u64 {
            return Err("envelope payload length does not match its bytes");
        }
        e.payload = r.bytes(n as usize);
        r.finish().map_err(|_| "truncated gateway envelope")?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let e = Envelope {
            return_mode: ReturnMode::Immediately,
            origin: 1,
            target: 2,
            sender: 3,
            seq: 4,
            timeout_ns: 5,
            status: status::FULL,
            op: 6,
            value: 7,
            hints: 8,
            clientid: 9,
            target_desc: b"target",
            reply_desc: b"reply",
            payload: b"payload bytes",
            ..Envelope::new(Kind::Send)
        };
        let v = e.to_vec();
        assert_eq!(v.len(), e.len());
        assert_eq!(Envelope::decode(&v), Ok(e));
        // Every truncation is refused.
        for n in 0..v.len() {
            assert!(Envelope::decode(&v[..n]).is_err(), "{n} bytes");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert!(Envelope::decode(&longer).is_err());
        let mut bad = v.clone();
        bad[6] = 99;
        assert_eq!(Envelope::decode(&bad), Err("unknown envelope kind"));
        let r = e.reply(status::OK);
        let rv = r.to_vec();
        let r2 = Envelope::decode(&rv).unwrap();
        assert_eq!(
            (r2.kind, r2.sender, r2.seq, r2.reply_desc),
            (Kind::Reply, 3, 4, &b"reply"[..])
        );
        assert!(r2.payload.is_empty() && r2.target_desc.is_empty());
        let mut short = [0u8; 8];
        assert_eq!(e.encode(&mut short), None);
    }
}
