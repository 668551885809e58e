//! [`Gateway`]: one per node. It serves the node's channels to the other nodes and forwards
//! this node's remote operations, in one single-threaded progress loop that never blocks.
//!
//! Each turn of the loop:
//! 1. takes the requests clients queued in the gateway channel (try-once receives) and
//!    forwards each to the gateway of its target host: small envelopes bound for one node in
//!    the same turn go as one batch message; a large one (its payload over [`BATCH_LIMIT`])
//!    is taken from the channel as the client's pool allocation and goes as its header
//!    followed by a [`Body`]: the payload, read by the transport straight from that
//!    allocation;
//! 2. moves the transport along and takes what arrived: requests for this node's channels
//!    join the queue of their channel, answers go to the waiting client's completion channel;
//!    a header announcing a body names the memory the body goes into: an allocation of the
//!    target channel's pool (a vector when that pool has no room now), which the SEND later
//!    moves into the target channel by transfer of ownership, without a copy;
//! 3. runs the queued operations with try-once calls: a SEND or GET queue per target channel,
//!    tried in arrival order (so one sender's messages stay in order, and receivers are served
//!    in order), polls each on its own; an operation that cannot complete stays queued until
//!    its deadline and is then answered TIMEOUT (a try-once operation is answered at once);
//! 4. answers every request in flight to a node whose gateway is lost with NODE_LOST;
//! 5. idles without burning the core: after a turn with nothing to do it yields for
//!    [`YIELD_PHASE`], then sleeps on the gateway channel (a client's request wakes it at
//!    once) for [`SLEEP_MIN`] doubling up to [`SLEEP_MAX`], checking the network between.
//!
//! A gateway ends when its own node is done (the caller says when) and every other live
//! gateway said so too (BYE), once nothing is left to send.

use core::time::Duration;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use dragon_channels::remote::envelope::{
    Envelope, Kind, MAGIC as ENV_MAGIC, OP_PAYLOAD_NEXT, WIRE_BLOCK, WIRE_TRY, status,
};
use dragon_channels::remote::try_deposit;
use dragon_channels::{
    BytesOrMessage, Channel, ChannelAttrs, ChannelRecvH, ChannelSendH, Error, MemoryPool,
    MemoryPoolError, Message, Poll, Polled, Reason, RemoteError, Timeout, WaitMode,
};

use crate::body::Body;
use crate::transport::Transport;

/// How long an idle gateway yields before it starts sleeping.
pub const YIELD_PHASE: Duration = Duration::from_millis(2);
/// First sleep of an idle gateway.
pub const SLEEP_MIN: Duration = Duration::from_micros(50);
/// Longest sleep of an idle gateway (also the longest delay a request from the network can
/// meet at an idle gateway).
pub const SLEEP_MAX: Duration = Duration::from_millis(1);
/// Envelopes up to this size are batched per destination; larger ones go alone.
pub const BATCH_LIMIT: usize = 16 * 1024;
/// Largest batch message.
pub const BATCH_MAX: usize = 1 << 20;
/// Requests taken from the gateway channel per turn.
const DRAIN_PER_TURN: usize = 256;
/// `"DRGB"`: a transport message holding several envelopes.
const BATCH_MAGIC: u32 = 0x4247_5244;
/// `"DRGH"`: a transport message holding the header of a large envelope: the magic, the
/// payload's length (u64), then the envelope with an empty payload; the payload follows as a
/// body.
const HEADER_MAGIC: u32 = 0x4847_5244;
/// Bytes of a header message before its envelope.
const HEADER_PREFIX: usize = 12;

/// The header message of envelope `head` (its payload left out) whose payload of
/// `payload_len` bytes follows as a body.
fn header_message(head: &Envelope<'_>, payload_len: usize) -> Vec<u8> {
    let head = Envelope {
        payload: &[],
        ..*head
    };
    let mut h = Vec::with_capacity(HEADER_PREFIX + head.len());
    h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    h.extend_from_slice(&(payload_len as u64).to_le_bytes());
    h.extend_from_slice(&head.to_vec());
    h
}

/// The header message of large envelope `bytes` and where its payload starts in them.
fn split_large(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let e = Envelope::decode(bytes).ok()?;
    let start = bytes.len() - e.payload.len();
    Some((header_message(&e, e.payload.len()), start))
}

/// How a gateway is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Name of the pool the gateway creates for its channel and its clients' completion
    /// channels.
    pub pool_name: String,
    /// Its size in bytes (sparse: storage is taken as used). Holds the largest payload in
    /// flight through this node a few times over.
    pub pool_size: usize,
    /// Capacity of the gateway channel (requests queued by clients).
    pub capacity: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pool_name: format!("dgw-{}", std::process::id()),
            pool_size: 1 << 30,
            capacity: 1024,
        }
    }
}

/// A local channel the gateway operates on (a target, or a client's completion channel).
struct Local {
    ch: Channel,
    sendh: Option<ChannelSendH>,
    recvh: Option<ChannelRecvH>,
}

/// A queued operation on a local channel.
struct Op {
    env: Vec<u8>,
    /// The token of the payload's body, for an envelope that came without its payload
    /// (see [`Gateway::bodies`]).
    body: Option<u64>,
    /// `None`: no deadline.
    deadline: Option<Instant>,
    try_once: bool,
    /// The rank that sent it; `None` for a client of this node.
    from: Option<usize>,
}

/// The operations waiting on one target channel (its SENDs or its GETs), in arrival order.
#[derive(Default)]
struct Queue {
    ops: VecDeque<Op>,
    /// No operation's deadline is earlier (`None`: none has one): the queue is looked
    /// through for expired operations from then on only, not every turn (a long queue
    /// behind a full channel would cost its length each turn).
    check_at: Option<Instant>,
}

impl Queue {
    fn push(&mut self, op: Op) {
        if let Some(d) = op.deadline {
            self.check_at = Some(self.check_at.map_or(d, |c| c.min(d)));
        }
        self.ops.push_back(op);
    }
}

/// What goes into a client's completion channel.
enum Answer {
    /// A reply envelope (copied in).
    Env(Vec<u8>),
    /// The payload after a reply marked [`OP_PAYLOAD_NEXT`], moved in by transfer.
    Payload(Message),
}

/// What waits to go to a rank.
enum Item {
    /// A whole envelope.
    Env(Vec<u8>),
    /// A large envelope: its header message and its payload.
    Large(Vec<u8>, Body),
}

/// A request forwarded to another node whose answer is awaited.
struct Outstanding {
    rank: usize,
    reply_desc: Vec<u8>,
    /// The envelope's routing fields, to answer it when the node is lost.
    origin: u64,
    target: u64,
}

/// Counters (for the benchmark and the tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Requests taken from the gateway channel.
    pub requests: u64,
    /// Transport messages sent.
    pub sent: u64,
    /// Of which batches of several envelopes.
    pub batches: u64,
    /// Envelopes that went in batches.
    pub batched: u64,
    /// Operations run on local channels.
    pub served: u64,
}

