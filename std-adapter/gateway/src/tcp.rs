//! [`TcpTransport`]: the gateways of a job as a full mesh of non-blocking TCP connections,
//! for machines without MPI and for the tests under plain `cargo test`.
//!
//! Rank `r` listens on `addrs[r]`, connects to every lower rank and accepts every higher
//! one; the first 4 bytes a connector writes are its rank. Each message is framed as
//! `[length u64 LE][bytes]`, a body with [`BODY_BIT`] set in its length; a large message or
//! body is written from its own memory and read straight into the memory named for it. A
//! connection that closes or fails makes its peer lost.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use crate::body::Body;
use crate::transport::{Transport, TransportError};

/// How long setup waits for every peer.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// Bytes read per call while a message's length is not known yet; messages up to this size
/// are written as one frame (header and bytes in one buffer), larger ones from their own
/// memory.
const READ_CHUNK: usize = 64 * 1024;
/// Set in a frame's length: the frame is a body.
const BODY_BIT: u64 = 1 << 63;

/// A frame being read into memory of its own.
enum Filling {
    /// A large message: its bytes and how many are filled.
    Msg(Vec<u8>, usize),
    /// A body: its token, memory and how many bytes are filled.
    Body(u64, Body, usize),
}

/// One connection.
struct Peer {
    stream: TcpStream,
    /// What to write, in order (frame headers, small frames whole, large messages and
    /// bodies from their own memory); the first may be partly written.
    out: VecDeque<(Body, usize)>,
    /// Bytes read and not yet parsed into messages.
    inbuf: Vec<u8>,
    /// A frame being read into its own memory.
    filling: Option<Filling>,
    /// Memory named for the next bodies, in order.
    posted: VecDeque<(u64, Body)>,
    lost: bool,
}

/// A TCP mesh between the job's gateways.
pub struct TcpTransport {
    rank: usize,
    peers: Vec<Option<Peer>>,
    arrived: VecDeque<(usize, Vec<u8>)>,
    bodies: VecDeque<(u64, Body)>,
    newly_lost: Vec<usize>,
}

