//! Locality in descriptors: a serialized pool or channel names its host, a descriptor of
//! another host is refused with an error that names it (not "destroyed"), and descriptors of
//! layout version 1 (no host id) are refused with their own message.

mod support;

use core::time::Duration;

use dragon_channels::dragon_channels_core::checksum;
use dragon_channels::host::{HOST_ID_ENV, host_id};
use dragon_channels::{Channel, Error, MemoryPool, MemoryPoolError};
use support::{ShmGuard, hex, role, spawn_role, unhex, unique_name, wait_child};

const DESC: &str = "DC_LOCALITY_DESC";
const EXPECT_HOST: &str = "DC_LOCALITY_HOST";

/// The child: another "host" (its own host id) attaches the descriptor and must be told
/// remote, naming the descriptor's host and its own.
fn child_attach_remote() {
    let bytes = unhex(&std::env::var(DESC).unwrap());
    let owner: u64 = std::env::var(EXPECT_HOST).unwrap().parse().unwrap();
    assert_ne!(host_id(), owner, "the child must stand for another host");
    match Channel::attach(&bytes) {
        Err(Error::MemoryPool(MemoryPoolError::RemoteHost { host, here, .. })) => {
            assert_eq!((host, here), (owner, host_id()));
        }
        other => panic!("a remote descriptor attached or failed wrongly: {other:?}"),
    }
    let e = Channel::attach(&bytes).unwrap_err().to_string();
    assert!(e.contains("another host") && e.contains("gateway"), "{e}");
    assert!(!e.contains("destroyed"), "{e}");
}

#[test]
fn descriptor_of_another_host_is_refused_naming_it() {
    if role().as_deref() == Some("remote") {
        return child_attach_remote();
    }
    let name = unique_name("loc");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(1 << 20, &name, 0).unwrap();
    let ch = Channel::create(&pool, 1, None).unwrap();
    // This process attaches its own descriptor (same host).
    Channel::attach(&ch.serialize()).unwrap();
    MemoryPool::attach_serialized(&pool.serialize()).unwrap();
    let other = host_id().wrapping_add(1).max(1);
    let mut c = spawn_role(
        "descriptor_of_another_host_is_refused_naming_it",
        "remote",
        &[
            (DESC, hex(&ch.serialize())),
            (EXPECT_HOST, host_id().to_string()),
            (HOST_ID_ENV, other.to_string()),
        ],
    );
    assert!(wait_child(&mut c, Duration::from_secs(30)).success());
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

#[test]
fn layout_version_1_is_refused_with_its_own_message() {
    let name = unique_name("locv1");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(1 << 20, &name, 0).unwrap();
    let ch = Channel::create(&pool, 1, None).unwrap();
    // Rewrite the version field (bytes 4..8) to 1 and re-seal, as an old writer would have.
    let reseal = |mut b: Vec<u8>| {
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        let n = b.len() - 4;
        let sum = checksum(&b[..n]);
        b[n..].copy_from_slice(&sum.to_le_bytes());
        b
    };
    let e = Channel::attach(&reseal(ch.serialize()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("layout 1") && e.contains("names no host"), "{e}");
    let e = MemoryPool::attach_serialized(&reseal(pool.serialize()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("layout 1") && e.contains("names no host"), "{e}");
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}
