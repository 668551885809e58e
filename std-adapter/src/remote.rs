//! Remote channels: a channel whose pool lives on another node, reached through this node's
//! gateway (the `dragon-channels-gateway` package: one gateway process per node, carrying
//! requests between nodes, over MPI or TCP).
//!
//! [`crate::Channel::attach`] of a descriptor that names another host (see [`crate::host`])
//! gives a remote channel when this process has a gateway ([`GATEWAY_ENV`]); without one it
//! fails with [`crate::MemoryPoolError::RemoteHost`], which names both hosts. A remote
//! channel's handles have the local API: `sendh` / `recvh`, every send and receive form,
//! `poll`, the same timeouts (try once, deadline, block) and the same errors, plus
//! [`Error::Remote`] for what only a remote operation can meet (a dead gateway or node).
//!
//! # How a remote operation goes
//! The client never talks to the network. It writes an [`envelope::Envelope`] (kind SEND /
//! GET / POLL / INFO, origin and target host, target channel descriptor, return mode,
//! relative timeout, the handle's id and sequence number, the payload) into its node's
//! gateway channel, an ordinary local channel whose descriptor the gateway hands to its
//! clients in [`GATEWAY_ENV`]. A payload larger than that channel's block size goes as one
//! pool allocation sent by transfer of ownership; the gateways carry a large payload from
//! that allocation to an allocation of the target channel's pool without copying it (see
//! [`envelope`]), and a large message a remote receive takes comes back as an allocation of
//! the gateway's pool that `recv` hands over as is. Each handle owns a completion channel in
//! the gateway's pool (made at its first operation, destroyed with the handle unless an
//! answer may still come, then left to the gateway's pool) whose descriptor travels in the
//! envelope; the answer arrives there.
//!
//! The target node's gateway runs the operation on the target channel with try-once calls,
//! retried by its progress loop until the request's deadline, then answers. A send with
//! [`ReturnMode::WhenDeposited`] (the default) returns when the message is in the target
//! channel, as a local send does; [`ReturnMode::Immediately`] and
//! [`ReturnMode::WhenBuffered`] return once the request is queued in the gateway channel
//! (the envelope holds a copy of the payload, so the caller's memory is free at once), and
//! far-side failures of such sends are not reported.
//!
//! # Exactly once
//! Nothing is retried or resent behind the caller's back, so nothing is duplicated: a
//! request goes once, and its handle waits for the far side's answer, which always comes by
//! the request's deadline (the far gateway answers TIMEOUT then), plus the time the answer
//! travels. A receive therefore never gives up while its GET may still take a message. Only
//! when no answer comes at all does the client stop waiting: at once when its gateway
//! process is dead, after [`ANSWER_GRACE`] past the deadline when a gateway hangs. Then a
//! send reports [`RemoteError::NoAnswer`] with its outcome unknown ("may or may not have
//! been deposited"), and a receive's GET stays outstanding: the handle's next receive waits
//! for that answer first, so a message the far side took late is delivered to that next
//! receive instead of being lost. A message a receive got but could not hand over (a
//! destination too small, no pool memory for it) is kept in the handle for its next receive,
//! as a local receive leaves it queued. Dropping a receive handle with a GET outstanding can
//! lose the message that GET takes (the completion channel goes with the handle).
//!
//! # When a node dies
//! A gateway that learns its peer is gone (its connection closed) answers every request in
//! flight to that node with NODE_LOST: a send's outcome is then unknown, a receive took
//! nothing that will be delivered. A client whose own gateway died gets
//! [`RemoteError::GatewayDown`] from every remote operation within one wait slice
//! ([`SLICE`]). Local channels are untouched by either.

pub mod envelope;

use core::fmt;
use core::hash::BuildHasher;
use core::time::Duration;
use std::hash::RandomState;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use dragon_channels_core::{ChannelAttrs, Poll, Polled};

