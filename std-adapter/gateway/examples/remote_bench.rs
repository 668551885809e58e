//! Remote-channel benchmark (not a test): run as the client of each of two gateways
//! (`std-adapter/gateway/bench-mpi.sh` starts it). Rank 0 and rank 1 each own a channel; a ping goes by a
//! remote send into the other node's channel and is taken there by a local receive.
//! Prints p50 / p99 one-way latency (round trip / 2) for 64 B (both return modes) and 1 MiB,
//! then 1 MiB the other way round (each side sends into a channel of its own and the other
//! takes it by a remote receive, as a message), and the 64 B message rate of queued-only
//! sends (which the gateways batch).

use core::time::Duration;
use std::path::PathBuf;
use std::time::Instant;

use dragon_channels::remote::{from_hex, to_hex};
use dragon_channels::{Channel, ChannelAttrs, MemoryPool, ReturnMode, Timeout};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let rank: usize = std::env::var("DRAGON_GW_RANK")
        .expect("run under dragon-gateway")
        .parse()
        .unwrap();
    let dir = PathBuf::from(std::env::var("DC_DIR").expect("DC_DIR"));
    let pool =
        MemoryPool::create(1 << 29, &format!("bench{rank}-{}", std::process::id()), 0).unwrap();
    let attrs = ChannelAttrs {
        capacity: 256,
        ..ChannelAttrs::default()
    };
    let mine = Channel::create(&pool, 1, Some(attrs)).unwrap();
    let outbox = Channel::create(&pool, 2, Some(attrs)).unwrap();
    for (tag, ch) in [("ch", &mine), ("out", &outbox)] {
        let tmp = dir.join(format!(".{tag}{rank}"));
        std::fs::write(&tmp, to_hex(&ch.serialize())).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{tag}{rank}"))).unwrap();
    }
    let fetch = |tag: &str| loop {
        if let Ok(s) = std::fs::read_to_string(dir.join(format!("{tag}{}", rank ^ 1))) {
            break Channel::attach(&from_hex(&s).unwrap()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let other = fetch("ch");
    let other_out = fetch("out");
    assert!(other.is_remote());
    let mut s = other.sendh().unwrap();
    s.open().unwrap();
    let mut r = mine.recvh().unwrap();
    r.open().unwrap();
    let cases = [
        (
            "64 B, IMMEDIATELY",
            64usize,
            5_000usize,
            ReturnMode::Immediately,
        ),
        ("64 B, WHEN_DEPOSITED", 64, 5_000, ReturnMode::WhenDeposited),
        ("1 MiB, IMMEDIATELY", 1 << 20, 200, ReturnMode::Immediately),
    ];
    for (name, size, rounds, mode) in cases {
        s.set_return_mode(mode);
        let buf = vec![5u8; size];
        let mut times = Vec::with_capacity(rounds);
        for i in 0..rounds + rounds / 10 {
            let t0 = Instant::now();
            if rank == 0 {
                s.send_bytes(&buf, size, None, Timeout::Block).unwrap();
                r.recv_bytes(Timeout::Block).unwrap();
            } else {
                r.recv_bytes(Timeout::Block).unwrap();
                s.send_bytes(&buf, size, None, Timeout::Block).unwrap();
            }
            if i >= rounds / 10 {
                times.push(t0.elapsed().as_secs_f64() * 1e6 / 2.0);
            }
        }
        if rank == 0 {
            let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
            println!("remote pingpong {name:<22}: p50 {p50:9.2} us  p99 {p99:9.2} us (one way)");
        }
    }
    {
        // 1 MiB by remote receives: a local send into this side's outbox, a remote receive
        // (as a message) from the other side's.
        let mut os = outbox.sendh().unwrap();
        os.open().unwrap();
        let mut rr = other_out.recvh().unwrap();
        rr.open().unwrap();
        let (size, rounds) = (1usize << 20, 200usize);
        let buf = vec![6u8; size];
        let mut times = Vec::with_capacity(rounds);
        for i in 0..rounds + rounds / 10 {
            let t0 = Instant::now();
            if rank == 0 {
                os.send_bytes(&buf, size, None, Timeout::Block).unwrap();
                assert_eq!(rr.recv(Timeout::Block).unwrap().len(), size);
            } else {
                assert_eq!(rr.recv(Timeout::Block).unwrap().len(), size);
                os.send_bytes(&buf, size, None, Timeout::Block).unwrap();
            }
            if i >= rounds / 10 {
                times.push(t0.elapsed().as_secs_f64() * 1e6 / 2.0);
            }
        }
        if rank == 0 {
            let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
            let name = "1 MiB, remote recv";
            println!("remote pingpong {name:<22}: p50 {p50:9.2} us  p99 {p99:9.2} us (one way)");
        }
    }
    let n = 100_000usize;
    s.set_return_mode(ReturnMode::Immediately);
    let t0 = Instant::now();
    if rank == 0 {
        let b = [1u8; 64];
        for _ in 0..n {
            s.send_bytes(&b, 64, None, Timeout::Block).unwrap();
        }
        r.recv_bytes(Timeout::Block).unwrap();
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        println!("remote message rate 64 B (IMMEDIATELY, batched): {rate:.0} msg/s");
    } else {
        for _ in 0..n {
            r.recv_bytes(Timeout::Block).unwrap();
        }
        s.send_bytes(b"done", 4, None, Timeout::Block).unwrap();
    }
    // Both are done with each other's channel before either goes.
    std::fs::write(dir.join(format!("end{rank}")), "").unwrap();
    while !dir.join(format!("end{}", rank ^ 1)).exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop((s, r, other, other_out));
    mine.destroy().unwrap();
    outbox.destroy().unwrap();
    pool.destroy().unwrap();
}