/// One node's gateway over transport `T`.
pub struct Gateway<T: Transport> {
    t: T,
    host: u64,
    pool: MemoryPool,
    ch: Channel,
    recvh: ChannelRecvH,
    /// Host id of each rank (learned from HELLO).
    hosts: Vec<Option<u64>>,
    routes: HashMap<u64, usize>,
    lost: HashSet<usize>,
    byes: HashSet<usize>,
    locals: HashMap<Vec<u8>, Local>,
    /// SEND (`false`) and GET (`true`) queues per target descriptor.
    queues: HashMap<(Vec<u8>, bool), Queue>,
    polls: Vec<Op>,
    outstanding: HashMap<(u64, u64), Outstanding>,
    /// Answers waiting for room in a completion channel: (completion descriptor, envelope).
    answers: VecDeque<(Vec<u8>, Answer)>,
    /// Answers from other nodes whose payload is still arriving as a body, in arrival
    /// order: (token, rank, reply envelope without its payload).
    replies: VecDeque<(u64, usize, Vec<u8>)>,
    /// Envelopes waiting to go, per rank, this turn.
    batch: Vec<Vec<Item>>,
    /// The bodies of queued operations by token: `None` while still arriving. An operation
    /// answered before its body came leaves no entry, so the body is dropped on arrival.
    bodies: HashMap<u64, Option<Body>>,
    next_token: u64,
    stats: Stats,
}

impl<T: Transport> Gateway<T> {
    /// Creates the gateway's pool and channel and greets the other gateways.
    ///
    /// # Errors
    /// Pool or channel creation failures.
    pub fn new(t: T, cfg: &Config) -> Result<Self, Error> {
        let pool = MemoryPool::create(cfg.pool_size, &cfg.pool_name, 0)?;
        let attrs = ChannelAttrs {
            capacity: cfg.capacity,
            ..ChannelAttrs::default()
        };
        let ch = Channel::create(&pool, 1, Some(attrs))?;
        let mut recvh = ch.recvh()?;
        recvh.open()?;
        let size = t.size();
        let host = dragon_channels::host::host_id();
        let mut g = Self {
            t,
            host,
            pool,
            ch,
            recvh,
            hosts: vec![None; size],
            routes: HashMap::new(),
            lost: HashSet::new(),
            byes: HashSet::new(),
            locals: HashMap::new(),
            queues: HashMap::new(),
            polls: Vec::new(),
            outstanding: HashMap::new(),
            answers: VecDeque::new(),
            replies: VecDeque::new(),
            batch: (0..size).map(|_| Vec::new()).collect(),
            bodies: HashMap::new(),
            next_token: 0,
            stats: Stats::default(),
        };
        let me = g.t.rank();
        g.hosts[me] = Some(host);
        g.routes.insert(host, me);
        let mut hello = Envelope::new(Kind::Hello);
        hello.origin = host;
        let hello = hello.to_vec();
        for r in 0..size {
            if r != me {
                let _ = g.t.send(r, hello.clone());
            }
        }
        Ok(g)
    }

