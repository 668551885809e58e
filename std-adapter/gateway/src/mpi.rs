//! [`MpiTransport`]: the gateways of a job as the ranks of `MPI_COMM_WORLD` (feature `mpi`).
//!
//! One rank per node, started by `mpirun` / `srun`. MPI is used from the gateway's one
//! thread only (`MPI_THREAD_FUNNELED`). Sends are non-blocking (`MPI_Isend` of the whole
//! message, kept until `MPI_Test` says it completed: two gateways each in a blocking large
//! send to the other would deadlock under the rendezvous protocol); receives are
//! `MPI_Improbe` plus a matched receive of exactly the probed size, so any size arrives as
//! one message. Bodies (large payloads) go under a tag of their own, sent from and received
//! into the gateway's pool memory in place (`MPI_Isend` / `MPI_Irecv` on the body's memory,
//! kept until `MPI_Test` says done): MPI matches a source's messages of one tag in the order
//! they were sent, so the bodies of one rank fill the memory named for them in order. MPI
//! makes progress only inside MPI calls (OpenMPI 4 has no progress thread), which the
//! gateway's loop provides by calling [`Transport::progress`] each turn.
//!
//! A rank that dies takes the job down under most launchers; this transport reports no lost
//! peers of its own (clients then see their own gateway gone).

use std::collections::VecDeque;

use mpi::Threading;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::body::Body;
use crate::transport::{Transport, TransportError};

/// The tag of gateway messages.
const TAG: i32 = 7;
/// The tag of bodies.
const BODY_TAG: i32 = 8;

/// A send in flight: its request and the memory it reads.
struct InFlight {
    req: Request<'static, [u8], StaticScope>,
    _buf: Body,
}

/// A body receive posted: its request, token and the memory it fills.
struct Posted {
    req: Request<'static, [u8], StaticScope>,
    token: u64,
    buf: Body,
}

/// `MPI_COMM_WORLD` as the job's gateways.
pub struct MpiTransport {
    // Dropped last: finalizes MPI.
    world: SimpleCommunicator,
    in_flight: Vec<InFlight>,
    posted: Vec<Posted>,
    arrived: VecDeque<(usize, Vec<u8>)>,
    bodies: VecDeque<(u64, Body)>,
    rank: usize,
    size: usize,
    _universe: Universe,
}

impl MpiTransport {
    /// Initializes MPI (funneled: MPI calls from this thread only).
    ///
    /// # Errors
    /// [`TransportError::Setup`] when MPI is already initialized or refuses the threading
    /// level.
    pub fn init() -> Result<Self, TransportError> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| TransportError::Setup("MPI was already initialized".into()))?;
        if level < Threading::Funneled {
            return Err(TransportError::Setup(format!(
                "MPI grants only {level:?} threading; the gateway needs Funneled"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Self {
            world,
            in_flight: Vec::new(),
            posted: Vec::new(),
            arrived: VecDeque::new(),
            bodies: VecDeque::new(),
            rank,
            size,
            _universe: universe,
        })
    }

    /// Completes what finished; whether anything did.
    fn test_requests(&mut self) -> bool {
        let before = self.in_flight.len() + self.posted.len();
        let mut still = Vec::with_capacity(self.in_flight.len());
        for f in self.in_flight.drain(..) {
            match f.req.test() {
                // The request completed: MPI no longer reads the memory, which drops here.
                Ok(_) => {}
                Err(req) => still.push(InFlight { req, _buf: f._buf }),
            }
        }
        self.in_flight = still;
        let mut still = Vec::with_capacity(self.posted.len());
        for p in self.posted.drain(..) {
            match p.req.test() {
                Ok(_) => self.bodies.push_back((p.token, p.buf)),
                Err(req) => still.push(Posted { req, ..p }),
            }
        }
        self.posted = still;
        self.in_flight.len() + self.posted.len() != before
    }

    /// Starts a non-blocking send of `buf` to `to` with `tag`.
    fn isend(&mut self, to: usize, tag: i32, buf: Body) -> Result<(), TransportError> {
        if to >= self.size || i32::try_from(buf.len()).is_err() {
            return Err(TransportError::PeerLost(to));
        }
        // SAFETY: the memory stays where it is and untouched until the request completes:
        // the body is kept beside the request (`InFlight`) and dropped only after `test`
        // or `wait` said it completed, so a `'static` loan to MPI holds.
        let view: &'static [u8] =
            unsafe { core::slice::from_raw_parts(buf.as_slice().as_ptr(), buf.len()) };
        let req = self
            .world
            .process_at_rank(to as i32)
            .immediate_send_with_tag(StaticScope, view, tag);
        self.in_flight.push(InFlight { req, _buf: buf });
        Ok(())
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        // A request dropped incomplete panics (rsmpi): finish them before MPI goes (each
        // body after its request).
        for f in self.in_flight.drain(..) {
            f.req.wait();
        }
        for p in self.posted.drain(..) {
            // A body that never came (its gateway ended first): withdraw the receive.
            p.req.cancel();
            p.req.wait();
        }
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&mut self, to: usize, msg: Vec<u8>) -> Result<(), TransportError> {
        self.isend(to, TAG, Body::heap(msg))
    }

    fn send_body(&mut self, to: usize, body: Body) -> Result<(), TransportError> {
        self.isend(to, BODY_TAG, body)
    }

    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
        self.arrived.pop_front()
    }

    fn recv_body(&mut self, from: usize, token: u64, mut into: Body) {
        let s = into.as_mut_slice();
        // SAFETY: as in `isend`: the body is kept beside the request (`Posted`) and handed
        // on only after `test` said the receive completed (or, at the end, after it was
        // cancelled and waited for), so nothing else touches the memory while MPI writes it.
        let view: &'static mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(s.as_mut_ptr(), s.len()) };
        let req = self
            .world
            .process_at_rank(from as i32)
            .immediate_receive_into_with_tag(StaticScope, view, BODY_TAG);
        self.posted.push(Posted {
            req,
            token,
            buf: into,
        });
    }

    fn try_recv_body(&mut self) -> Option<(u64, Body)> {
        self.bodies.pop_front()
    }

    fn progress(&mut self) -> bool {
        let mut moved = self.test_requests();
        while let Some(probed) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG)
        {
            let (v, st) = probed.matched_receive_vec::<u8>();
            self.arrived.push_back((st.source_rank() as usize, v));
            moved = true;
        }
        moved
    }

    fn lost(&mut self) -> Vec<usize> {
        Vec::new()
    }

    fn sending(&self) -> bool {
        !self.in_flight.is_empty()
    }

    fn receiving(&self) -> bool {
        !self.posted.is_empty()
    }

    fn max_message(&self) -> usize {
        // MPI counts are C ints.
        i32::MAX as usize
    }
}