use crate::channel::Channel;
use crate::error::{Error, MemoryPoolError, Reason};
use crate::handle::{ChannelRecvH, ChannelSendH};
use crate::message::Message;
use crate::party::{self, ProcState};
use crate::wait::Timeout;
pub use envelope::ReturnMode;
use envelope::{Envelope, Kind, OP_PAYLOAD_NEXT, WIRE_BLOCK, WIRE_TRY, status};

/// Environment variable naming this node's gateway channel: the hex of its serialized
/// descriptor (Dragon's `DRAGON_GW1`). The gateway sets it for the clients it starts.
pub const GATEWAY_ENV: &str = "DRAGON_GW1";
/// Environment variable naming the gateway process: `<pid>:<start time>` (field 22 of
/// `/proc/<pid>/stat`), so that a client tells a dead gateway at once.
pub const GATEWAY_PID_ENV: &str = "DRAGON_GW_PID";
/// How long a client waits past a request's deadline for an answer from a gateway that is
/// alive before it reports [`RemoteError::NoAnswer`].
pub const ANSWER_GRACE: Duration = Duration::from_secs(30);
/// How often a waiting client checks that its gateway process lives.
pub const SLICE: Duration = Duration::from_millis(50);
/// Capacity of a handle's completion channel.
const COMPLETION_CAPACITY: u32 = 8;

/// What only a remote operation can meet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteError {
    /// This node's gateway process is gone (or [`GATEWAY_ENV`] is malformed): remote
    /// operations cannot go anywhere; local channels still work.
    GatewayDown {
        /// What failed.
        why: String,
        /// For an operation in flight: whether it may have happened at the far side.
        outcome: Outcome,
    },
    /// No gateway serves the descriptor's host (it is not part of this job).
    NoRoute {
        /// The host id.
        host: u64,
    },
    /// The target node's gateway died or became unreachable while the request was in
    /// flight.
    NodeLost {
        /// The host id.
        host: u64,
        /// Whether the operation may have happened there.
        outcome: Outcome,
    },
    /// A live gateway did not answer within [`ANSWER_GRACE`] past the deadline.
    NoAnswer {
        /// Whether the operation may have happened at the far side.
        outcome: Outcome,
    },
    /// The operation exists only for local channels.
    LocalOnly(&'static str),
    /// The far side failed in a way without a local error of its own (its words).
    Far(String),
}

/// What became of a remote operation that failed without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It never reached the far side or did nothing there.
    NotDone,
    /// It may or may not have happened (a send may have been deposited).
    Unknown,
    /// A receive whose answer is still awaited: the handle's next receive collects it.
    Pending,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotDone => "nothing was done at the far side",
            Self::Unknown => "the message may or may not have been deposited (check before resending)",
            Self::Pending => "the receive stays outstanding: this handle's next receive collects its message if it took one",
        })
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GatewayDown { why, outcome } => write!(
                f,
                "this node's gateway is down ({why}); {outcome}; restart the job's gateways (local channels still work)"
            ),
            Self::NoRoute { host } => write!(
                f,
                "no gateway serves host {host:#x}: the descriptor comes from a node outside this job"
            ),
            Self::NodeLost { host, outcome } => write!(
                f,
                "the gateway of host {host:#x} died or became unreachable; {outcome}"
            ),
            Self::NoAnswer { outcome } => write!(
                f,
                "the gateway did not answer within {} s past the deadline; {outcome}",
                ANSWER_GRACE.as_secs()
            ),
            Self::LocalOnly(what) => write!(
                f,
                "{what} works on local channels only: do it on the node that owns the channel"
            ),
            Self::Far(why) => write!(f, "the far side failed: {why}"),
        }
    }
}

/// Lowercase hex of `b`.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of lowercase or uppercase hex; `None` for odd lengths or other characters.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// The environment a gateway gives its clients: [`GATEWAY_ENV`] naming `gateway_channel`
/// and [`GATEWAY_PID_ENV`] naming this process.
pub fn gateway_env(gateway_channel: &Channel) -> Vec<(&'static str, String)> {
    let (pid, start) = party::me();
    vec![
        (GATEWAY_ENV, to_hex(&gateway_channel.serialize())),
        (GATEWAY_PID_ENV, format!("{pid}:{start}")),
    ]
}

