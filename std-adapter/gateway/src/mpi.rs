//! [`MpiTransport`]: the gateways of a job as the ranks of `MPI_COMM_WORLD` (feature `mpi`).
//!
//! One rank per node, started by `mpirun` / `srun`. MPI is used from the gateway's one
//! thread only (`MPI_THREAD_FUNNELED`). Sends are non-blocking (`MPI_Isend` of the whole
//! message, kept until `MPI_Test` says it completed: two gateways each in a blocking large
//! send to the other would deadlock under the rendezvous protocol); receives are
//! `MPI_Improbe` plus a matched receive of exactly the probed size, so any size arrives as
//! one message. MPI makes progress only inside MPI calls (OpenMPI 4 has no progress
//! thread), which the gateway's loop provides by calling [`Transport::progress`] each turn.
//!
//! A rank that dies takes the job down under most launchers; this transport reports no lost
//! peers of its own (clients then see their own gateway gone).

use std::collections::VecDeque;

use mpi::Threading;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::transport::{Transport, TransportError};

/// The tag of gateway messages.
const TAG: i32 = 7;

/// A send in flight: its request and the leaked buffer it reads.
struct InFlight {
    req: Request<'static, [u8], StaticScope>,
    buf: *mut [u8],
}

/// `MPI_COMM_WORLD` as the job's gateways.
pub struct MpiTransport {
    // Dropped last: finalizes MPI.
    world: SimpleCommunicator,
    in_flight: Vec<InFlight>,
    arrived: VecDeque<(usize, Vec<u8>)>,
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
            arrived: VecDeque::new(),
            rank,
            size,
            _universe: universe,
        })
    }

    /// Completes what finished; whether anything did.
    fn test_sends(&mut self) -> bool {
        let before = self.in_flight.len();
        let mut still = Vec::with_capacity(before);
        for f in self.in_flight.drain(..) {
            match f.req.test() {
                Ok(_) => {
                    // SAFETY: `buf` came from `Box::into_raw` in `send` and MPI no longer
                    // reads it (the request completed); nothing else holds it.
                    drop(unsafe { Box::from_raw(f.buf) });
                }
                Err(req) => still.push(InFlight { req, buf: f.buf }),
            }
        }
        self.in_flight = still;
        self.in_flight.len() != before
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        // A request dropped incomplete panics (rsmpi): finish them before MPI goes.
        for f in self.in_flight.drain(..) {
            f.req.wait();
            // SAFETY: as in `test_sends`: the request completed.
            drop(unsafe { Box::from_raw(f.buf) });
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
        if to >= self.size || i32::try_from(msg.len()).is_err() {
            return Err(TransportError::PeerLost(to));
        }
        let buf: *mut [u8] = Box::into_raw(msg.into_boxed_slice());
        // SAFETY: `buf` is a live heap allocation that stays untouched until the request
        // completes (`test_sends` or `drop` frees it then), so a `'static` loan to MPI holds.
        let view: &'static [u8] = unsafe { &*buf };
        let req = self
            .world
            .process_at_rank(to as i32)
            .immediate_send_with_tag(StaticScope, view, TAG);
        self.in_flight.push(InFlight { req, buf });
        Ok(())
    }

    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
        self.arrived.pop_front()
    }

    fn progress(&mut self) -> bool {
        let mut moved = self.test_sends();
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

    fn max_message(&self) -> usize {
        // MPI counts are C ints.
        i32::MAX as usize
    }
}
