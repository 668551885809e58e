//! Stale files in `/dev/shm`: each kind of file that is not a usable pool gives its own error
//! from `attach` and `create`, saying what it is and the command that removes it, at once
//! rather than after a wait (except for a creator that is still running):
//! - half-created: the creator died (or still runs) before publishing the pool; the creation
//!   stamp is written by hand by a child process, as a creator killed right after creating
//!   the file leaves it, and one of an earlier version without a recorded creator;
//! - not a pool: zero-filled, foreign bytes, too short;
//! - abandoned: a pool whose creator was SIGKILLed, with a message still queued.
//!
//! Every file is removed by a guard; children are killed by a guard; a watchdog ends a hung
//! test.

#[path = "support/mod.rs"]
mod support;

use core::time::Duration;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use dragon_channels::{Channel, ChannelAttrs, MemoryPool, MemoryPoolError, PoolState, Timeout};
use support::{Children, ShmGuard, role, spawn_role, unique_name, wait_child, watchdog};

/// The pool name a child works on.
const NAME: &str = "DC_TEST_POOL";
/// What the child does after writing its stamp: "exit" or "sleep".
const THEN: &str = "DC_TEST_THEN";

fn path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/{name}"))
}

/// Start time of `pid` (`/proc/<pid>/stat` field 22).
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// The creation stamp a creator writes first (the documented header layout of version 1:
/// magic "DRSM", version, state 0, creator pid at 52 and start time at 56), in one write,
/// into a new file of mode 0600.
fn write_stamp(name: &str, pid: u32, start: u64) {
    let mut b = [0u8; 64];
    b[0..4].copy_from_slice(b"DRSM");
    b[4..8].copy_from_slice(&1u32.to_ne_bytes());
    b[52..56].copy_from_slice(&pid.to_ne_bytes());
    b[56..60].copy_from_slice(&(start as u32).to_ne_bytes());
    b[60..64].copy_from_slice(&((start >> 32) as u32).to_ne_bytes());
    let f = new_file(name);
    f.write_all_at(&b, 0).unwrap();
}

fn new_file(name: &str) -> File {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path(name))
        .unwrap()
}

/// Makes the file look last written `ago` in the past.
fn age_file(name: &str, ago: Duration) {
    let f = OpenOptions::new().write(true).open(path(name)).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

/// The child: stamps the file as a creator would, then exits or sleeps until killed.
fn creator_child() {
    let _watchdog = watchdog(60, "stale_pools creator child");
    let name = std::env::var(NAME).unwrap();
    let me = std::process::id();
    write_stamp(&name, me, start_time(me));
    if std::env::var(THEN).unwrap() == "sleep" {
        std::thread::sleep(Duration::from_secs(50));
    }
}

/// Asserts that `e` is `HalfCreated` naming `pid` (alive or not) and says what to do.
fn assert_half_created(e: MemoryPoolError, name: &str, pid: Option<u32>, alive: bool) {
    let text = e.to_string();
    match e {
        MemoryPoolError::HalfCreated {
            creator,
            creator_alive,
            ..
        } => {
            assert_eq!(creator, pid, "{text}");
            assert_eq!(creator_alive, alive, "{text}");
        }
        other => panic!("expected HalfCreated, got {other:?}"),
    }
    assert!(text.contains("abandoned while being created"), "{text}");
    if let Some(pid) = pid {
        assert!(text.contains(&format!("process {pid}")), "{text}");
    }
    assert!(
        text.contains(&format!("dragon-channels rm {name}")),
        "{text}"
    );
    assert!(text.contains(&format!("rm /dev/shm/{name}")), "{text}");
}

#[test]
fn half_created_by_a_dead_creator() {
    const TEST: &str = "half_created_by_a_dead_creator";
    if role().is_some() {
        return creator_child();
    }
    let _watchdog = watchdog(60, TEST);
    let name = unique_name("half");
    let _g = ShmGuard::new(&name);
    let mut kid = Children(vec![spawn_role(
        TEST,
        "creator",
        &[(NAME, name.clone()), (THEN, "exit".to_owned())],
    )]);
    let pid = kid.0[0].id();
    assert!(wait_child(&mut kid.0[0], Duration::from_secs(30)).success());

    // The creator is gone: attach and create say so at once.
    let t0 = Instant::now();
    let e = MemoryPool::attach(&name).unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "no wait for a dead creator"
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "its creator, process {pid}, died before finishing it"
        )),
        "{text}"
    );
    assert_half_created(e, &name, Some(pid), false);
    let e = MemoryPool::create(1 << 20, &name, 0).unwrap_err();
    assert_half_created(e, &name, Some(pid), false);

    let f = MemoryPool::probe(&name).unwrap();
    assert_eq!(f.state, PoolState::HalfCreated);
    assert!(f.ours && f.state.is_stale());
    let c = f.creator.expect("the creator is recorded");
    assert_eq!((c.pid, c.alive), (pid, false));

    // Removed as the message says, the name is free again.
    std::fs::remove_file(path(&name)).unwrap();
    MemoryPool::create(1 << 20, &name, 0)
        .unwrap()
        .destroy()
        .unwrap();
}