/// A random nonzero id (handles, completion channels).
fn random_id() -> u64 {
    RandomState::new().hash_one(Instant::now()).max(1)
}

/// This process's link to its gateway.
struct Link {
    /// The gateway channel (local).
    ch: Channel,
    sendh: ChannelSendH,
    /// The gateway process, when named.
    pid: Option<(u32, u64)>,
    /// When the gateway was last found alive (see [`Link::dead_lately`]).
    alive_at: Mutex<Option<Instant>>,
}

impl Link {
    fn from_env() -> Result<Self, String> {
        let hex = std::env::var(GATEWAY_ENV).map_err(|_| format!("{GATEWAY_ENV} is not set"))?;
        let bytes = from_hex(&hex).ok_or_else(|| format!("{GATEWAY_ENV} is not hex"))?;
        let ch = Channel::attach(&bytes)
            .map_err(|e| format!("the gateway channel in {GATEWAY_ENV} cannot be attached: {e}"))?;
        if ch.remote.is_some() {
            return Err(format!(
                "{GATEWAY_ENV} names a channel of another host: give each node its own gateway"
            ));
        }
        let mut sendh = ch.sendh().map_err(|e| e.to_string())?;
        sendh.open().map_err(|e| e.to_string())?;
        let pid = std::env::var(GATEWAY_PID_ENV).ok().and_then(|v| {
            let (p, s) = v.split_once(':')?;
            Some((p.parse().ok()?, s.parse().ok()?))
        });
        Ok(Self {
            ch,
            sendh,
            pid,
            alive_at: Mutex::new(None),
        })
    }

    /// [`Link::dead`], looked at most once per [`SLICE`] (reading `/proc` costs more than a
    /// small remote operation): a request made within a slice of finding the gateway alive
    /// goes without looking again, and a wait for an answer looks every slice anyway.
    fn dead_lately(&self) -> bool {
        let mut at = self.alive_at.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if at.is_some_and(|t| now.duration_since(t) < SLICE) {
            return false;
        }
        let dead = self.dead();
        *at = (!dead).then_some(now);
        dead
    }

    /// Whether the gateway process is known dead.
    fn dead(&self) -> bool {
        self.pid
            .is_some_and(|(pid, start)| match party::proc_state(pid) {
                ProcState::Live(s) => s != start,
                ProcState::Dead => true,
                ProcState::Unknown => false,
            })
    }
}

/// The process's gateway link, made at first use from the environment.
fn link() -> Result<&'static Link, String> {
    static LINK: OnceLock<Result<Link, String>> = OnceLock::new();
    LINK.get_or_init(Link::from_env)
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether this process has a gateway (its environment names one).
pub fn has_gateway() -> bool {
    std::env::var_os(GATEWAY_ENV).is_some()
}

/// A channel on another host, as a [`Channel`] holds it.
pub(crate) struct RemoteChannel {
    /// Its serialized descriptor (what `serialize` returns).
    desc: Vec<u8>,
    /// Its host.
    host: u64,
    /// Capacity, block size, semaphore flag, asked once.
    info: OnceLock<(usize, usize, bool)>,
    /// The handle that polls and asks for the geometry (one completion channel for all).
    ctl: RemoteHandle,
}

impl fmt::Debug for RemoteChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteChannel")
            .field("host", &format_args!("{:#x}", self.host))
            .finish()
    }
}

/// Attaches `desc` (a channel of `host`, not this one) as a remote channel: a [`Channel`]
/// whose pool and core are the gateway's, with the target recorded.
pub(crate) fn attach(desc: &[u8], host: u64) -> Result<Channel, Error> {
    let link = link().map_err(|why| {
        Error::Remote(RemoteError::GatewayDown {
            why,
            outcome: Outcome::NotDone,
        })
    })?;
    let mut ch = link.ch.clone();
    ch.remote = Some(Arc::new(RemoteChannel {
        desc: desc.to_vec(),
        host,
        info: OnceLock::new(),
        ctl: RemoteHandle::with_target(desc, host),
    }));
    Ok(ch)
}

