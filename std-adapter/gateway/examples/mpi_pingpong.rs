//! MPI's own figures between two ranks, for the remote-channel benchmark to stand beside:
//! 64 B and 1 MiB ping-pong (p50 / p99 one-way = round trip / 2) and the 64 B message rate
//! (windows of 64 non-blocking sends, one acknowledgement per window). Run it under the
//! same `mpirun` flags and `node-sim.sh` as the gateways (see `std-adapter/gateway/bench-mpi.sh`).

use std::time::Instant;

use mpi::point_to_point::{Destination, Source};
use mpi::request::WaitGuard;
use mpi::topology::Communicator;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let universe = mpi::initialize().expect("MPI init");
    let world = universe.world();
    let (me, peer) = (world.rank(), 1 - world.rank());
    let other = world.process_at_rank(peer);
    for (size, rounds) in [(64usize, 20_000usize), (1 << 20, 300)] {
        let out = vec![7u8; size];
        let mut inb = vec![0u8; size];
        let mut times = Vec::with_capacity(rounds);
        for i in 0..rounds + rounds / 10 {
            let t0 = Instant::now();
            if me == 0 {
                other.send(&out[..]);
                other.receive_into(&mut inb[..]);
            } else {
                other.receive_into(&mut inb[..]);
                other.send(&out[..]);
            }
            if i >= rounds / 10 {
                times.push(t0.elapsed().as_secs_f64() * 1e6 / 2.0);
            }
        }
        if me == 0 {
            let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
            println!("mpi pingpong {size:>8} B: p50 {p50:9.2} us  p99 {p99:9.2} us (one way)");
        }
    }
    let (window, windows) = (64usize, 2_000usize);
    let msg = [1u8; 64];
    let mut ack = [0u8; 1];
    let t0 = Instant::now();
    for _ in 0..windows {
        if me == 0 {
            mpi::request::scope(|s| {
                let guards: Vec<_> = (0..window)
                    .map(|_| WaitGuard::from(other.immediate_send(s, &msg[..])))
                    .collect();
                drop(guards);
            });
            other.receive_into(&mut ack[..]);
        } else {
            let mut b = [0u8; 64];
            for _ in 0..window {
                other.receive_into(&mut b[..]);
            }
            other.send(&ack[..]);
        }
    }
    if me == 0 {
        let rate = (window * windows) as f64 / t0.elapsed().as_secs_f64();
        println!("mpi message rate 64 B: {rate:.0} msg/s");
    }
}
