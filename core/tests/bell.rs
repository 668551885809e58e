//! The pool's doorbell in one thread: what rings it (a watched side only), what a watcher
//! hears (one ring with its channel's hint, merged rings as "many"), the sleeping flag a ring
//! clears and reports, watcher counts and their bound. Deterministic and small, so Miri runs
//! them too; a set of channels polled across processes is in the std adapter's
//! `tests/waiting.rs`, the race of a watch and a ring in `tests/loom.rs`.

mod common;

use common::{Mem, pool};
use dragon_channels_core::{Bell, Channel, ChannelAttrs, MAX_WATCHERS, Rings, Side};

fn channels(m: &mut Mem) -> (Channel, Channel) {
    let p = pool(m, 64);
    let attrs = ChannelAttrs {
        capacity: 4,
        block_size: 64,
    };
    (
        Channel::create(&p, 1, &attrs).unwrap(),
        Channel::create(&p, 2, &attrs).unwrap(),
    )
}

/// A send with its notify (event and doorbell), as the std adapter makes it; whether the
/// doorbell's sleepers must be woken.
fn send(ch: &Channel) -> bool {
    ch.try_send(b"x", 0, 0).unwrap();
    ch.notify(Side::Arrived).is_some_and(|n| n.bell)
}

/// A receive with its notify.
fn recv(ch: &Channel) -> bool {
    let mut b = [0u8; 8];
    ch.try_recv_into(&mut b).unwrap();
    ch.notify(Side::Freed).is_some_and(|n| n.bell)
}

#[test]
fn nobody_watching_nothing_rings() {
    let mut m = Mem::new(1 << 16);
    let (a, _b) = channels(&mut m);
    let bell = a.bell();
    let before = bell.peek();
    assert!(!send(&a));
    assert!(!recv(&a));
    assert_eq!(bell.peek(), before, "no watcher: the word is not written");
}

#[test]
fn a_watcher_hears_each_ring_with_its_channels_hint() {
    let mut m = Mem::new(1 << 16);
    let (a, b) = channels(&mut m);
    assert_ne!(a.bell().hint(), b.bell().hint(), "two headers, two hints");
    let bell = a.bell();
    let mut seen = bell.watch(Side::Arrived).unwrap();
    assert_eq!(bell.watchers(Side::Arrived), 1);
    assert_eq!(bell.watchers(Side::Freed), 0);
    for ch in [&a, &b, &b, &a] {
        assert!(!send(ch), "nobody asleep: no wake-up call");
        let now = bell.peek();
        assert_eq!(Bell::rings_since(seen, now), Rings::One(ch.bell().hint()));
        seen = now;
    }
    // Receives free slots: not the side watched.
    assert!(!recv(&a));
    assert_eq!(Bell::rings_since(seen, bell.peek()), Rings::None);
    // Two rings between looks: the watcher cannot tell which channels.
    send(&a);
    send(&b);
    assert_eq!(Bell::rings_since(seen, bell.peek()), Rings::Many);
    bell.unwatch(Side::Arrived);
    assert_eq!(bell.watchers(Side::Arrived), 0);
    let quiet = bell.peek();
    recv(&a);
    recv(&b);
    assert_eq!(bell.peek(), quiet, "unwatched: no more rings");
}

#[test]
fn a_ring_clears_the_sleeping_flag_and_asks_for_a_wake_up() {
    let mut m = Mem::new(1 << 16);
    let (a, b) = channels(&mut m);
    let bell = a.bell();
    bell.watch(Side::Freed).unwrap();
    send(&a);
    let armed = bell.arm();
    assert!(bell.armed());
    assert_eq!(bell.peek(), armed, "arming sets the flag only");
    assert!(!send(&b), "a send does not ring the freed side");
    assert!(recv(&a), "the first ring after arming asks for a wake-up");
    assert!(!bell.armed());
    assert_ne!(bell.peek(), armed, "the word a sleeper waits on changed");
    assert_eq!(
        Bell::rings_since(armed, bell.peek()),
        Rings::One(a.bell().hint()),
        "the flag does not count as a ring"
    );
    assert!(!recv(&b), "once woken, later rings make no wake-up call");
    bell.unwatch(Side::Freed);
}