#[test]
fn half_created_by_a_live_creator_then_killed() {
    const TEST: &str = "half_created_by_a_live_creator_then_killed";
    if role().is_some() {
        return creator_child();
    }
    let _watchdog = watchdog(60, TEST);
    let name = unique_name("halflive");
    let _g = ShmGuard::new(&name);
    let mut kid = Children(vec![spawn_role(
        TEST,
        "creator",
        &[(NAME, name.clone()), (THEN, "sleep".to_owned())],
    )]);
    let pid = kid.0[0].id();
    let t0 = Instant::now();
    while MemoryPool::probe(&name).map(|f| f.state).ok() != Some(PoolState::Creating) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the child stamps");
        std::thread::sleep(Duration::from_millis(5));
    }
    let f = MemoryPool::probe(&name).unwrap();
    assert_eq!(f.creator.map(|c| (c.pid, c.alive)), Some((pid, true)));
    assert!(!f.state.is_stale());

    // A running creator is waited for (2 s), then: still being created, by whom.
    let t0 = Instant::now();
    match MemoryPool::attach(&name) {
        Err(e @ MemoryPoolError::NotReady { creator, .. }) => {
            assert_eq!(creator, Some(pid));
            assert!(
                e.to_string()
                    .contains(&format!("still being created by process {pid}")),
                "{e}"
            );
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "waited for the creator"
    );
    // Taking the name is refused as for any existing pool.
    assert!(matches!(
        MemoryPool::create(1 << 20, &name, 0),
        Err(MemoryPoolError::AlreadyExists(_))
    ));

    // Killed mid-creation: abandoned at once.
    kid.0[0].kill().unwrap();
    kid.0[0].wait().unwrap();
    assert_half_created(
        MemoryPool::attach(&name).unwrap_err(),
        &name,
        Some(pid),
        false,
    );
}

