//! `dragon-channels-gateway`: remote channels. One gateway process per node serves the
//! node's channels to the other nodes and forwards this node's remote operations; clients
//! reach it through an ordinary local channel (see `dragon_channels::remote`) and never call
//! the network themselves.
//!
//! The network is behind [`Transport`]: [`TcpTransport`] always, `MpiTransport` with the
//! `mpi` feature (one MPI rank per node, started by `mpirun` or `srun`). The
//! `dragon-gateway` binary runs one gateway and, optionally, this node's client command.

mod body;
mod gateway;
#[cfg(feature = "mpi")]
mod mpi;
mod tcp;
mod transport;

pub use body::Body;
pub use gateway::{
    BATCH_LIMIT, BATCH_MAX, Config, Gateway, SLEEP_MAX, SLEEP_MIN, Stats, YIELD_PHASE,
};
#[cfg(feature = "mpi")]
pub use mpi::MpiTransport;
pub use tcp::TcpTransport;
pub use transport::{Transport, TransportError};
