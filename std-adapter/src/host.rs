//! Host ids: which node a pool lives on.
//!
//! Every serialized pool and channel descriptor names the host its pool lives on (see
//! [`crate::MemoryPool::serialize`]), so that a descriptor carried to another node is told
//! remote instead of being looked up in that node's `/dev/shm`. A host id is a nonzero
//! 64-bit number: the FNV-1a hash of the kernel's boot id (`/proc/sys/kernel/random/boot_id`,
//! new at every boot, the same for every process and container of one machine; Dragon uses it
//! the same way), else of the machine id (`/etc/machine-id`).
//!
//! [`HOST_ID_ENV`] overrides it: processes that stand for different nodes on one machine
//! (tests, or MPI ranks that each see a private `/dev/shm`) set it to a different number each.
//! It is read once per process.

use std::sync::OnceLock;

/// Environment variable that overrides this process's host id: a nonzero decimal or `0x`
/// hexadecimal `u64`.
pub const HOST_ID_ENV: &str = "DRAGON_CHANNELS_HOST_ID";

/// This process's host id (see the module docs); read once.
///
/// # Panics
/// Never; an override that is not a nonzero number is ignored with a message on stderr,
/// once (a process must not fail on its environment, and the id falls back to the
/// machine's).
pub fn host_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        if let Ok(v) = std::env::var(HOST_ID_ENV) {
            match parse_host_id(&v) {
                Some(id) => return id,
                None => eprintln!(
                    "dragon-channels: ignoring {HOST_ID_ENV}={v:?}: not a nonzero decimal or 0x-hex u64"
                ),
            }
        }
        machine_host_id()
    })
}

/// Parses an override: a nonzero decimal or `0x`-prefixed hexadecimal `u64`.
pub fn parse_host_id(s: &str) -> Option<u64> {
    let s = s.trim();
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => s.parse().ok()?,
    };
    (v != 0).then_some(v)
}

/// The machine's own host id: the boot id's hash, else the machine id's, else a constant
/// (a machine with neither file is treated as one host, which is what it is to itself).
fn machine_host_id() -> u64 {
    ["/proc/sys/kernel/random/boot_id", "/etc/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map_or(1, |s| fnv1a64(s.trim().as_bytes()).max(1))
}

/// 64-bit FNV-1a.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse() {
        assert_eq!(parse_host_id("7"), Some(7));
        assert_eq!(parse_host_id(" 0x1f "), Some(31));
        assert_eq!(parse_host_id("0"), None);
        assert_eq!(parse_host_id("0x0"), None);
        assert_eq!(parse_host_id("node1"), None);
        assert_eq!(parse_host_id(""), None);
    }

    #[test]
    fn fnv_vectors_and_nonzero_id() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xAF63_DC4C_8601_EC8C);
        assert_ne!(host_id(), 0);
        assert_eq!(host_id(), host_id());
    }
}