#[test]
fn watchers_are_counted_per_side_and_bounded() {
    let mut m = Mem::new(1 << 16);
    let (a, _b) = channels(&mut m);
    let bell = a.bell();
    let n = if cfg!(miri) { 3 } else { MAX_WATCHERS };
    for _ in 0..n {
        bell.watch(Side::Arrived).unwrap();
    }
    assert_eq!(bell.watchers(Side::Arrived), n);
    if !cfg!(miri) {
        assert!(
            bell.watch(Side::Arrived).is_err(),
            "past the bound: refused"
        );
        assert_eq!(bell.watchers(Side::Arrived), MAX_WATCHERS);
    }
    bell.watch(Side::Freed).unwrap();
    assert_eq!(bell.watchers(Side::Freed), 1, "the other side counts apart");
    for _ in 0..n + 5 {
        bell.unwatch(Side::Arrived);
    }
    assert_eq!(bell.watchers(Side::Arrived), 0, "never below zero");
    assert_eq!(bell.watchers(Side::Freed), 1);
}

#[test]
fn an_announcement_and_its_ring_are_heard_as_the_channels_rings_never_merged() {
    let mut m = Mem::new(1 << 16);
    let (a, b) = channels(&mut m);
    let bell = a.bell();
    let quiet = bell.peek();
    a.announce(Side::Arrived);
    assert_eq!(bell.peek(), quiet, "nobody watching: nothing announced");
    let before = bell.watch(Side::Arrived).unwrap();
    a.announce(Side::Arrived);
    let announced = bell.peek();
    assert_eq!(
        Bell::rings_since(before, announced),
        Rings::One(a.bell().hint()),
        "an announcement names its channel"
    );
    b.announce(Side::Arrived);
    assert_eq!(bell.peek(), announced, "one announcement at a time");
    assert!(!send(&a), "nobody asleep: no wake-up call");
    let rung = bell.peek();
    assert_eq!(
        Bell::rings_since(announced, rung),
        Rings::One(a.bell().hint()),
        "the ring after the announcement is heard"
    );
    assert_eq!(
        Bell::rings_since(before, rung),
        Rings::One(a.bell().hint()),
        "an announcement and its ring count as one ring of the channel"
    );
    // Another channel's ring over an announcement: two rings.
    a.announce(Side::Arrived);
    assert!(!send(&b));
    assert_eq!(Bell::rings_since(rung, bell.peek()), Rings::Many);
    // The announcer's own ring after that is a ring of its own.
    let seen = bell.peek();
    assert!(!send(&a));
    assert_eq!(
        Bell::rings_since(seen, bell.peek()),
        Rings::One(a.bell().hint())
    );
    bell.unwatch(Side::Arrived);
}

#[test]
fn a_sleeper_is_not_announced_to_but_woken_by_the_ring() {
    let mut m = Mem::new(1 << 16);
    let (a, _b) = channels(&mut m);
    let bell = a.bell();
    bell.watch(Side::Arrived).unwrap();
    let armed = bell.arm();
    a.announce(Side::Arrived);
    assert_eq!(
        bell.peek(),
        armed,
        "the word a sleeper waits on is left alone"
    );
    assert!(send(&a), "the ring wakes the sleeper");
    assert_eq!(
        Bell::rings_since(armed, bell.peek()),
        Rings::One(a.bell().hint())
    );
    // Armed after an announcement: the ring still wakes.
    a.announce(Side::Arrived);
    let armed = bell.arm();
    assert!(
        send(&a),
        "an armed announcement: the ring wakes the sleeper"
    );
    assert!(!bell.armed());
    assert_eq!(
        Bell::rings_since(armed, bell.peek()),
        Rings::One(a.bell().hint())
    );
    bell.unwatch(Side::Arrived);
}