#[test]
fn half_created_without_a_recorded_creator() {
    let _watchdog = watchdog(60, "half_created_without_a_recorded_creator");
    // A stamp without a creator (as a file of an earlier version): judged by age.
    let name = unique_name("halfold");
    let _g = ShmGuard::new(&name);
    write_stamp(&name, 0, 0);
    assert_eq!(MemoryPool::probe(&name).unwrap().state, PoolState::Creating);
    age_file(
        &name,
        dragon_channels::CREATE_LIMIT + Duration::from_secs(5),
    );
    let f = MemoryPool::probe(&name).unwrap();
    assert_eq!((f.state, f.creator), (PoolState::HalfCreated, None));
    let e = MemoryPool::attach(&name).unwrap_err();
    assert!(e.to_string().contains("records no creator"), "{e}");
    assert_half_created(e, &name, None, false);

    // An empty file: a creator killed between creating the file and stamping it.
    let empty = unique_name("halfempty");
    let _ge = ShmGuard::new(&empty);
    drop(new_file(&empty));
    age_file(
        &empty,
        dragon_channels::EMPTY_LIMIT + Duration::from_secs(1),
    );
    assert_eq!(
        MemoryPool::probe(&empty).unwrap().state,
        PoolState::HalfCreated
    );
    assert_half_created(
        MemoryPool::create(1 << 20, &empty, 0).unwrap_err(),
        &empty,
        None,
        false,
    );
    // A fresh empty file is waited for (its creator may be about to stamp it), then given up.
    std::fs::remove_file(path(&empty)).unwrap();
    drop(new_file(&empty));
    let t0 = Instant::now();
    assert_half_created(MemoryPool::attach(&empty).unwrap_err(), &empty, None, false);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "a fresh empty file is waited for"
    );
}

