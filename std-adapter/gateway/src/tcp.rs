//! [`TcpTransport`]: the gateways of a job as a full mesh of non-blocking TCP connections,
//! for machines without MPI and for the tests under plain `cargo test`.
//!
//! Rank `r` listens on `addrs[r]`, connects to every lower rank and accepts every higher
//! one; the first 4 bytes a connector writes are its rank. Each message is framed as
//! `[length u64 LE][bytes]`. A connection that closes or fails makes its peer lost.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use crate::transport::{Transport, TransportError};

/// How long setup waits for every peer.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// Bytes read per call while a message's length is not known yet.
const READ_CHUNK: usize = 64 * 1024;

/// One connection.
struct Peer {
    stream: TcpStream,
    /// Frames to write: the header and body of the first may be partly written.
    out: VecDeque<(Vec<u8>, usize)>,
    /// Bytes read and not yet parsed into messages.
    inbuf: Vec<u8>,
    /// A message being read: its body and bytes filled.
    body: Option<(Vec<u8>, usize)>,
    lost: bool,
}

/// A TCP mesh between the job's gateways.
pub struct TcpTransport {
    rank: usize,
    peers: Vec<Option<Peer>>,
    arrived: VecDeque<(usize, Vec<u8>)>,
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
                        body: None,
                        lost: false,
                    })
                }
            });
        }
        Ok(Self {
            rank,
            peers,
            arrived: VecDeque::new(),
            newly_lost: Vec::new(),
        })
    }

    fn mark_lost(&mut self, j: usize) {
        if let Some(p) = self.peers[j].as_mut()
            && !p.lost
        {
            p.lost = true;
            p.out.clear();
            let _ = p.stream.shutdown(std::net::Shutdown::Both);
            self.newly_lost.push(j);
        }
    }

    /// Writes what peer `j` can take now; whether anything was written. `Err` when the
    /// connection failed.
    fn write_some(p: &mut Peer) -> Result<bool, ()> {
        let mut moved = false;
        while let Some((frame, pos)) = p.out.front_mut() {
            match p.stream.write(&frame[*pos..]) {
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

    /// Reads what peer `j` has sent; whether anything was read. `Err` at end of stream or
    /// failure.
    fn read_some(
        p: &mut Peer,
        j: usize,
        arrived: &mut VecDeque<(usize, Vec<u8>)>,
    ) -> Result<bool, ()> {
        let mut moved = false;
        loop {
            // A body of known length reads straight into its own vector.
            if let Some((body, filled)) = p.body.as_mut() {
                if *filled == body.len() {
                    let (body, _) = p.body.take().expect("present");
                    arrived.push_back((j, body));
                    continue;
                }
                match p.stream.read(&mut body[*filled..]) {
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
                let len = u64::from_le_bytes(h) as usize;
                let have = p.inbuf.len() - 8;
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
                    p.body = Some((body, have));
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
}

impl Transport for TcpTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.peers.len()
    }

    fn send(&mut self, to: usize, msg: Vec<u8>) -> Result<(), TransportError> {
        let Some(p) = self.peers.get_mut(to).and_then(Option::as_mut) else {
            return Err(TransportError::PeerLost(to));
        };
        if p.lost {
            return Err(TransportError::PeerLost(to));
        }
        let mut frame = Vec::with_capacity(8 + msg.len());
        frame.extend_from_slice(&(msg.len() as u64).to_le_bytes());
        frame.extend_from_slice(&msg);
        p.out.push_back((frame, 0));
        // Start writing at once: a small message usually goes in this call.
        if Self::write_some(p).is_err() {
            self.mark_lost(to);
            return Err(TransportError::PeerLost(to));
        }
        Ok(())
    }

    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
        self.arrived.pop_front()
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
            let r = Self::read_some(p, j, &mut self.arrived);
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
}