impl RemoteChannel {
    /// The serialized descriptor.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        self.desc.clone()
    }

    /// The host the channel lives on.
    pub(crate) fn host(&self) -> u64 {
        self.host
    }

    /// Capacity, block size and semaphore flag (asked of the far side once; zeros when it
    /// cannot answer).
    pub(crate) fn info(&self) -> (usize, usize, bool) {
        if let Some(i) = self.info.get() {
            return *i;
        }
        match self
            .ctl
            .request(Kind::Info, 0, Timeout::After(Duration::from_secs(10)))
        {
            Ok(r) => *self
                .info
                .get_or_init(|| (r.value as usize, r.hints as usize, r.clientid == 1)),
            Err(_) => (0, 0, false),
        }
    }

    /// Dragon's poll on the remote channel.
    pub(crate) fn poll(&self, op: Poll, timeout: Timeout) -> Result<Polled, Error> {
        if op == Poll::BarrierWait {
            return Err(Error::Remote(RemoteError::LocalOnly(
                "a barrier arrival (BarrierWait)",
            )));
        }
        let r = self.ctl.request(Kind::Poll, op as u32, timeout)?;
        Ok(match r.hints {
            0 => Polled::Ready,
            1 => Polled::ReadyToRelease,
            _ => Polled::Value(r.value),
        })
    }

    /// A count-like poll answered at once (0 when the far side cannot answer).
    pub(crate) fn value(&self, op: Poll) -> u64 {
        match self.poll(op, Timeout::Try) {
            Ok(Polled::Value(v)) => v,
            Ok(p) => p.result(),
            Err(_) => 0,
        }
    }
}

/// A decoded answer, owning its payload.
struct Answer {
    status: u32,
    value: u64,
    hints: u64,
    clientid: u64,
    payload: Payload,
}

/// A received payload: bytes from the answer envelope, or a large one as the allocation the
/// gateway moved into the completion channel (in the gateway's pool: handed over as is).
enum Payload {
    Bytes(Vec<u8>),
    Message(Message),
}

impl Payload {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Bytes(b) => b,
            Self::Message(m) => m.bytes().unwrap_or_default(),
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b,
            Self::Message(m) => m.bytes().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// A handle's remote state: its id, sequence numbers, completion channel, a GET still
/// awaited and a message kept for the next receive.
pub(crate) struct RemoteHandle {
    target: Arc<RemoteTarget>,
    state: Mutex<HandleState>,
}

/// What a [`RemoteHandle`] needs of its channel (shared with the channel).
struct RemoteTarget {
    desc: Vec<u8>,
    host: u64,
}

struct HandleState {
    sender: u64,
    seq: u64,
    return_mode: ReturnMode,
    /// The completion channel, its receive handle and its descriptor (serialized once).
    completion: Option<(Channel, ChannelRecvH, Vec<u8>)>,
    /// The sequence number of a GET whose answer was not collected.
    pending_get: Option<u64>,
    /// A received message not handed over yet (payload, hints, clientid).
    kept: Option<(Payload, u64, u64)>,
    /// An answer in whose payload is the completion channel's next message, not taken yet:
    /// (seq, value, hints, clientid).
    payload_next: Option<(u64, u64, u64, u64)>,
    /// A request whose answer never came (the wait gave up): the gateway may still write
    /// into the completion channel.
    unanswered: bool,
}

impl Drop for HandleState {
    fn drop(&mut self) {
        if let Some((ch, recvh, _)) = self.completion.take() {
            drop(recvh);
            // A gateway that may still answer into it must not meet freed memory: then the
            // channel is left to the pool (it goes with the gateway's pool).
            if !self.unanswered && self.pending_get.is_none() {
                let _ = ch.destroy();
            }
        }
    }
}

impl fmt::Debug for RemoteHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHandle")
            .field("host", &format_args!("{:#x}", self.target.host))
            .finish()
    }
}

impl RemoteHandle {
    pub(crate) fn new(ch: &RemoteChannel) -> Self {
        Self::with_target(&ch.desc, ch.host)
    }

