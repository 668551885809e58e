//! Dead peers: a child process stops in the middle of a pool or channel operation (the core's
//! fault-injection hook makes the operation return at a named step and leave everything as a
//! crash would: lock held, slot claimed), while it also holds an allocation; then it is killed
//! with SIGKILL and the survivors carry on, and the pool returns to its baseline.

#[path = "support/mod.rs"]
mod support;

use core::time::Duration;
use std::time::Instant;

use dragon_channels::dragon_channels_core::fault::Step;
use dragon_channels::{AllocKind, Channel, ChannelAttrs, Error, MemoryPool, Message, Timeout};
use support::{
    Children, ShmGuard, attach_env, die_at, hex, role, spawn_role, unique_name, wait_child,
    watchdog,
};

const DESC: &str = "DC_TEST_DESC";
const CTRL: &str = "DC_TEST_CTRL";
const STEP: &str = "DC_TEST_STEP";

fn step_named(name: &str) -> Step {
    match name {
        "PoolAllocSplit" => Step::PoolAllocSplit,
        "PoolAllocRecorded" => Step::PoolAllocRecorded,
        "PoolFreeCommitted" => Step::PoolFreeCommitted,
        "SendClaimed" => Step::SendClaimed,
        "SendAdvanced" => Step::SendAdvanced,
        "SendWritten" => Step::SendWritten,
        "SendPublished" => Step::SendPublished,
        "RecvClaimed" => Step::RecvClaimed,
        "RecvAdvanced" => Step::RecvAdvanced,
        "RecvTaken" => Step::RecvTaken,
        _ => panic!("unknown step {name}"),
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Tells the parent this process's party id, over the control channel (an inline send, which
/// needs no pool lock).
fn send_ready(ctrl: &Channel) {
    let mut s = ctrl.sendh().unwrap();
    s.open().unwrap();
    let id = ctrl.pool().party_id().to_le_bytes();
    s.send_bytes(&id, 4, None, Timeout::Block).unwrap();
}

fn recv_ready(ctrl: &Channel) -> u32 {
    let mut r = ctrl.recvh().unwrap();
    r.open().unwrap();
    let b = r
        .recv_bytes(Timeout::After(Duration::from_secs(60)))
        .expect("victim reports ready");
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

/// The victim: holds a 1000-byte allocation, then stops at `step` in a pool operation, a
/// send (of a side-allocated payload) or a receive; reports ready and waits to be killed.
fn victim(step: Step) -> ! {
    let ch = attach_env(DESC);
    let ctrl = attach_env(CTRL);
    let pool = ch.pool().clone();
    let mut held = Message::create_alloc(&pool, 1000).unwrap();
    held.bytes_memview().unwrap().fill(1);
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    // Kept until the kill, except by the free that dies (a drop inside the dying operation
    // would wait for the lock this process holds).
    let mut doomed = Some(Message::create_alloc(&pool, 64).unwrap());
    let mut made = None;
    let name = format!("{step:?}");
    let died = if name.starts_with("Pool") {
        die_at(step, || match step {
            Step::PoolFreeCommitted => {
                // Freeing stops with the block marked free and the lock held.
                doomed.take().unwrap().destroy(true).map(|_| ())
            }
            _ => Message::create_alloc(&pool, 100).map(|m| made = Some(m)),
        })
    } else if name.starts_with("Send") {
        die_at(step, || s.send_bytes(&[7u8; 300], 300, None, Timeout::Try))
    } else {
        die_at(step, || r.recv(Timeout::Try).map(|_| ()))
    };
    assert!(died.is_err(), "the operation stops at {step:?}: {died:?}");
    assert!(made.is_none());
    send_ready(&ctrl);
    sleep_forever();
}

/// For every step: a victim process stops there holding an allocation and is killed; this
/// process (the survivor) carries on through the public API, and recovery brings the pool
/// back to its baseline.
#[test]
fn killed_at_every_step_survivors_carry_on() {
    const TEST: &str = "killed_at_every_step_survivors_carry_on";
    if let Some(r) = role() {
        if r == "victim" {
            let _watchdog = watchdog(120, "dead_peer victim");
            victim(step_named(&std::env::var(STEP).unwrap()));
        }
        return;
    }
    let _watchdog = watchdog(600, TEST);
    let name = unique_name("steps");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(1 << 20, &name, 9).unwrap();
    let attrs = Some(ChannelAttrs {
        capacity: 4,
        block_size: 64,
    });
    let ctrl = Channel::create(&pool, 1000, attrs).unwrap();
    let baseline = pool.stats().unwrap();
    let steps = [
        "PoolAllocSplit",
        "PoolAllocRecorded",
        "PoolFreeCommitted",
        "SendClaimed",
        "SendAdvanced",
        "SendWritten",
        "SendPublished",
        "RecvClaimed",
        "RecvAdvanced",
        "RecvTaken",
    ];
    for (i, step) in steps.into_iter().enumerate() {
        let ch = Channel::create(&pool, i as u64, attrs).unwrap();
        let mut s = ch.sendh().unwrap();
        s.open().unwrap();
        let mut r = ch.recvh().unwrap();
        r.open().unwrap();
        if step.starts_with("Recv") {
            // A side-allocated message for the victim to die receiving.
            s.send_bytes(&[5u8; 500], 500, None, Timeout::Try).unwrap();
        }
        let mut kid = Children(vec![spawn_role(
            TEST,
            "victim",
            &[
                (DESC, hex(&ch.serialize())),
                (CTRL, hex(&ctrl.serialize())),
                (STEP, step.to_owned()),
            ],
        )]);
        let victim_id = recv_ready(&ctrl);
        kid.0[0].kill().unwrap();
        kid.0[0].wait().unwrap();
        assert!(!pool.is_alive(victim_id), "{step}");

        // Survivor: send a marker and drain up to it. Operations that meet the dead party's
        // lock or slot stall, find it dead, recover and carry on.
        s.send_bytes(b"marker", 6, None, Timeout::After(Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{step}: send after the death: {e}"));
        let mut before = Vec::new();
        loop {
            let b = r
                .recv_bytes(Timeout::After(Duration::from_secs(30)))
                .unwrap_or_else(|e| panic!("{step}: receive after the death: {e}"));
            if b == b"marker" {
                break;
            }
            before.push(b);
        }
        // What the dead party was doing decides what is delivered.
        let expect: Vec<Vec<u8>> = match step {
            "SendPublished" => vec![vec![7u8; 300]],
            "RecvClaimed" => vec![vec![5u8; 500]],
            _ => vec![],
        };
        assert_eq!(before, expect, "{step}: messages before the marker");
        // A step that no operation stalls on (a receive that had already moved `head`)
        // leaves its slot and memory until recovery is asked for.
        ch.recover().unwrap();
        // The channel works for a whole lap and more.
        for k in 0..6u8 {
            s.send_bytes(&[k], 1, None, Timeout::Try).unwrap();
            assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [k], "{step}");
        }
        assert!(matches!(r.recv(Timeout::Try), Err(Error::ChannelEmpty)));
        drop((s, r));
        ch.destroy().unwrap();
        let now = pool.stats().unwrap();
        assert_eq!(
            (now.free, now.live),
            (baseline.free, baseline.live),
            "{step}"
        );
        assert!(!pool.live_parties().contains(&victim_id));
    }
    ctrl.destroy().unwrap();
    pool.destroy().unwrap();
}

/// The main scenario across three processes: the victim holds an allocation and has claimed
/// the tail slot and advanced `tail` (then stopped, as if it died there); a survivor process
/// blocked behind that slot waits while the victim lives, and carries on once it is killed.
#[test]
fn killed_sender_holding_a_claimed_slot_and_an_allocation() {
    const TEST: &str = "killed_sender_holding_a_claimed_slot_and_an_allocation";
    if let Some(r) = role() {
        let _watchdog = watchdog(120, "dead_peer child");
        match r.as_str() {
            "victim" => victim(Step::SendAdvanced),
            "survivor" => {
                let ch = attach_env(DESC);
                let mut r = ch.recvh().unwrap();
                r.open().unwrap();
                assert_eq!(r.recv_bytes(Timeout::Block).unwrap(), b"after");
                let mut s = ch.sendh().unwrap();
                s.open().unwrap();
                s.send_bytes(b"survived", 8, None, Timeout::Block).unwrap();
                assert_eq!(r.recv_bytes(Timeout::Block).unwrap(), b"survived");
            }
            _ => {}
        }
        return;
    }
    let _watchdog = watchdog(300, TEST);
    let name = unique_name("deadsend");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(1 << 20, &name, 9).unwrap();
    let attrs = Some(ChannelAttrs {
        capacity: 4,
        block_size: 64,
    });
    let ch = Channel::create(&pool, 1, attrs).unwrap();
    let ctrl = Channel::create(&pool, 2, attrs).unwrap();
    let baseline = pool.stats().unwrap();
    let envs = [(DESC, hex(&ch.serialize())), (CTRL, hex(&ctrl.serialize()))];

    let mut victim = Children(vec![spawn_role(TEST, "victim", &envs)]);
    let victim_id = recv_ready(&ctrl);
    // The victim holds the slot at the head, its two allocations, and the side allocation of
    // the message it was sending (made and filled before the slot was claimed, still its
    // own: the channel takes it over only once the slot holds its descriptor).
    assert_eq!(ch.core_channel().claims().0, victim_id);
    let mut held: Vec<_> = pool
        .allocations()
        .unwrap()
        .into_iter()
        .filter(|a| a.owner == victim_id)
        .map(|a| (a.kind, a.size))
        .collect();
    held.sort_by_key(|h| h.1);
    assert_eq!(
        held,
        [
            (AllocKind::Data, 64),
            (AllocKind::ChannelBuffer, 512),
            (AllocKind::Data, 1024)
        ]
    );
    assert!(pool.is_alive(victim_id));

    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    s.send_bytes(b"after", 5, None, Timeout::Block).unwrap();
    let mut survivor = Children(vec![spawn_role(TEST, "survivor", &envs)]);

    // While the victim lives, the survivor waits behind its slot (no wrong recovery).
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(survivor.0[0].try_wait(), Ok(None)));
    assert_eq!(ch.core_channel().claims().0, victim_id);

    let killed = Instant::now();
    victim.0[0].kill().unwrap();
    victim.0[0].wait().unwrap();
    assert!(!pool.is_alive(victim_id));
    assert!(wait_child(&mut survivor.0[0], Duration::from_secs(120)).success());
    println!("survivor finished {:?} after the kill", killed.elapsed());

    // The survivor's recovery released the slot and freed the victim's allocations.
    assert!(!pool.live_parties().contains(&victim_id));
    assert_eq!(ch.num_msgs(), 0);
    let now = pool.stats().unwrap();
    assert_eq!((now.free, now.live), (baseline.free, baseline.live));
    // The channel keeps working.
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    s.send_bytes(b"again", 5, None, Timeout::Try).unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"again");
    drop((s, r));
    ch.destroy().unwrap();
    ctrl.destroy().unwrap();
    pool.destroy().unwrap();
}

/// A receiver that dies holding a received message: nothing stalls on it, so recovery is
/// asked for explicitly and frees the message.
#[test]
fn killed_receiver_holding_a_message() {
    const TEST: &str = "killed_receiver_holding_a_message";
    if let Some(r) = role() {
        if r == "victim" {
            let _watchdog = watchdog(120, "dead_peer child");
            let ch = attach_env(DESC);
            let mut rh = ch.recvh().unwrap();
            rh.open().unwrap();
            let _msg = rh.recv(Timeout::Block).unwrap();
            send_ready(&attach_env(CTRL));
            sleep_forever();
        }
        return;
    }
    let _watchdog = watchdog(120, TEST);
    let name = unique_name("deadrecv");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(1 << 20, &name, 9).unwrap();
    let ch = Channel::create(&pool, 1, None).unwrap();
    let ctrl = Channel::create(&pool, 2, None).unwrap();
    let baseline = pool.stats().unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut m = Message::create_alloc(&pool, 5000).unwrap();
    m.bytes_memview().unwrap().fill(3);
    s.send_transfer(m, Timeout::Block).unwrap();
    let mut victim = Children(vec![spawn_role(
        TEST,
        "victim",
        &[(DESC, hex(&ch.serialize())), (CTRL, hex(&ctrl.serialize()))],
    )]);
    let victim_id = recv_ready(&ctrl);
    assert!(
        pool.allocations()
            .unwrap()
            .iter()
            .any(|a| a.owner == victim_id && a.size == 8192)
    );
    victim.0[0].kill().unwrap();
    victim.0[0].wait().unwrap();
    let rep = pool.recover().unwrap();
    assert_eq!(rep.pool.freed, 1);
    assert_eq!(pool.stats().unwrap(), baseline);
    drop(s);
    ch.destroy().unwrap();
    ctrl.destroy().unwrap();
    pool.destroy().unwrap();
}