/// Asserts that attach and create of `name` both say "not a pool" with `why`, at once.
fn assert_not_a_pool(name: &str, why: &str) {
    let t0 = Instant::now();
    for (what, r) in [
        ("attach", MemoryPool::attach(name).map(|_| ())),
        ("create", MemoryPool::create(1 << 20, name, 0).map(|_| ())),
    ] {
        match r {
            Err(e @ MemoryPoolError::NotAPool { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("is not a dragon-channels pool"),
                    "{what}: {text}"
                );
                assert!(text.contains(why), "{what}: {text}");
                assert!(
                    text.contains(&format!("rm /dev/shm/{name}")),
                    "{what}: {text}"
                );
                assert!(
                    text.contains(&format!("dragon-channels rm {name}")),
                    "{what}: {text}"
                );
            }
            other => panic!("{what}: expected NotAPool, got {other:?}"),
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "no wait for a file that is not a pool"
    );
    let f = MemoryPool::probe(name).unwrap();
    assert_eq!(f.state, PoolState::NotAPool);
    assert!(!f.ours && !f.state.is_stale());
    assert!(f.why.contains(why), "{}", f.why);
    assert!(
        f.problem().unwrap().to_string().contains(why),
        "probe's problem says the same"
    );
    // The file is untouched.
    assert!(path(name).exists());
}

#[test]
fn zero_filled_file_is_not_a_pool() {
    let _watchdog = watchdog(60, "zero_filled_file_is_not_a_pool");
    let name = unique_name("zeros");
    let _g = ShmGuard::new(&name);
    new_file(&name).set_len(1 << 20).unwrap();
    assert_not_a_pool(&name, "zero-filled");
    assert_eq!(std::fs::metadata(path(&name)).unwrap().len(), 1 << 20);
}

#[test]
fn foreign_bytes_are_not_a_pool() {
    let _watchdog = watchdog(60, "foreign_bytes_are_not_a_pool");
    let name = unique_name("foreign");
    let _g = ShmGuard::new(&name);
    let text = b"some other program's shared memory, which happens to have this name.";
    new_file(&name).write_all_at(&text.repeat(100), 0).unwrap();
    assert_not_a_pool(&name, "bad magic");
}

#[test]
fn too_short_file_is_not_a_pool() {
    let _watchdog = watchdog(60, "too_short_file_is_not_a_pool");
    let name = unique_name("short");
    let _g = ShmGuard::new(&name);
    // Even the right magic: a creator writes its whole stamp in one go.
    new_file(&name).write_all_at(b"DRSM\x01", 0).unwrap();
    assert_not_a_pool(&name, "too short");
}

/// The child of the abandoned-pool test: creates the pool and a channel, queues a message,
/// says so with a marker file, and waits to be killed.
fn pool_owner_child() {
    let _watchdog = watchdog(60, "stale_pools owner child");
    let name = std::env::var(NAME).unwrap();
    let pool = MemoryPool::create(1 << 20, &name, 3).unwrap();
    let ch = Channel::create(
        &pool,
        11,
        Some(ChannelAttrs {
            capacity: 4,
            block_size: 64,
        }),
    )
    .unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    s.send_bytes(b"left behind", 11, None, Timeout::Try)
        .unwrap();
    drop(new_file(&format!("{name}-ready")));
    std::thread::sleep(Duration::from_secs(50));
}

#[test]
fn abandoned_pool() {
    const TEST: &str = "abandoned_pool";
    if role().is_some() {
        return pool_owner_child();
    }
    let _watchdog = watchdog(60, TEST);
    let name = unique_name("abandoned");
    let _g = ShmGuard::new(&name);
    let ready = format!("{name}-ready");
    let _gr = ShmGuard::new(&ready);
    let mut kid = Children(vec![spawn_role(TEST, "owner", &[(NAME, name.clone())])]);
    let pid = kid.0[0].id();
    let t0 = Instant::now();
    while !path(&ready).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the child made its pool"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let f = MemoryPool::probe(&name).unwrap();
    assert_eq!(f.state, PoolState::Ok);
    assert_eq!((f.live_parties(), f.dead_parties()), (1, 0));
    assert_eq!(f.parties[0].pid, pid);
    assert_eq!(f.pool_uid, Some(3));
    // Creating over a pool in use: the usual answer.
    assert!(matches!(
        MemoryPool::create(1 << 20, &name, 0),
        Err(MemoryPoolError::AlreadyExists(_))
    ));

    kid.0[0].kill().unwrap();
    kid.0[0].wait().unwrap();
    let f = MemoryPool::probe(&name).unwrap();
    assert_eq!(f.state, PoolState::Abandoned);
    assert_eq!((f.live_parties(), f.dead_parties()), (0, 1));
    assert!(f.state.is_stale());
    match MemoryPool::create(1 << 20, &name, 0) {
        Err(e @ MemoryPoolError::Abandoned { dead: 1, .. }) => {
            let text = e.to_string();
            assert!(text.contains("abandoned"), "{text}");
            assert!(text.contains("no process that used it is alive"), "{text}");
            assert!(text.contains("attach to it to take it over"), "{text}");
            assert!(
                text.contains(&format!("dragon-channels rm {name}")),
                "{text}"
            );
            assert!(text.contains(&format!("rm /dev/shm/{name}")), "{text}");
        }
        other => panic!("expected Abandoned, got {other:?}"),
    }

    // Looking inside as an observer leaves it abandoned, and the observer leaves no entry.
    {
        let seen = MemoryPool::observe(&name).unwrap();
        assert!(seen.is_observer());
        assert!(seen.live_parties().is_empty());
        let parties = seen.parties();
        assert_eq!(parties.iter().filter(|p| p.observer && p.alive).count(), 1);
        assert_eq!(
            MemoryPool::probe(&name).unwrap().state,
            PoolState::Abandoned
        );
        let chans = seen.channels().unwrap();
        assert_eq!(chans.len(), 1);
        let info = chans[0].info();
        assert_eq!((info.cuid, info.capacity, info.queued), (11, 4, 1));
        // Only the channel, which owns itself.
        assert_eq!(seen.allocations().unwrap().len(), 1);
    }
    let f = MemoryPool::probe(&name).unwrap();
    assert!(
        f.parties.iter().all(|p| !p.observer),
        "observer entry freed"
    );

    // Attaching takes it over, with what was queued.
    let pool = MemoryPool::attach(&name).unwrap();
    assert!(!pool.is_observer());
    assert_eq!(MemoryPool::probe(&name).unwrap().state, PoolState::Ok);
    let ch = pool.channels().unwrap().remove(0);
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"left behind");
    drop(r);
    drop(ch);
    pool.destroy().unwrap();
}