    fn with_target(desc: &[u8], host: u64) -> Self {
        Self {
            target: Arc::new(RemoteTarget {
                desc: desc.to_vec(),
                host,
            }),
            state: Mutex::new(HandleState {
                sender: random_id(),
                seq: 0,
                return_mode: ReturnMode::default(),
                completion: None,
                pending_get: None,
                kept: None,
                payload_next: None,
                unanswered: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HandleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The return mode of sends.
    pub(crate) fn return_mode(&self) -> ReturnMode {
        self.lock().return_mode
    }

    /// Sets the return mode of sends.
    pub(crate) fn set_return_mode(&self, m: ReturnMode) {
        self.lock().return_mode = m;
    }

    /// Sends `payload` with its attributes; `timeout` already resolved against the handle's
    /// default.
    pub(crate) fn send(
        &self,
        payload: &[u8],
        hints: u64,
        clientid: u64,
        timeout: Timeout,
    ) -> Result<(), Error> {
        let mut st = self.lock();
        let mode = st.return_mode;
        st.exchange(
            &self.target,
            Kind::Send,
            0,
            timeout,
            mode,
            (payload, hints, clientid),
        )
        .map(drop)
    }

    /// Receives the next message: payload, hints, clientid.
    pub(crate) fn recv(&self, timeout: Timeout) -> Result<(Vec<u8>, u64, u64), Error> {
        let mut st = self.lock();
        let (p, h, c) = st.recv(&self.target, timeout)?;
        Ok((p.into_vec(), h, c))
    }

    /// Receives the next message as a new [`Message`] in the gateway's pool (the remote
    /// channel's local pool). A message that finds no pool memory stays with the handle for
    /// its next receive.
    pub(crate) fn recv_message(&self, timeout: Timeout) -> Result<Message, Error> {
        let mut st = self.lock();
        let (payload, hints, clientid) = st.recv(&self.target, timeout)?;
        let payload = match payload {
            Payload::Message(mut m) => {
                // Moved into the completion channel by the gateway: handed over as is.
                m.set_hints(hints);
                m.set_clientid(clientid);
                return Ok(m);
            }
            Payload::Bytes(b) => b,
        };
        let link = link().map_err(down(Outcome::NotDone))?;
        let mut m =
            match Message::create_alloc_blocking(link.ch.pool(), payload.len(), Timeout::Try) {
                Ok(m) => m,
                Err(e) => {
                    st.kept = Some((Payload::Bytes(payload), hints, clientid));
                    return Err(match e {
                        Error::ChannelError(r) => Error::ChannelRecvError(r),
                        e => e,
                    });
                }
            };
        m.bytes_memview()?.copy_from_slice(&payload);
        m.set_hints(hints);
        m.set_clientid(clientid);
        Ok(m)
    }

    /// Receives the next message into `dest` (copied into its memory, or as a new message
    /// when it has none). A payload that does not fit stays with the handle for its next
    /// receive.
    pub(crate) fn recv_into(&self, dest: &mut Message, timeout: Timeout) -> Result<(), Error> {
        if !dest.has_memory() {
            *dest = self.recv_message(timeout)?;
            return Ok(());
        }
        let mut st = self.lock();
        let (payload, hints, clientid) = st.recv(&self.target, timeout)?;
        let capacity = dest.capacity();
        if payload.len() > capacity {
            let needed = payload.len();
            st.kept = Some((payload, hints, clientid));
            return Err(Error::ChannelRecvError(Reason::DestinationTooSmall {
                needed,
                capacity,
            }));
        }
        dest.set_len(payload.len())?;
        dest.bytes_memview()?.copy_from_slice(payload.as_slice());
        dest.set_hints(hints);
        dest.set_clientid(clientid);
        Ok(())
    }

    /// A request of `kind` (INFO, POLL) that waits for its answer.
    fn request(&self, kind: Kind, op: u32, timeout: Timeout) -> Result<Answer, Error> {
        let mut st = self.lock();
        let a = st.exchange(
            &self.target,
            kind,
            op,
            timeout,
            ReturnMode::WhenDeposited,
            (&[], 0, 0),
        )?;
        a.ok_or(Error::Remote(RemoteError::Far(
            "no answer to a request that waits".into(),
        )))
    }
}

/// The wire timeout of `t` (already resolved: not `Default`).
fn wire(t: Timeout) -> u64 {
    match t {
        Timeout::Try => WIRE_TRY,
        Timeout::After(d) if d.is_zero() => WIRE_TRY,
        Timeout::After(d) => u64::try_from(d.as_nanos()).unwrap_or(WIRE_BLOCK - 1).max(1),
        Timeout::Default | Timeout::Block => WIRE_BLOCK,
    }
}

/// When a client stops waiting for a live gateway's answer.
fn give_up_at(t: Timeout) -> Option<Instant> {
    match t {
        Timeout::Default | Timeout::Block => None,
        Timeout::Try => Instant::now().checked_add(ANSWER_GRACE),
        Timeout::After(d) => Instant::now().checked_add(d.saturating_add(ANSWER_GRACE)),
    }
}

impl HandleState {
    /// This handle's completion channel, made at first use in the gateway's pool.
    fn completion(&mut self, link: &Link) -> Result<(Vec<u8>, &ChannelRecvH), Error> {
        if self.completion.is_none() {
            let attrs = ChannelAttrs {
                capacity: COMPLETION_CAPACITY,
                ..ChannelAttrs::default()
            };
            let ch = loop {
                match Channel::create(link.ch.pool(), random_id(), Some(attrs)) {
                    Err(Error::ChannelError(Reason::UidInUse(_))) => continue,
                    r => break r?,
                }
            };
            let mut recvh = ch.recvh()?;
            recvh.open()?;
            let desc = ch.serialize();
            self.completion = Some((ch, recvh, desc));
        }
        let (_, recvh, desc) = self.completion.as_ref().expect("made above");
        Ok((desc.clone(), recvh))
    }

    fn recv(&mut self, t: &RemoteTarget, timeout: Timeout) -> Result<(Payload, u64, u64), Error> {
        if let Some(m) = self.kept.take() {
            return Ok(m);
        }
        let link = link().map_err(down(Outcome::NotDone))?;
        if let Some(seq) = self.pending_get {
            // An earlier receive's GET: its answer comes first (it may hold a message).
            let a = self.await_answer(link, seq, timeout, Outcome::Pending)?;
            self.pending_get = None;
            if a.status == status::OK {
                return Ok((a.payload, a.hints, a.clientid));
            }
        }
        match self.exchange(
            t,
            Kind::Get,
            0,
            timeout,
            ReturnMode::WhenDeposited,
            (&[], 0, 0),
        )? {
            Some(a) => Ok((a.payload, a.hints, a.clientid)),
            None => Err(Error::Remote(RemoteError::Far("no answer to a GET".into()))),
        }
    }

    /// Sends one request (with `payload, hints, clientid`) and, unless it is a send that
    /// does not wait, waits for its answer: `Ok(None)` for a send queued without waiting.
    fn exchange(
        &mut self,
        t: &RemoteTarget,
        kind: Kind,
        op: u32,
        timeout: Timeout,
        mode: ReturnMode,
        (payload, hints, clientid): (&[u8], u64, u64),
    ) -> Result<Option<Answer>, Error> {
        let link = link().map_err(down(Outcome::NotDone))?;
        if link.dead_lately() {
            return Err(down(Outcome::NotDone)("its process has exited".into()));
        }
        let waits = kind != Kind::Send || mode.waits();
        let reply_desc = if waits {
            self.completion(link)?.0
        } else {
            Vec::new()
        };
        self.seq += 1;
        let seq = self.seq;
        let mut e = Envelope::new(kind);
        e.return_mode = mode;
        e.origin = crate::host::host_id();
        e.target = t.host;
        e.sender = self.sender;
        e.seq = seq;
        e.timeout_ns = wire(timeout);
        e.op = op;
        e.target_desc = &t.desc;
        e.reply_desc = &reply_desc;
        e.payload = payload;
        e.hints = hints;
        e.clientid = clientid;
        enqueue(link, &e, kind, timeout)?;
        if !waits {
            return Ok(None);
        }
        let outcome = match kind {
            Kind::Get => Outcome::Pending,
            Kind::Send => Outcome::Unknown,
            _ => Outcome::NotDone,
        };
        if kind == Kind::Get {
            self.pending_get = Some(seq);
        }
        let a = self.await_answer(link, seq, timeout, outcome)?;
        if kind == Kind::Get {
            self.pending_get = None;
        }
        answer_result(a, t.host, kind).map(Some)
    }

    /// Waits for the answer to request `seq`; answers of older requests (a send's, after
    /// it gave up) are dropped.
    fn await_answer(
        &mut self,
        link: &Link,
        seq: u64,
        timeout: Timeout,
        outcome: Outcome,
    ) -> Result<Answer, Error> {
        let give_up = give_up_at(timeout);
        // Set until the answer is in: a wait that gives up leaves it set.
        self.unanswered = true;
        let Some((_, recvh, _)) = self.completion.as_ref() else {
            return Err(Error::Remote(RemoteError::Far(
                "no completion channel".into(),
            )));
        };
        loop {
            if let Some((s, value, hints, clientid)) = self.payload_next
                && s == seq
            {
                // The answer is in; its payload is the completion channel's next message
                // (kept marked until taken, so a wait that gives up here resumes here).
                let m = next_payload(link, recvh, give_up, outcome)?;
                self.payload_next = None;
                self.unanswered = false;
                return Ok(Answer {
                    status: status::OK,
                    value,
                    hints,
                    clientid,
                    payload: Payload::Message(m),
                });
            }
            match recvh.recv_bytes(Timeout::After(SLICE)) {
                Ok(bytes) => {
                    let e = Envelope::decode(&bytes)
                        .map_err(|why| Error::Remote(RemoteError::Far(why.into())))?;
                    if e.kind == Kind::Reply && e.seq == seq {
                        if e.op == OP_PAYLOAD_NEXT && e.status == status::OK {
                            self.payload_next = Some((seq, e.value, e.hints, e.clientid));
                            continue;
                        }
                        self.unanswered = false;
                        return Ok(Answer {
                            status: e.status,
                            value: e.value,
                            hints: e.hints,
                            clientid: e.clientid,
                            payload: Payload::Bytes(e.payload.to_vec()),
                        });
                    }
                }
                Err(Error::ChannelTimeout) => {}
                Err(e) => return Err(e),
            }
            still_waiting(link, give_up, outcome)?;
        }
    }
}

/// Between two slices of a wait for the gateway's answer: `GatewayDown` if its process
/// exited, `NoAnswer` past `give_up`.
fn still_waiting(link: &Link, give_up: Option<Instant>, outcome: Outcome) -> Result<(), Error> {
    if link.dead() {
        return Err(down(outcome)(
            "its process exited while a request was in flight".into(),
        ));
    }
    if give_up.is_some_and(|g| Instant::now() >= g) {
        return Err(Error::Remote(RemoteError::NoAnswer { outcome }));
    }
    Ok(())
}

/// The payload that follows a reply marked [`OP_PAYLOAD_NEXT`] in completion channel
/// `recvh` (the gateway puts it right behind the reply).
fn next_payload(
    link: &Link,
    recvh: &ChannelRecvH,
    give_up: Option<Instant>,
    outcome: Outcome,
) -> Result<Message, Error> {
    loop {
        match recvh.recv(Timeout::After(SLICE)) {
            Ok(m) => return Ok(m),
            Err(Error::ChannelTimeout) => {}
            Err(e) => return Err(e),
        }
        still_waiting(link, give_up, outcome)?;
    }
}

/// `GatewayDown` with `outcome`, from a reason.
fn down(outcome: Outcome) -> impl Fn(String) -> Error {
    move |why| Error::Remote(RemoteError::GatewayDown { why, outcome })
}

/// Queues envelope `e` in the gateway channel: inline when it fits a block, else as one
/// allocation of the gateway's pool sent by transfer. A full gateway channel is
/// backpressure: waited for until the request's deadline (a try-once request reports
/// `ChannelFull` / `ChannelEmpty` as a local one would).
fn enqueue(link: &Link, e: &Envelope<'_>, kind: Kind, timeout: Timeout) -> Result<(), Error> {
    let n = e.len();
    let r = if n <= link.ch.block_size() {
        let mut buf = [0u8; 1024];
        let mut v;
        let b: &mut [u8] = if n <= buf.len() {
            &mut buf[..n]
        } else {
            v = vec![0u8; n];
            &mut v
        };
        e.encode(b);
        link.sendh.send_bytes(b, n, None, timeout)
    } else {
        let mut m = Message::create_alloc_blocking(link.ch.pool(), n, timeout)?;
        e.encode(m.bytes_memview()?);
        link.sendh.send_transfer(m, timeout).map_err(|t| t.error)
    };
    match r {
        Err(Error::ChannelFull) if kind != Kind::Send => Err(match kind {
            Kind::Get => Error::ChannelEmpty,
            _ => Error::ChannelTimeout,
        }),
        Err(Error::ChannelDestroyed) => Err(down(Outcome::NotDone)(
            "its gateway channel was destroyed".into(),
        )),
        r => r,
    }
}

/// The local result of an answer.
fn answer_result(a: Answer, host: u64, kind: Kind) -> Result<Answer, Error> {
    let text = || String::from_utf8_lossy(a.payload.as_slice()).into_owned();
    Err(match a.status {
        status::OK => return Ok(a),
        status::FULL => Error::ChannelFull,
        status::EMPTY => Error::ChannelEmpty,
        status::TIMEOUT => Error::ChannelTimeout,
        status::DESTROYED => Error::ChannelDestroyed,
        status::BARRIER_BROKEN => Error::ChannelBarrierBroken,
        status::NO_ROUTE => Error::Remote(RemoteError::NoRoute { host }),
        status::NODE_LOST => Error::Remote(RemoteError::NodeLost {
            host,
            outcome: if kind == Kind::Send {
                Outcome::Unknown
            } else {
                Outcome::NotDone
            },
        }),
        status::UNSUPPORTED => Error::Remote(RemoteError::LocalOnly("this operation")),
        _ => Error::Remote(RemoteError::Far(text())),
    })
}

/// Whether `e` says a descriptor names another host (so a gateway may reach it).
pub(crate) fn remote_host(e: &MemoryPoolError) -> Option<u64> {
    match e {
        MemoryPoolError::RemoteHost { host, .. } => Some(*host),
        _ => None,
    }
}

// ---- the far side: what a gateway does with a request, through the public types ----

/// Deposits `bytes` with `hints` and `clientid` into `sendh`'s channel, trying once (a
/// gateway's progress loop retries until the request's deadline).
///
/// # Errors
/// As [`ChannelSendH::send`] with [`Timeout::Try`].
pub fn try_deposit(
    sendh: &ChannelSendH,
    bytes: &[u8],
    hints: u64,
    clientid: u64,
) -> Result<(), Error> {
    if sendh.remote.is_some() {
        return Err(Error::Remote(RemoteError::LocalOnly("a gateway's deposit")));
    }
    if !sendh.is_open() {
        return Err(Error::ChannelHandleNotOpen);
    }
    sendh.send_copy(bytes, hints, clientid, Timeout::Try)
}

impl crate::handle::Handle<crate::handle::Sending> {
    /// When a send returns on a remote channel (Dragon's return modes): by default once the
    /// message is in the target channel. A local send always returns then.
    pub fn return_mode(&self) -> ReturnMode {
        self.remote
            .as_ref()
            .map_or(ReturnMode::WhenDeposited, |r| r.return_mode())
    }

    /// Sets when sends return on a remote channel; no effect on a local channel, whose
    /// sends always return once deposited.
    pub fn set_return_mode(&mut self, mode: ReturnMode) {
        if let Some(r) = &self.remote {
            r.set_return_mode(mode);
        }
    }
}