impl TcpTransport {
    /// Sets up the mesh: this gateway is `rank` of `addrs.len()`.
    ///
    /// # Errors
    /// [`TransportError::Setup`] when listening, connecting or the rank handshake fails
    /// within 60 s.
    pub fn connect(rank: usize, addrs: &[SocketAddr]) -> Result<Self, TransportError> {
        let setup = |what: &str, e: std::io::Error| TransportError::Setup(format!("{what}: {e}"));
        let size = addrs.len();
        if rank >= size {
            return Err(TransportError::Setup(format!(
                "rank {rank} outside the {size} addresses"
            )));
        }
        let listener = TcpListener::bind(addrs[rank]).map_err(|e| setup("listen", e))?;
        let mut streams: Vec<Option<TcpStream>> = (0..size).map(|_| None).collect();
        let t0 = Instant::now();
        for (j, addr) in addrs.iter().enumerate().take(rank) {
            let s = loop {
                match TcpStream::connect(addr) {
                    Ok(s) => break s,
                    Err(e) if t0.elapsed() > SETUP_WAIT => return Err(setup("connect", e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            (&s).write_all(&(rank as u32).to_le_bytes())
                .map_err(|e| setup("handshake", e))?;
            streams[j] = Some(s);
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| setup("listen", e))?;
        let mut missing = size - 1 - rank;
        while missing > 0 {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).map_err(|e| setup("accept", e))?;
                    s.set_read_timeout(Some(SETUP_WAIT))
                        .map_err(|e| setup("accept", e))?;
                    let mut b = [0u8; 4];
                    (&s).read_exact(&mut b).map_err(|e| setup("handshake", e))?;
                    let j = u32::from_le_bytes(b) as usize;
                    if j <= rank || j >= size || streams[j].is_some() {
                        return Err(TransportError::Setup(format!(
                            "unexpected peer rank {j} connecting to rank {rank}"
                        )));
                    }
                    streams[j] = Some(s);
                    missing -= 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if t0.elapsed() > SETUP_WAIT {
                        return Err(TransportError::Setup(format!(
                            "{missing} higher ranks did not connect within {SETUP_WAIT:?}"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(setup("accept", e)),
            }
        }
        let mut peers = Vec::with_capacity(size);
        for s in streams {
            peers.push(match s {
                None => None,
                Some(s) => {
                    s.set_nonblocking(true).map_err(|e| setup("configure", e))?;
                    s.set_nodelay(true).map_err(|e| setup("configure", e))?;
                    Some(Peer {
                        stream: s,
                        out: VecDeque::new(),
                        inbuf: Vec::new(),
                        filling: None,
                        posted: VecDeque::new(),
                        lost: false,
                    })
                }
            });
        }
        Ok(Self {
            rank,
            peers,
            arrived: VecDeque::new(),
            bodies: VecDeque::new(),
            newly_lost: Vec::new(),
        })
    }

    fn mark_lost(&mut self, j: usize) {
        if let Some(p) = self.peers[j].as_mut()
            && !p.lost
        {
            p.lost = true;
            p.out.clear();
            p.posted.clear();
            p.filling = None;
            let _ = p.stream.shutdown(std::net::Shutdown::Both);
            self.newly_lost.push(j);
        }
    }

    /// Writes what peer `j` can take now; whether anything was written. `Err` when the
    /// connection failed.
    fn write_some(p: &mut Peer) -> Result<bool, ()> {
        let mut moved = false;
        while let Some((frame, pos)) = p.out.front_mut() {
            match p.stream.write(&frame.as_slice()[*pos..]) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    moved = true;
                    *pos += n;
                    if *pos == frame.len() {
                        p.out.pop_front();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(moved)
    }

    /// Reads what peer `j` has sent; whether anything was read. `Err` at end of stream,
    /// failure, or a body that does not match the memory named for it.
    fn read_some(
        p: &mut Peer,
        j: usize,
        arrived: &mut VecDeque<(usize, Vec<u8>)>,
        bodies: &mut VecDeque<(u64, Body)>,
    ) -> Result<bool, ()> {
        let mut moved = false;
        loop {
            // A frame of known length reads straight into its own memory.
            if let Some(f) = p.filling.as_mut() {
                let (dest, filled) = match f {
                    Filling::Msg(v, filled) => (&mut v[..], filled),
                    Filling::Body(_, b, filled) => (b.as_mut_slice(), filled),
                };
                if *filled == dest.len() {
                    match p.filling.take() {
                        Some(Filling::Msg(v, _)) => arrived.push_back((j, v)),
                        Some(Filling::Body(token, b, _)) => bodies.push_back((token, b)),
                        None => {}
                    }
                    continue;
                }
                match p.stream.read(&mut dest[*filled..]) {
                    Ok(0) => return Err(()),
                    Ok(n) => {
                        *filled += n;
                        moved = true;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(moved),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return Err(()),
                }
            }
            // Parse whole frames out of the buffer.
            if p.inbuf.len() >= 8 {
                let mut h = [0u8; 8];
                h.copy_from_slice(&p.inbuf[..8]);
                let raw = u64::from_le_bytes(h);
                let len = usize::try_from(raw & !BODY_BIT).map_err(|_| ())?;
                let have = p.inbuf.len() - 8;
                if raw & BODY_BIT != 0 {
                    // A body: into the memory named for it, once it is named (until then
                    // the rest of the stream waits, as TCP lets it).
                    let Some((token, mut b)) = p.posted.pop_front() else {
                        return Ok(moved);
                    };
                    if b.len() != len {
                        return Err(());
                    }
                    let n = have.min(len);
                    b.as_mut_slice()[..n].copy_from_slice(&p.inbuf[8..8 + n]);
                    p.inbuf.drain(..8 + n);
                    p.filling = Some(Filling::Body(token, b, n));
                    continue;
                }
                if have >= len {
                    let body = p.inbuf[8..8 + len].to_vec();
                    p.inbuf.drain(..8 + len);
                    arrived.push_back((j, body));
                    continue;
                }
                if len > READ_CHUNK {
                    let mut body = vec![0u8; len];
                    body[..have].copy_from_slice(&p.inbuf[8..]);
                    p.inbuf.clear();
                    p.filling = Some(Filling::Msg(body, have));
                    continue;
                }
            }
            let old = p.inbuf.len();
            p.inbuf.resize(old + READ_CHUNK, 0);
            match p.stream.read(&mut p.inbuf[old..]) {
                Ok(0) => {
                    p.inbuf.truncate(old);
                    return Err(());
                }
                Ok(n) => {
                    p.inbuf.truncate(old + n);
                    moved = true;
                }
                Err(e) => {
                    p.inbuf.truncate(old);
                    match e.kind() {
                        ErrorKind::WouldBlock => return Ok(moved),
                        ErrorKind::Interrupted => {}
                        _ => return Err(()),
                    }
                }
            }
        }
    }

    /// Queues `header` then (when given) `bytes` for peer `to` and starts writing.
    fn queue(
        &mut self,
        to: usize,
        header: Vec<u8>,
        bytes: Option<Body>,
    ) -> Result<(), TransportError> {
        let Some(p) = self.peers.get_mut(to).and_then(Option::as_mut) else {
            return Err(TransportError::PeerLost(to));
        };
        if p.lost {
            return Err(TransportError::PeerLost(to));
        }
        p.out.push_back((Body::heap(header), 0));
        if let Some(b) = bytes {
            p.out.push_back((b, 0));
        }
        // Start writing at once: a small message usually goes in this call.
        if Self::write_some(p).is_err() {
            self.mark_lost(to);
            return Err(TransportError::PeerLost(to));
        }
        Ok(())
    }
}

impl Transport for TcpTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.peers.len()
    }

    fn send(&mut self, to: usize, msg: Vec<u8>) -> Result<(), TransportError> {
        let header = (msg.len() as u64).to_le_bytes();
        if msg.len() > READ_CHUNK {
            return self.queue(to, header.to_vec(), Some(Body::heap(msg)));
        }
        let mut frame = Vec::with_capacity(8 + msg.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&msg);
        self.queue(to, frame, None)
    }

    fn send_body(&mut self, to: usize, body: Body) -> Result<(), TransportError> {
        let header = (body.len() as u64 | BODY_BIT).to_le_bytes();
        self.queue(to, header.to_vec(), Some(body))
    }

    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
        self.arrived.pop_front()
    }

    fn recv_body(&mut self, from: usize, token: u64, into: Body) {
        // Memory named for a lost peer is dropped: nothing more comes from it.
        if let Some(p) = self.peers.get_mut(from).and_then(Option::as_mut)
            && !p.lost
        {
            p.posted.push_back((token, into));
        }
    }

    fn try_recv_body(&mut self) -> Option<(u64, Body)> {
        self.bodies.pop_front()
    }

    fn progress(&mut self) -> bool {
        let mut moved = false;
        for j in 0..self.peers.len() {
            let Some(p) = self.peers[j].as_mut() else {
                continue;
            };
            if p.lost {
                continue;
            }
            let w = Self::write_some(p);
            let r = Self::read_some(p, j, &mut self.arrived, &mut self.bodies);
            match (w, r) {
                (Ok(a), Ok(b)) => moved |= a | b,
                _ => {
                    self.mark_lost(j);
                    moved = true;
                }
            }
        }
        moved
    }

    fn lost(&mut self) -> Vec<usize> {
        core::mem::take(&mut self.newly_lost)
    }

    fn sending(&self) -> bool {
        self.peers
            .iter()
            .flatten()
            .any(|p| !p.lost && !p.out.is_empty())
    }

    fn receiving(&self) -> bool {
        self.peers.iter().flatten().any(|p| {
            !p.lost && (!p.posted.is_empty() || matches!(p.filling, Some(Filling::Body(..))))
        })
    }
}