    /// The gateway channel (its descriptor goes to clients: [`dragon_channels::remote::gateway_env`]).
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// The gateway's pool.
    pub fn pool(&self) -> &MemoryPool {
        &self.pool
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// This gateway's transport.
    pub fn transport(&self) -> &T {
        &self.t
    }

    /// Runs the loop until every other gateway greeted this one (or `limit` passes).
    ///
    /// # Errors
    /// A message naming the ranks that did not greet in time.
    pub fn wait_peers(&mut self, limit: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            self.turn();
            let missing: Vec<usize> = (0..self.hosts.len())
                .filter(|&r| self.hosts[r].is_none() && !self.lost.contains(&r))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if t0.elapsed() > limit {
                return Err(format!(
                    "gateways of ranks {missing:?} did not greet within {limit:?}"
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Runs the loop until `done()` says this node's clients are finished and every other
    /// live gateway said the same, then lets what is queued for sending go.
    pub fn run(&mut self, mut done: impl FnMut() -> bool) {
        let mut said_bye = false;
        let mut idle_since: Option<Instant> = None;
        let mut sleep = SLEEP_MIN;
        loop {
            let worked = self.turn();
            if !said_bye && done() {
                said_bye = true;
                let me = self.t.rank();
                self.byes.insert(me);
                let mut bye = Envelope::new(Kind::Bye);
                bye.origin = self.host;
                let bye = bye.to_vec();
                for r in 0..self.hosts.len() {
                    if r != me && !self.lost.contains(&r) {
                        let _ = self.t.send(r, bye.clone());
                    }
                }
            }
            if said_bye
                && (0..self.hosts.len()).all(|r| self.byes.contains(&r) || self.lost.contains(&r))
                && self.answers.is_empty()
            {
                // Every node is done: let the last answers leave.
                let t0 = Instant::now();
                while self.t.sending() && t0.elapsed() < Duration::from_secs(10) {
                    self.t.progress();
                    std::thread::yield_now();
                }
                return;
            }
            if worked {
                idle_since = None;
                sleep = SLEEP_MIN;
                continue;
            }
            // A send on its way out (or a body on its way in) moves only inside transport
            // calls (MPI has no progress thread): while one is in flight, never sleep; yield, so that the processes on
            // the other end of it get the core when there are fewer cores than processes.
            if self.t.sending() || self.t.receiving() {
                idle_since = None;
                sleep = SLEEP_MIN;
                std::thread::yield_now();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < YIELD_PHASE {
                std::thread::yield_now();
            } else {
                // Sleep on the gateway channel: a client's request wakes it at once.
                if let Ok(b) = self
                    .recvh
                    .recv_bytes_or_message(BATCH_LIMIT, Timeout::After(sleep))
                {
                    self.request(b);
                    self.flush();
                    idle_since = None;
                    sleep = SLEEP_MIN;
                } else {
                    sleep = (sleep * 2).min(SLEEP_MAX);
                }
            }
        }
    }

    /// One turn of the loop; whether anything happened.
    pub fn turn(&mut self) -> bool {
        let mut worked = false;
        for _ in 0..DRAIN_PER_TURN {
            match self.recvh.recv_bytes_or_message(BATCH_LIMIT, Timeout::Try) {
                Ok(b) => {
                    worked = true;
                    self.request(b);
                }
                Err(_) => break,
            }
        }
        self.flush();
        worked |= self.t.progress();
        while let Some((from, msg)) = self.t.try_recv() {
            worked = true;
            self.arrived(from, msg);
        }
        while let Some((token, body)) = self.t.try_recv_body() {
            worked = true;
            if let Some(slot) = self.bodies.get_mut(&token) {
                *slot = Some(body);
            }
        }
        for r in self.t.lost() {
            worked = true;
            self.node_lost(r);
        }
        worked |= self.replies_arrived();
        worked |= self.run_ops();
        worked |= self.retry_answers();
        self.flush();
        worked
    }

    /// A request a client queued: a small one as bytes, a large one as the allocation the
    /// client wrote it into (sent by transfer of ownership).
    fn request(&mut self, got: BytesOrMessage) {
        self.stats.requests += 1;
        match got {
            BytesOrMessage::Bytes(b) => {
                let Ok(e) = Envelope::decode(&b) else {
                    return; // Not ours to answer: there is no completion channel to trust.
                };
                if e.target == self.host {
                    self.enqueue(b, None, None);
                } else if let Some(rank) = self.route(&e) {
                    self.batch[rank].push(Item::Env(b));
                }
            }
            BytesOrMessage::Message(m) => {
                let Some((header, start)) = m.bytes().ok().and_then(split_large) else {
                    return;
                };
                let Some(body) = Body::pool(m, start) else {
                    return;
                };
                let Ok(e) = Envelope::decode(&header[HEADER_PREFIX..]) else {
                    return;
                };
                if e.target == self.host {
                    // A request for this node's own channels: queued with its body at hand.
                    let env = header[HEADER_PREFIX..].to_vec();
                    let token = self.new_body(Some(body));
                    self.enqueue(env, None, Some(token));
                } else if let Some(rank) = self.route(&e) {
                    self.batch[rank].push(Item::Large(header, body));
                }
            }
        }
    }

    /// A fresh body token, its slot holding `body` (or waiting for it).
    fn new_body(&mut self, body: Option<Body>) -> u64 {
        self.next_token += 1;
        self.bodies.insert(self.next_token, body);
        self.next_token
    }

    /// The rank of the node a request of this node's client goes to (its answer then
    /// awaited when it waits); `None` when it was answered at once (no route, node lost).
    fn route(&mut self, e: &Envelope<'_>) -> Option<usize> {
        let rank = match self.routes.get(&e.target) {
            Some(&r) if !self.lost.contains(&r) => r,
            Some(_) => {
                self.answer_local(e, status::NODE_LOST, &[]);
                return None;
            }
            None => {
                self.answer_local(e, status::NO_ROUTE, &[]);
                return None;
            }
        };
        let waits = e.kind != Kind::Send || e.return_mode.waits();
        if waits {
            self.outstanding.insert(
                (e.sender, e.seq),
                Outstanding {
                    rank,
                    reply_desc: e.reply_desc.to_vec(),
                    origin: e.origin,
                    target: e.target,
                },
            );
        }
        Some(rank)
    }

    /// Sends what waits per rank, in order (a sender's messages must not overtake each
    /// other): runs of small envelopes as one batch each (at most [`BATCH_MAX`] bytes and
    /// what the transport takes), a large one alone.
    fn flush(&mut self) {
        let cap = BATCH_MAX.min(self.t.max_message());
        for r in 0..self.batch.len() {
            if self.batch[r].is_empty() {
                continue;
            }
            let items = core::mem::take(&mut self.batch[r]);
            let mut run: Vec<Vec<u8>> = Vec::new();
            let mut run_len = 8usize;
            for it in items {
                let it = match it {
                    Item::Env(it) => it,
                    Item::Large(header, body) => {
                        self.send_run(r, core::mem::take(&mut run));
                        run_len = 8;
                        self.send_large(r, header, body);
                        continue;
                    }
                };
                let small = it.len() <= BATCH_LIMIT && 8 + 4 + it.len() <= cap;
                if !small || run_len + 4 + it.len() > cap {
                    self.send_run(r, core::mem::take(&mut run));
                    run_len = 8;
                }
                if small {
                    run_len += 4 + it.len();
                    run.push(it);
                } else {
                    self.send_to(r, it);
                }
            }
            self.send_run(r, run);
        }
    }

    /// Sends a run of small envelopes: one alone, several as a batch.
    fn send_run(&mut self, r: usize, mut run: Vec<Vec<u8>>) {
        match run.len() {
            0 => {}
            1 => {
                let it = run.pop().expect("one");
                self.send_to(r, it);
            }
            n => {
                let total: usize = run.iter().map(|v| 4 + v.len()).sum();
                let mut m = Vec::with_capacity(8 + total);
                m.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
                m.extend_from_slice(&(n as u32).to_le_bytes());
                for it in &run {
                    m.extend_from_slice(&(it.len() as u32).to_le_bytes());
                    m.extend_from_slice(it);
                }
                self.stats.batches += 1;
                self.stats.batched += n as u64;
                self.send_to(r, m);
            }
        }
    }

    fn send_to(&mut self, r: usize, m: Vec<u8>) {
        if m.len() > self.t.max_message() {
            return self.too_large(r, &m);
        }
        self.stats.sent += 1;
        if self.t.send(r, m).is_err() {
            self.node_lost(r);
        }
    }

    /// Sends a large envelope: its header, then its payload as a body from the memory it
    /// is in.
    fn send_large(&mut self, r: usize, header: Vec<u8>, body: Body) {
        if body.len() > self.t.max_message() {
            return self.too_large_envelope(r, &header[HEADER_PREFIX..], body.len());
        }
        self.stats.sent += 1;
        if self.t.send(r, header).is_err() || self.t.send_body(r, body).is_err() {
            self.node_lost(r);
        }
    }

    /// An envelope larger than the transport carries (only a lone one can be): its request
    /// fails at once with a clear error instead of travelling.
    fn too_large(&mut self, r: usize, m: &[u8]) {
        self.too_large_envelope(r, m, m.len());
    }

    /// [`Gateway::too_large`] of envelope (or header) `m` of `size` bytes.
    fn too_large_envelope(&mut self, r: usize, m: &[u8], size: usize) {
        let Ok(e) = Envelope::decode(m) else {
            return;
        };
        let why = format!(
            "a message of {size} bytes is larger than the transport carries ({} bytes)",
            self.t.max_message()
        );
        if e.kind == Kind::Reply {
            // The answer to a request of node `r`: it gets the failure instead.
            let mut f = e;
            f.status = status::FAILED;
            f.payload = why.as_bytes();
            f.value = 0;
            let b = f.to_vec();
            self.send_to(r, b);
        } else {
            self.outstanding.remove(&(e.sender, e.seq));
            self.answer_local(&e, status::FAILED, why.as_bytes());
        }
    }

    /// A transport message from rank `from`: one envelope or a batch.
    fn arrived(&mut self, from: usize, msg: Vec<u8>) {
        let magic = msg
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if magic == Some(BATCH_MAGIC) {
            let mut pos = 8usize;
            let n = msg
                .get(4..8)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            for _ in 0..n {
                let Some(l) = msg.get(pos..pos + 4) else {
                    return;
                };
                let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                let Some(it) = msg.get(pos + 4..pos + 4 + len) else {
                    return;
                };
                self.envelope(from, it.to_vec(), None);
                pos += 4 + len;
            }
        } else if magic == Some(ENV_MAGIC) {
            self.envelope(from, msg, None);
        } else if magic == Some(HEADER_MAGIC) {
            let len = msg.get(4..HEADER_PREFIX).map(|b| {
                let mut l = [0u8; 8];
                l.copy_from_slice(b);
                u64::from_le_bytes(l)
            });
            let env = msg.get(HEADER_PREFIX..).map(<[u8]>::to_vec);
            if let (Some(len), Some(env)) = (len.and_then(|l| usize::try_from(l).ok()), env) {
                self.header(from, env, len);
            }
        }
    }

    /// The header of a large envelope from rank `from`, whose payload of `len` bytes follows
    /// as a body: names the memory the body goes into (always, so that the bodies of `from`
    /// keep matching their headers) and queues the operation to wait for it.
    fn header(&mut self, from: usize, env: Vec<u8>, len: usize) {
        let e = Envelope::decode(&env).ok();
        // Into the target channel's pool, for a SEND to move into the channel by transfer;
        // else (no room now, not a SEND, not attachable) into a vector.
        // A GET's answer: into the completion channel's pool (the gateway's), to move into
        // it by transfer. Payloads waiting behind a full channel take its pool's memory only
        // up to the channel's capacity (the rest wait in process memory), so that remote
        // senders cannot fill the target pool beyond what the channel itself would hold.
        let kind = e.map(|e| e.kind);
        let msg = match e {
            Some(e) if e.kind == Kind::Send => {
                let waiting = self
                    .queues
                    .get(&(e.target_desc.to_vec(), false))
                    .map_or(0, |q| q.ops.len());
                self.local(e.target_desc, false)
                    .ok()
                    .filter(|l| waiting < l.ch.capacity())
                    .and_then(|l| Message::create_alloc(l.ch.pool(), len).ok())
            }
            Some(e) if e.kind == Kind::Reply => self
                .local(e.reply_desc, false)
                .ok()
                .and_then(|l| Message::create_alloc(l.ch.pool(), len).ok()),
            _ => None,
        };
        let into = msg
            .and_then(|m| Body::pool(m, 0))
            .filter(|b| b.len() == len)
            .unwrap_or_else(|| Body::heap(vec![0u8; len]));
        let token = match kind {
            Some(Kind::Send | Kind::Reply) => self.new_body(None),
            _ => {
                // Nobody wants it (only SENDs and answers carry bodies): taken and dropped.
                self.next_token += 1;
                self.next_token
            }
        };
        self.t.recv_body(from, token, into);
        match kind {
            Some(Kind::Send) => self.envelope(from, env, Some(token)),
            Some(Kind::Reply) => self.replies.push_back((token, from, env)),
            _ => {}
        }
    }

    /// An envelope from rank `from` (with the token of its payload's body when it came as
    /// a header).
    fn envelope(&mut self, from: usize, b: Vec<u8>, body: Option<u64>) {
        let Ok(e) = Envelope::decode(&b) else {
            return;
        };
        match e.kind {
            Kind::Hello => {
                if let Some(h) = self.hosts.get_mut(from) {
                    *h = Some(e.origin);
                    self.routes.insert(e.origin, from);
                }
            }
            Kind::Bye => {
                self.byes.insert(from);
            }
            Kind::Reply => {
                self.outstanding.remove(&(e.sender, e.seq));
                let desc = e.reply_desc.to_vec();
                self.deliver(desc, b);
            }
            Kind::Send | Kind::Get | Kind::Poll | Kind::Info => self.enqueue(b, Some(from), body),
        }
    }

    /// Answers a request of a client of this node directly.
    fn answer_local(&mut self, e: &Envelope<'_>, st: u32, payload: &[u8]) {
        if e.reply_desc.is_empty() {
            return;
        }
        let mut r = e.reply(st);
        r.payload = payload;
        let desc = e.reply_desc.to_vec();
        self.deliver(desc, r.to_vec());
    }

    /// Puts answer `b` into the completion channel `desc` (try once; retried later when it
    /// is full or the pool has no room).
    fn deliver(&mut self, desc: Vec<u8>, b: Vec<u8>) {
        self.deliver_answer(desc, Answer::Env(b));
    }

    /// [`Gateway::deliver`] of an envelope or a payload.
    fn deliver_answer(&mut self, desc: Vec<u8>, a: Answer) {
        if desc.is_empty() {
            return;
        }
        if !self.answers.is_empty() {
            // Keep answers in order behind earlier ones waiting.
            self.answers.push_back((desc, a));
            return;
        }
        if let Some(a) = self.try_answer(&desc, a) {
            self.answers.push_back((desc, a));
        }
    }

    /// One try to put an answer: `None` done (or dropped), `Some` to retry later.
    fn try_answer(&mut self, desc: &[u8], a: Answer) -> Option<Answer> {
        let l = self.local(desc, false).ok()?;
        let sendh = l.sendh.as_ref()?;
        let (r, back) = match a {
            Answer::Env(b) => {
                let r = try_deposit(sendh, &b, 0, 0);
                (r, Answer::Env(b))
            }
            Answer::Payload(m) => match sendh.send_transfer(m, Timeout::Try) {
                Ok(()) => return None,
                Err(t) => (Err(t.error), Answer::Payload(t.message)),
            },
        };
        match r {
            Ok(()) => None,
            Err(Error::ChannelFull | Error::ChannelSendError(_)) => Some(back),
            Err(_) => {
                // The completion channel is gone (its handle was dropped): nobody waits.
                self.locals.remove(desc);
                None
            }
        }
    }

    fn retry_answers(&mut self) -> bool {
        let mut worked = false;
        while let Some((desc, a)) = self.answers.pop_front() {
            match self.try_answer(&desc, a) {
                Some(a) => {
                    self.answers.push_front((desc, a));
                    break;
                }
                None => worked = true,
            }
        }
        worked
    }

    /// Delivers the answers whose payload body arrived, in the order they came: the reply
    /// marked [`OP_PAYLOAD_NEXT`], then the payload's allocation by transfer (a payload
    /// that had to arrive in a vector goes in the reply instead). Whether any went.
    fn replies_arrived(&mut self) -> bool {
        let mut worked = false;
        while let Some((token, _, _)) = self.replies.front() {
            if !matches!(self.bodies.get(token), Some(Some(_))) {
                break;
            }
            let Some((token, _, env)) = self.replies.pop_front() else {
                break;
            };
            let Some(Some(body)) = self.bodies.remove(&token) else {
                continue;
            };
            worked = true;
            let Ok(e) = Envelope::decode(&env) else {
                continue;
            };
            self.outstanding.remove(&(e.sender, e.seq));
            let desc = e.reply_desc.to_vec();
            match body.into_message() {
                Ok(m) => {
                    let mut r = e;
                    r.op = OP_PAYLOAD_NEXT;
                    let head = r.to_vec();
                    self.deliver_answer(desc.clone(), Answer::Env(head));
                    self.deliver_answer(desc, Answer::Payload(m));
                }
                Err(b) => {
                    let whole = Envelope {
                        payload: b.as_slice(),
                        ..e
                    };
                    let v = whole.to_vec();
                    self.deliver(desc, v);
                }
            }
        }
        worked
    }

    /// The local channel `desc`, attached once; with a receive handle when `recv`.
    fn local(&mut self, desc: &[u8], recv: bool) -> Result<&mut Local, Error> {
        if !self.locals.contains_key(desc) {
            let ch = Channel::attach(desc)?;
            if ch.is_remote() {
                return Err(Error::MemoryPool(MemoryPoolError::BadDescriptor(
                    "the target channel is not on this gateway's host",
                )));
            }
            self.locals.insert(
                desc.to_vec(),
                Local {
                    ch,
                    sendh: None,
                    recvh: None,
                },
            );
        }
        let l = self.locals.get_mut(desc).expect("inserted above");
        if recv && l.recvh.is_none() {
            let mut h = l.ch.recvh()?;
            h.open()?;
            l.recvh = Some(h);
        }
        if !recv && l.sendh.is_none() && !l.ch.is_semaphore() {
            let mut h = l.ch.sendh()?;
            h.open()?;
            l.sendh = Some(h);
        }
        Ok(l)
    }

    /// Queues an operation on a channel of this node.
    fn enqueue(&mut self, b: Vec<u8>, from: Option<usize>, body: Option<u64>) {
        let Ok(e) = Envelope::decode(&b) else {
            if let Some(t) = body {
                self.bodies.remove(&t);
            }
            return;
        };
        let try_once = e.timeout_ns == WIRE_TRY;
        let deadline = match e.timeout_ns {
            WIRE_TRY | WIRE_BLOCK => None,
            ns => Instant::now().checked_add(Duration::from_nanos(ns)),
        };
        let kind = e.kind;
        let key = (e.target_desc.to_vec(), kind == Kind::Get);
        let op = Op {
            env: b,
            body,
            deadline,
            try_once,
            from,
        };
        match kind {
            Kind::Poll | Kind::Info => {
                if !self.run_poll(&op) {
                    self.polls.push(op);
                }
            }
            _ => {
                if let Some(q) = self.queues.get_mut(&key)
                    && !q.ops.is_empty()
                {
                    // A head still waiting for its body says nothing about the channel.
                    let head_arriving = q
                        .ops
                        .front()
                        .and_then(|h| h.body)
                        .is_some_and(|t| matches!(self.bodies.get(&t), Some(None)));
                    if op.try_once && !head_arriving {
                        // The head waits: the channel is full (SEND) or empty (GET) now.
                        let st = if kind == Kind::Get {
                            status::EMPTY
                        } else {
                            status::FULL
                        };
                        self.answer(&op, st, &[], 0, 0, 0);
                    } else {
                        q.push(op);
                    }
                    return;
                }
                if !self.run_op(&op) {
                    self.queues.entry(key).or_default().push(op);
                }
            }
        }
    }

    /// Runs the queues; whether anything completed.
    fn run_ops(&mut self) -> bool {
        let mut worked = false;
        let now = Instant::now();
        let keys: Vec<(Vec<u8>, bool)> = self.queues.keys().cloned().collect();
        for key in keys {
            let Some(mut q) = self.queues.remove(&key) else {
                continue;
            };
            while let Some(op) = q.ops.front() {
                if self.run_op(op) {
                    q.ops.pop_front();
                    worked = true;
                } else {
                    break;
                }
            }
            // Whatever passed its deadline is answered TIMEOUT, wherever it waits.
            if q.check_at.is_some_and(|t| now >= t) {
                let mut expired = Vec::new();
                let mut keep = VecDeque::with_capacity(q.ops.len());
                for op in q.ops.drain(..) {
                    if op.deadline.is_some_and(|d| now >= d) {
                        expired.push(op);
                    } else {
                        keep.push_back(op);
                    }
                }
                q.check_at = keep.iter().filter_map(|o| o.deadline).min();
                q.ops = keep;
                worked |= !expired.is_empty();
                for op in expired {
                    self.answer(&op, status::TIMEOUT, &[], 0, 0, 0);
                }
            }
            if !q.ops.is_empty() {
                self.queues.insert(key, q);
            }
        }
        let polls = core::mem::take(&mut self.polls);
        for op in polls {
            if self.run_poll(&op) {
                worked = true;
            } else {
                self.polls.push(op);
            }
        }
        worked
    }

    /// Tries a SEND or GET once; `true` when it is answered (done or failed for good).
    fn run_op(&mut self, op: &Op) -> bool {
        let Ok(e) = Envelope::decode(&op.env) else {
            self.answer(op, status::FAILED, &[], 0, 0, 0);
            return true;
        };
        // A payload that comes as a body: taken from its slot (put back if the channel
        // cannot take it yet).
        let body = match op.body {
            None => None,
            Some(t) => match self.bodies.get_mut(&t) {
                Some(slot) => match slot.take() {
                    Some(b) => Some(b),
                    None if op.from.is_some_and(|r| self.lost.contains(&r)) => {
                        // Its node died before the body came: nobody is left to answer.
                        self.answer(op, status::NODE_LOST, &[], 0, 0, 0);
                        return true;
                    }
                    None => return false,
                },
                None => {
                    self.answer(op, status::FAILED, b"the payload was lost", 0, 0, 0);
                    return true;
                }
            },
        };
        let is_get = e.kind == Kind::Get;
        let r = self.local(e.target_desc, is_get).map(|_| ());
        if let Err(err) = r {
            self.answer(op, status_of(&err), err.to_string().as_bytes(), 0, 0, 0);
            return true;
        }
        let l = self.locals.get(e.target_desc).expect("attached above");
        self.stats.served += 1;
        if is_get {
            let recvh = l.recvh.as_ref().expect("made above");
            match recvh.recv(Timeout::Try) {
                Ok(m) => {
                    let (h, c) = (m.hints(), m.clientid());
                    if m.len() > BATCH_LIMIT
                        && let Some(rank) = op.from
                    {
                        // To another node: the payload goes from the received allocation.
                        self.answer_body(op, rank, m, h, c);
                        return true;
                    }
                    let bytes = m.bytes().map(<[u8]>::to_vec).unwrap_or_default();
                    drop(m);
                    self.answer(op, status::OK, &bytes, 0, h, c);
                    true
                }
                Err(Error::ChannelEmpty | Error::ChannelRecvError(_)) if !op.try_once => false,
                Err(err) => {
                    self.answer(op, status_of(&err), err.to_string().as_bytes(), 0, 0, 0);
                    true
                }
            }
        } else {
            let Some(sendh) = l.sendh.as_ref() else {
                self.answer(
                    op,
                    status::FAILED,
                    b"a semaphore channel has no send handle",
                    0,
                    0,
                    0,
                );
                return true;
            };
            let r = if body.is_some() {
                let mut body = body;
                let r = deposit_body(sendh, &mut body, e.hints, e.clientid);
                if let Some(slot) = op.body.and_then(|t| self.bodies.get_mut(&t)) {
                    *slot = body;
                }
                r
            } else {
                try_deposit(sendh, e.payload, e.hints, e.clientid)
            };
            match r {
                Ok(()) => {
                    self.answer(op, status::OK, &[], 0, 0, 0);
                    true
                }
                Err(Error::ChannelFull | Error::ChannelSendError(_)) if !op.try_once => false,
                Err(err) => {
                    self.answer(op, status_of(&err), err.to_string().as_bytes(), 0, 0, 0);
                    true
                }
            }
        }
    }

    /// Tries a POLL or INFO once; `true` when it is answered.
    fn run_poll(&mut self, op: &Op) -> bool {
        let Ok(e) = Envelope::decode(&op.env) else {
            return true;
        };
        let ch = match self.local(e.target_desc, false) {
            Ok(l) => l.ch.clone(),
            Err(err) => {
                self.answer(op, status_of(&err), err.to_string().as_bytes(), 0, 0, 0);
                return true;
            }
        };
        self.stats.served += 1;
        if e.kind == Kind::Info {
            let (cap, bs, sem) = (ch.capacity(), ch.block_size(), ch.is_semaphore());
            self.answer(op, status::OK, &[], cap as u64, bs as u64, u64::from(sem));
            return true;
        }
        let Some(p) = Poll::ALL.into_iter().find(|p| p.value() == e.op) else {
            self.answer(op, status::UNSUPPORTED, b"unknown poll operation", 0, 0, 0);
            return true;
        };
        match ch.poll(p, Timeout::Try, WaitMode::Adaptive) {
            Ok(Polled::Ready) => self.answer(op, status::OK, &[], 0, 0, 0),
            Ok(Polled::ReadyToRelease) => self.answer(op, status::OK, &[], 0, 1, 0),
            Ok(Polled::Value(v)) => self.answer(op, status::OK, &[], v, 2, 0),
            Err(Error::ChannelTimeout)
                if !op.try_once && op.deadline.is_none_or(|d| Instant::now() < d) =>
            {
                return false;
            }
            Err(err) => self.answer(op, status_of(&err), err.to_string().as_bytes(), 0, 0, 0),
        }
        true
    }

    /// Answers `op` (to its node, or to the local client).
    fn answer(&mut self, op: &Op, st: u32, payload: &[u8], value: u64, hints: u64, clientid: u64) {
        if let Some(t) = op.body {
            // Done with the operation: its body is dropped now, or on arrival.
            self.bodies.remove(&t);
        }
        let Ok(e) = Envelope::decode(&op.env) else {
            return;
        };
        if e.reply_desc.is_empty() {
            return; // A send that does not wait.
        }
        let mut r = e.reply(st);
        r.payload = payload;
        r.value = value;
        r.hints = hints;
        r.clientid = clientid;
        let b = r.to_vec();
        match op.from {
            None => self.deliver(e.reply_desc.to_vec(), b),
            Some(rank) => self.batch[rank].push(Item::Env(b)),
        }
    }

    /// Answers GET `op` of rank `rank` OK with message `m`: the reply as a header, the
    /// payload as a body read from `m`'s allocation.
    fn answer_body(&mut self, op: &Op, rank: usize, m: Message, hints: u64, clientid: u64) {
        let Ok(e) = Envelope::decode(&op.env) else {
            return;
        };
        let mut r = e.reply(status::OK);
        r.hints = hints;
        r.clientid = clientid;
        let len = m.len();
        let Some(body) = Body::pool(m, 0) else {
            return;
        };
        self.batch[rank].push(Item::Large(header_message(&r, len), body));
    }

    /// Rank `r` is gone: answer what was in flight to it, route nothing more there.
    fn node_lost(&mut self, r: usize) {
        if !self.lost.insert(r) {
            return;
        }
        self.batch[r].clear();
        // Answers whose payload will not come: their requests are answered NODE_LOST below.
        let bodies = &mut self.bodies;
        self.replies.retain(|(t, from, _)| {
            if *from == r {
                bodies.remove(t);
            }
            *from != r
        });
        let gone: Vec<(u64, u64)> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.rank == r)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            let Some(o) = self.outstanding.remove(&k) else {
                continue;
            };
            let mut e = Envelope::new(Kind::Reply);
            e.status = status::NODE_LOST;
            e.sender = k.0;
            e.seq = k.1;
            e.origin = o.origin;
            e.target = o.target;
            e.reply_desc = &o.reply_desc;
            let b = e.to_vec();
            self.deliver(o.reply_desc.clone(), b);
        }
    }
}

/// Deposits `body` with `hints` and `clientid` into `sendh`'s channel, trying once: a body
/// that is a whole allocation of the channel's pool moves into the channel by transfer of
/// ownership (no copy), any other is copied. The body is taken on success and left in
/// `body` on failure.
fn deposit_body(
    sendh: &ChannelSendH,
    body: &mut Option<Body>,
    hints: u64,
    clientid: u64,
) -> Result<(), Error> {
    let Some(b) = body.take() else {
        return Err(Error::Remote(RemoteError::Far(
            "the payload was lost".into(),
        )));
    };
    let b = match b.into_message() {
        Ok(mut m) => {
            m.set_hints(hints);
            m.set_clientid(clientid);
            match sendh.send_transfer(m, Timeout::Try) {
                Ok(()) => return Ok(()),
                Err(t) => {
                    *body = Body::pool(t.message, 0);
                    if !matches!(t.error, Error::ChannelSendError(Reason::ForeignMemory)) {
                        return Err(t.error);
                    }
                    // Memory of another pool: copied below.
                    let Some(b) = body.take() else {
                        return Err(t.error);
                    };
                    b
                }
            }
        }
        Err(b) => b,
    };
    let r = try_deposit(sendh, b.as_slice(), hints, clientid);
    if r.is_err() {
        *body = Some(b);
    }
    r
}

/// The answer status of a local error.
fn status_of(e: &Error) -> u32 {
    match e {
        Error::ChannelFull => status::FULL,
        Error::ChannelEmpty => status::EMPTY,
        Error::ChannelTimeout => status::TIMEOUT,
        Error::ChannelDestroyed => status::DESTROYED,
        Error::ChannelBarrierBroken => status::BARRIER_BROKEN,
        Error::MemoryPool(
            MemoryPoolError::NotFound(_)
            | MemoryPoolError::Destroyed(_)
            | MemoryPoolError::Stale(_),
        ) => status::DESTROYED,
        _ => status::FAILED,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use dragon_channels::remote::envelope::ReturnMode;

    use super::*;
    use crate::transport::TransportError;

    /// Rank 0 of 2, whose peer is the test: what the gateway sends is kept, what the test
    /// pushes arrives; messages above `max` are refused as by MPI's int counts.
    struct Fake {
        max: usize,
        sent: Vec<(usize, Vec<u8>)>,
        inbox: VecDeque<(usize, Vec<u8>)>,
        /// Bodies sent: rank and bytes.
        bodies_sent: Vec<(usize, Vec<u8>)>,
        /// Memory named for bodies from rank 1, in order.
        posted: VecDeque<(u64, Body)>,
        /// Bodies filled by the test.
        filled: VecDeque<(u64, Body)>,
    }

    impl Fake {
        fn new(max: usize, inbox: VecDeque<(usize, Vec<u8>)>) -> Self {
            Self {
                max,
                sent: Vec::new(),
                inbox,
                bodies_sent: Vec::new(),
                posted: VecDeque::new(),
                filled: VecDeque::new(),
            }
        }

        /// The peer's next body arrives holding `bytes`; whether memory was named for it.
        fn body_arrives(&mut self, bytes: &[u8]) -> bool {
            let Some((t, mut b)) = self.posted.pop_front() else {
                return false;
            };
            assert_eq!(
                b.len(),
                bytes.len(),
                "memory named for a body of another length"
            );
            b.as_mut_slice().copy_from_slice(bytes);
            self.filled.push_back((t, b));
            true
        }
    }

    impl Transport for Fake {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn send(&mut self, to: usize, msg: Vec<u8>) -> Result<(), TransportError> {
            assert!(
                msg.len() <= self.max,
                "the gateway sent past the transport's limit"
            );
            self.sent.push((to, msg));
            Ok(())
        }
        fn send_body(&mut self, to: usize, body: Body) -> Result<(), TransportError> {
            assert!(body.len() <= self.max, "a body past the transport's limit");
            self.bodies_sent.push((to, body.as_slice().to_vec()));
            Ok(())
        }
        fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
            self.inbox.pop_front()
        }
        fn recv_body(&mut self, from: usize, token: u64, into: Body) {
            assert_eq!(from, 1);
            self.posted.push_back((token, into));
        }
        fn try_recv_body(&mut self) -> Option<(u64, Body)> {
            self.filled.pop_front()
        }
        fn progress(&mut self) -> bool {
            false
        }
        fn lost(&mut self) -> Vec<usize> {
            Vec::new()
        }
        fn sending(&self) -> bool {
            false
        }
        fn receiving(&self) -> bool {
            !self.posted.is_empty()
        }
        fn max_message(&self) -> usize {
            self.max
        }
    }

    /// Removes the test pool's file even when the test fails.
    struct Unlink(String);

    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
        }
    }

    /// A request envelope to the peer's host.
    fn request(seq: u64, target: &[u8], reply: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut e = Envelope::new(Kind::Send);
        e.return_mode = ReturnMode::WhenDeposited;
        e.origin = dragon_channels::host::host_id();
        e.target = PEER;
        e.sender = 9;
        e.seq = seq;
        e.timeout_ns = WIRE_BLOCK;
        e.target_desc = target;
        e.reply_desc = reply;
        e.payload = payload;
        e.to_vec()
    }

    /// Drops the gateway and destroys its pool.
    fn destroy(gw: Gateway<Fake>) {
        let pool = gw.pool().clone();
        drop(gw);
        pool.destroy().unwrap();
    }

    const PEER: u64 = 0xFEED;

    /// A [`greeted`] gateway (pool `<tag><pid>`) and a 16 MiB target pool on this host
    /// (`<tag>t<pid>`), with the guards that remove both files.
    fn gateway_and_target(tag: &str) -> (Gateway<Fake>, MemoryPool, [Unlink; 2]) {
        let name = format!("{tag}{}", std::process::id());
        let tname = format!("{tag}t{}", std::process::id());
        let guards = [Unlink(name.clone()), Unlink(tname.clone())];
        let gw = greeted(&name, usize::MAX);
        let tpool = MemoryPool::create(1 << 24, &tname, 0).unwrap();
        (gw, tpool, guards)
    }

    /// A gateway with a 16 MiB pool `name` whose one peer (node 1, host [`PEER`]) said hello,
    /// over a [`Fake`] transport of messages up to `max` bytes.
    fn greeted(name: &str, max: usize) -> Gateway<Fake> {
        let mut hello = Envelope::new(Kind::Hello);
        hello.origin = PEER;
        let t = Fake::new(max, VecDeque::from([(1, hello.to_vec())]));
        let cfg = Config {
            pool_name: name.to_string(),
            pool_size: 1 << 24,
            capacity: 16,
        };
        let mut gw = Gateway::new(t, &cfg).unwrap();
        gw.wait_peers(Duration::from_secs(5)).unwrap();
        gw
    }

    /// Sequence numbers of the SEND envelopes the gateway handed to the transport, in order
    /// (batches opened).
    fn sent_seqs(t: &Fake) -> Vec<u64> {
        let mut out = Vec::new();
        for (_, m) in &t.sent {
            if m[..4] == BATCH_MAGIC.to_le_bytes() {
                let n = u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize;
                let mut pos = 8;
                for _ in 0..n {
                    let len = u32::from_le_bytes(m[pos..pos + 4].try_into().unwrap()) as usize;
                    out.push(Envelope::decode(&m[pos + 4..pos + 4 + len]).unwrap().seq);
                    pos += 4 + len;
                }
            } else if m[..4] == HEADER_MAGIC.to_le_bytes() {
                out.push(Envelope::decode(&m[HEADER_PREFIX..]).unwrap().seq);
            } else if let Ok(e) = Envelope::decode(m)
                && e.kind == Kind::Send
            {
                out.push(e.seq);
            }
        }
        out
    }

    #[test]
    fn order_is_kept_between_batches_and_large_messages() {
        let name = format!("gwo{}", std::process::id());
        let _cleanup = Unlink(name.clone());
        let mut gw = greeted(&name, usize::MAX);
        let mut client = gw.channel().sendh().unwrap();
        client.open().unwrap();
        let big = vec![1u8; BATCH_LIMIT + 1];
        for (seq, p) in [
            (1u64, &big[..8]),
            (2, &big[..8]),
            (3, &big[..]),
            (4, &big[..8]),
        ] {
            let b = request(seq, b"t", b"r", p);
            client.send_bytes(&b, b.len(), None, Timeout::Try).unwrap();
        }
        gw.turn();
        assert_eq!(sent_seqs(gw.transport()), [1, 2, 3, 4]);
        // 1 and 2 went as one batch, 3 as a header and its payload as a body (read from the
        // allocation the client sent), 4 alone.
        assert_eq!(gw.transport().bodies_sent.len(), 1);
        assert_eq!(gw.transport().bodies_sent[0], (1, big.clone()));
        let hello = |m: &[u8]| Envelope::decode(m).is_ok_and(|e| e.kind == Kind::Hello);
        let sends = gw
            .transport()
            .sent
            .iter()
            .filter(|(_, m)| !hello(m))
            .count();
        assert_eq!(sends, 3);
        drop(client);
        destroy(gw);
    }

    #[test]
    fn a_request_larger_than_the_transport_fails_with_a_clear_answer() {
        let name = format!("gwu{}", std::process::id());
        let _cleanup = Unlink(name.clone());
        let mut gw = greeted(&name, 2048);
        let done = Channel::create(gw.pool(), 77, None).unwrap();
        let mut done_r = done.recvh().unwrap();
        done_r.open().unwrap();
        let mut client = gw.channel().sendh().unwrap();
        client.open().unwrap();
        // A small request goes to node 1; a large one is answered FAILED at once.
        let (target, reply) = (b"target".to_vec(), done.serialize());
        let payload = vec![3u8; 4096];
        for (seq, p) in [(1u64, &payload[..16]), (2, &payload[..])] {
            let b = request(seq, &target, &reply, p);
            client.send_bytes(&b, b.len(), None, Timeout::Try).unwrap();
        }
        gw.turn();
        assert_eq!(sent_seqs(gw.transport()), [1]);
        let a = done_r.recv_bytes(Timeout::Try).unwrap();
        let a = Envelope::decode(&a).unwrap();
        assert_eq!((a.kind, a.seq, a.status), (Kind::Reply, 2, status::FAILED));
        let why = String::from_utf8_lossy(a.payload).into_owned();
        assert!(why.contains("larger than the transport carries"), "{why}");
        drop((client, done_r));
        done.destroy().unwrap();
        destroy(gw);
    }

    /// The header message of a large SEND from the peer into `target`, waiting for its
    /// answer in `reply` on the peer's side.
    fn large_header(seq: u64, target: &[u8], timeout_ns: u64, len: usize) -> Vec<u8> {
        let mut e = Envelope::new(Kind::Send);
        e.origin = PEER;
        e.target = dragon_channels::host::host_id();
        e.sender = 5;
        e.seq = seq;
        e.timeout_ns = timeout_ns;
        e.hints = 11;
        e.clientid = 12;
        e.target_desc = target;
        e.reply_desc = b"peer's completion channel";
        header_message(&e, len)
    }

    /// The answers the gateway sent to the peer: (seq, status).
    fn answers(t: &Fake) -> Vec<(u64, u32)> {
        let mut envs: Vec<&[u8]> = Vec::new();
        for (_, m) in &t.sent {
            if m[..4] == BATCH_MAGIC.to_le_bytes() {
                let n = u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize;
                let mut pos = 8;
                for _ in 0..n {
                    let len = u32::from_le_bytes(m[pos..pos + 4].try_into().unwrap()) as usize;
                    envs.push(&m[pos + 4..pos + 4 + len]);
                    pos += 4 + len;
                }
            } else {
                envs.push(m);
            }
        }
        envs.iter()
            .filter_map(|m| Envelope::decode(m).ok())
            .filter(|e| e.kind == Kind::Reply)
            .map(|e| (e.seq, e.status))
            .collect()
    }

    #[test]
    fn a_body_goes_into_the_target_channel_in_order_and_a_late_one_is_dropped() {
        let (mut gw, tpool, _files) = gateway_and_target("gwb");
        let target = Channel::create(&tpool, 3, None).unwrap();
        let mut tr = target.recvh().unwrap();
        tr.open().unwrap();
        let desc = target.serialize();
        let one: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let two = vec![7u8; 50_000];
        // Two SENDs announced; the second's body arrives first in no case (bodies keep their
        // order), but the first arrives only after a turn without it.
        gw.t.inbox
            .push_back((1, large_header(1, &desc, WIRE_BLOCK, one.len())));
        gw.t.inbox
            .push_back((1, large_header(2, &desc, WIRE_BLOCK, two.len())));
        gw.turn();
        assert_eq!(gw.t.posted.len(), 2, "memory named for both bodies");
        assert!(gw.t.receiving());
        assert!(matches!(
            tr.recv_bytes(Timeout::Try),
            Err(Error::ChannelEmpty)
        ));
        assert!(answers(&gw.t).is_empty());
        assert!(gw.t.body_arrives(&one));
        assert!(gw.t.body_arrives(&two));
        gw.turn();
        for (seq, want) in [(1u64, &one), (2, &two)] {
            let m = tr.recv(Timeout::Try).unwrap();
            assert_eq!(m.bytes().unwrap(), &want[..], "message {seq}");
            assert_eq!((m.hints(), m.clientid()), (11, 12));
            // Moved in by transfer: the message is the allocation named for the body, in
            // the target channel's pool.
            assert!(m.pool().is_some_and(|p| p.name() == tpool.name()));
        }
        assert_eq!(answers(&gw.t), [(1, status::OK), (2, status::OK)]);
        // A SEND whose deadline passes before its body comes: TIMEOUT, and the late body
        // is dropped, never deposited.
        gw.t.sent.clear();
        gw.t.inbox
            .push_back((1, large_header(3, &desc, 1_000_000, two.len())));
        gw.turn();
        std::thread::sleep(Duration::from_millis(5));
        gw.turn();
        assert_eq!(answers(&gw.t), [(3, status::TIMEOUT)]);
        assert!(gw.t.body_arrives(&two));
        gw.turn();
        assert!(gw.bodies.is_empty());
        assert!(matches!(
            tr.recv_bytes(Timeout::Try),
            Err(Error::ChannelEmpty)
        ));
        drop(tr);
        target.destroy().unwrap();
        tpool.destroy().unwrap();
        destroy(gw);
    }

    #[test]
    fn a_large_get_answer_goes_from_and_into_allocations() {
        // Far side: the peer's GET of a channel here holding a large message.
        let (mut gw, tpool, _files) = gateway_and_target("gwg");
        let target = Channel::create(&tpool, 3, None).unwrap();
        let mut ts = target.sendh().unwrap();
        ts.open().unwrap();
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut m = Message::create_alloc(&tpool, big.len()).unwrap();
        m.bytes_memview().unwrap().copy_from_slice(&big);
        m.set_hints(4);
        ts.send_transfer(m, Timeout::Try).ok().unwrap();
        let desc = target.serialize();
        let mut get = Envelope::new(Kind::Get);
        get.origin = PEER;
        get.target = dragon_channels::host::host_id();
        get.sender = 6;
        get.seq = 1;
        get.timeout_ns = WIRE_BLOCK;
        get.target_desc = &desc;
        get.reply_desc = b"peer's completion channel";
        gw.t.inbox.push_back((1, get.to_vec()));
        gw.turn();
        // The answer: a header, and the payload as a body read from the received message.
        let head =
            gw.t.sent
                .iter()
                .find(|(_, m)| m[..4] == HEADER_MAGIC.to_le_bytes())
                .expect("a header");
        let e = Envelope::decode(&head.1[HEADER_PREFIX..]).unwrap();
        assert_eq!(
            (e.kind, e.seq, e.status, e.hints),
            (Kind::Reply, 1, status::OK, 4)
        );
        assert_eq!(gw.t.bodies_sent, [(1, big.clone())]);
        // Origin side: that answer arriving for a client here.
        let done = Channel::create(gw.pool(), 77, None).unwrap();
        let mut done_r = done.recvh().unwrap();
        done_r.open().unwrap();
        let reply_desc = done.serialize();
        let mut r = Envelope::new(Kind::Reply);
        r.seq = 9;
        r.hints = 4;
        r.reply_desc = &reply_desc;
        gw.t.inbox.push_back((1, header_message(&r, big.len())));
        gw.turn();
        assert!(matches!(
            done_r.recv_bytes(Timeout::Try),
            Err(Error::ChannelEmpty)
        ));
        assert!(gw.t.body_arrives(&big));
        gw.turn();
        let a = done_r.recv_bytes(Timeout::Try).unwrap();
        let a = Envelope::decode(&a).unwrap();
        assert_eq!((a.seq, a.op, a.hints), (9, OP_PAYLOAD_NEXT, 4));
        assert!(a.payload.is_empty());
        let m = done_r.recv(Timeout::Try).unwrap();
        assert_eq!(m.bytes().unwrap(), &big[..]);
        drop((ts, done_r, m));
        target.destroy().unwrap();
        done.destroy().unwrap();
        tpool.destroy().unwrap();
        destroy(gw);
    }

    #[test]
    fn payloads_behind_a_full_channel_take_its_pool_only_up_to_its_capacity() {
        let (mut gw, tpool, _files) = gateway_and_target("gwf");
        let attrs = ChannelAttrs {
            capacity: 2,
            ..ChannelAttrs::default()
        };
        let target = Channel::create(&tpool, 3, Some(attrs)).unwrap();
        let (mut ts, mut tr) = (target.sendh().unwrap(), target.recvh().unwrap());
        ts.open().unwrap();
        tr.open().unwrap();
        for _ in 0..2 {
            ts.send_bytes(b"full", 4, None, Timeout::Try).unwrap();
        }
        let desc = target.serialize();
        let payloads: Vec<Vec<u8>> = (1..=4u8).map(|k| vec![k; 20_000]).collect();
        for (i, p) in payloads.iter().enumerate() {
            let h = large_header(i as u64 + 1, &desc, WIRE_BLOCK, p.len());
            gw.t.inbox.push_back((1, h));
        }
        gw.turn();
        let kinds: Vec<String> = gw.t.posted.iter().map(|(_, b)| format!("{b:?}")).collect();
        assert_eq!(kinds.len(), 4);
        assert!(kinds[..2].iter().all(|k| k.contains("pool")), "{kinds:?}");
        assert!(kinds[2..].iter().all(|k| k.contains("heap")), "{kinds:?}");
        for p in &payloads {
            assert!(gw.t.body_arrives(p));
        }
        // As the channel drains, all four go in, in order.
        let mut got = Vec::new();
        for _ in 0..200 {
            gw.turn();
            while let Ok(b) = tr.recv_bytes(Timeout::Try) {
                got.push(b);
            }
            if got.len() == 6 {
                break;
            }
        }
        assert_eq!(got.len(), 6);
        assert_eq!(&got[2..], &payloads[..]);
        let ok = status::OK;
        assert_eq!(answers(&gw.t), [(1, ok), (2, ok), (3, ok), (4, ok)]);
        drop((ts, tr));
        target.destroy().unwrap();
        tpool.destroy().unwrap();
        destroy(gw);
    }
}
