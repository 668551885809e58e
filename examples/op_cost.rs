//! Cost of one uncontended send + receive pair through the adapter's handles, in one process:
//! the per-message work the two-process ping-pong pays on top of the hardware floor. Meant
//! for instruction counting, e.g.
//! `valgrind --tool=callgrind target/release/examples/op_cost 10000` against the same with
//! 20000 (the difference over 10000 is the cost of one pair); without valgrind it prints the
//! mean time of a pair.

use std::time::Instant;

use dragon_channels::{Channel, ChannelAttrs, MemoryPool, Message, Timeout};

fn main() -> Result<(), Box<dyn core::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let name = format!("op-cost-{}", std::process::id());
    let pool = MemoryPool::create(4 << 20, &name, 1)?;
    let attrs = ChannelAttrs {
        capacity: 16,
        block_size: 256,
    };
    let ch = Channel::create(&pool, 1, Some(attrs))?;
    let mut sendh = ch.sendh()?;
    sendh.open()?;
    let mut recvh = ch.recvh()?;
    recvh.open()?;
    let mut out = Message::create_alloc(&pool, 64)?;
    let mut back = Message::create_alloc(&pool, 64)?;
    let t0 = Instant::now();
    for i in 0..n {
        out.bytes_memview()?[..8].copy_from_slice(&(i as u64).to_le_bytes());
        sendh.send(&out, None, Timeout::Block)?;
        recvh.recv_into(&mut back, Timeout::Block)?;
        if back.bytes()?[..8] != (i as u64).to_le_bytes() {
            return Err("received the wrong message".into());
        }
    }
    let dt = t0.elapsed();
    println!(
        "{n} send + recv_into pairs, 64 B: {:.1} ns per pair",
        dt.as_nanos() as f64 / n as f64
    );
    drop((out, back, sendh, recvh));
    ch.destroy()?;
    pool.destroy()?;
    Ok(())
}
