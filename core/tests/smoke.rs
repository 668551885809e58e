//! Smoke test: the pool and channel round trip once, and everything comes back.
#![allow(clippy::std_instead_of_core, clippy::disallowed_types)] // a std test program
mod common;
use common::*;
use dragon_channels_core::*;

#[test]
fn smoke() {
    let mut m = Mem::new(1 << 20);
    let p = pool(&mut m, 64);
    let s0 = p.stats().unwrap();
    let a = p.alloc(100, AllocKind::Data).unwrap();
    let b = p.alloc(0, AllocKind::Data).unwrap();
    p.free(a).unwrap();
    assert_eq!(p.free(a), Err(PoolError::Stale));
    p.free(b).unwrap();
    assert_eq!(p.stats().unwrap(), s0);
    let ch = Channel::create(&p, 1, &ChannelAttrs::default()).unwrap();
    ch.try_send(b"hello", 3, 4).unwrap();
    let big = vec![7u8; 5000];
    ch.try_send(&big, 0, 0).unwrap();
    let mut buf = vec![0u8; 8000];
    let g = ch.try_recv_into(&mut buf).unwrap();
    assert_eq!((&buf[..g.len], g.hints, g.clientid), (&b"hello"[..], 3, 4));
    let (al, g) = ch.try_recv_alloc().unwrap();
    assert_eq!(g.len, 5000);
    p.free(al).unwrap();
    assert_eq!(ch.try_recv_into(&mut buf), Err(ChannelError::Empty));
    let d = ch.serialize();
    let ch2 = Channel::attach(&p, &d, None).unwrap();
    ch2.destroy().unwrap();
    assert_eq!(ch.try_send(b"x", 0, 0), Err(ChannelError::Destroyed));
    assert_eq!(p.stats().unwrap(), s0);
    println!("overhead {} of {}", p.metadata_size(), 1 << 20);
}
