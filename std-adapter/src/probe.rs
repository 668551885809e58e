//! What a file in `/dev/shm` is, told from its header alone: a published pool, one being
//! created, one abandoned while being created, a destroyed pool whose file was left behind,
//! or not a pool at all. Reads the file (`pread`), never maps it, never registers a party and
//! never writes, so looking cannot change what is seen.
//!
//! # How a half-created file is recognised
//! A creator writes the creation stamp (magic, version, state 0, its pid and start time; see
//! `shm`) in the same breath as it creates the file, and publishes `state = READY` last. So a
//! file with the magic and state 0 is being created by the process the stamp names:
//! - that process is gone, or its pid now belongs to a process with another start time: the
//!   file was **abandoned while being created** (nothing else will ever finish it);
//! - it still runs: the file is being created, unless it has stayed so for longer than
//!   [`CREATE_LIMIT`] (a creator that hangs), which also counts as abandoned;
//! - no creator recorded (a file of an earlier version): judged by age alone, against
//!   [`CREATE_LIMIT`].
//!
//! An empty file is a creator that died between `open` and its stamp (or another program's
//! file that was never written): being created while younger than [`EMPTY_LIMIT`], abandoned
//! while being created after that. A file shorter than the stamp, one that starts with zeros
//! or with foreign bytes, or one whose header does not hold together is **not a pool**.
//!
//! Whether a published pool is abandoned (every party dead) needs its party table, which
//! [`probe`] copies out with the header when asked to.

use core::time::Duration;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use crate::error::MemoryPoolError;
use crate::party::{self, ProcState};
use crate::shm::{
    self, FILE_MAGIC, FILE_VERSION, HEADER_LEN, O_CREATOR_PID, O_CREATOR_START, O_MAGIC, O_NAME,
    O_NAME_LEN, O_NONCE, O_REGION_LEN, O_REGION_OFF, O_STATE, O_UID, O_VERSION, STAMP_LEN,
    STATE_DESTROYED, STATE_READY,
};

/// How long a pool may stay half-created while its creator still runs before it counts as
/// abandoned while being created (a creator that hangs). Creating even a pool of many GiB
/// takes a fraction of this.
pub const CREATE_LIMIT: Duration = Duration::from_secs(60);

/// How long an empty file counts as a pool being created (its creator between `open` and the
/// creation stamp, microseconds apart) before it counts as abandoned while being created.
pub const EMPTY_LIMIT: Duration = Duration::from_secs(2);

/// What the header says the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A published pool with this creation nonce.
    Ready {
        /// The creation nonce.
        nonce: u64,
    },
    /// A pool marked destroyed whose file is still there.
    Destroyed,
    /// Being created by a live (or unknown, and recent) creator.
    Creating {
        /// The creator's pid, if the stamp names one.
        creator: Option<u32>,
    },
    /// Abandoned while being created.
    HalfCreated {
        /// The creator's pid, if the stamp names one.
        creator: Option<u32>,
        /// Whether that process still runs (then it has hung past [`CREATE_LIMIT`]).
        creator_alive: bool,
    },
    /// Not a pool of this library.
    NotAPool {
        /// What did not match.
        why: &'static str,
    },
}

/// A file looked at.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub(crate) kind: Kind,
    /// The file starts with this library's magic.
    pub(crate) ours: bool,
    /// File length.
    pub(crate) len: u64,
    /// Bytes of storage the file occupies (`st_blocks * 512`).
    pub(crate) reserved: u64,
    /// Time since the file was last modified (zero when the clock went backwards).
    pub(crate) age: Duration,
    /// Owner (user id) and permission bits of the file.
    pub(crate) file_uid: u32,
    pub(crate) mode: u32,
    /// The header bytes read (up to [`HEADER_LEN`]).
    pub(crate) head: Vec<u8>,
}

impl Probe {
    /// The native-endian `u32` of the header at `off` (0 past what was read).
    pub(crate) fn word(&self, off: usize) -> u32 {
        self.head
            .get(off..off + 4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `u64` stored as two `u32` halves, low first.
    pub(crate) fn word64(&self, off: usize) -> u64 {
        u64::from(self.word(off)) | u64::from(self.word(off + 4)) << 32
    }

    /// The creator's pid from the stamp (`None` when none was recorded).
    pub(crate) fn creator(&self) -> Option<u32> {
        Some(self.word(O_CREATOR_PID)).filter(|&p| p != 0)
    }

    /// The error that attaching to (or creating over) this file gives, if its kind is one.
    pub(crate) fn error(&self, name: &str) -> Option<MemoryPoolError> {
        let name = name.to_owned();
        Some(match self.kind {
            Kind::Ready { .. } => return None,
            Kind::Destroyed => MemoryPoolError::Destroyed(name),
            Kind::Creating { creator } => MemoryPoolError::NotReady { name, creator },
            Kind::HalfCreated {
                creator,
                creator_alive,
            } => MemoryPoolError::HalfCreated {
                name,
                creator,
                creator_alive,
                age: self.age,
            },
            Kind::NotAPool { why } => MemoryPoolError::NotAPool { name, why },
        })
    }
}

/// Looks at `file` (the file `/dev/shm/<name>`, open for reading).
///
/// # Errors
/// [`MemoryPoolError::Io`] when the file cannot be read or stat'ed.
pub(crate) fn probe(file: &File, name: &str) -> Result<Probe, MemoryPoolError> {
    let mut head = vec![0u8; HEADER_LEN];
    let got = shm::read_head(file, name, &mut head)?;
    head.truncate(got);
    let meta = file.metadata().map_err(|e| MemoryPoolError::Io {
        op: "stat",
        name: name.to_owned(),
        source: e,
    })?;
    let age = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .unwrap_or(Duration::ZERO);
    let mut p = Probe {
        kind: Kind::NotAPool { why: "" },
        ours: false,
        len: meta.len(),
        reserved: meta.blocks().saturating_mul(512),
        age,
        file_uid: meta.uid(),
        mode: meta.mode() & 0o7777,
        head,
    };
    p.ours = got >= STAMP_LEN && p.word(O_MAGIC) == FILE_MAGIC;
    p.kind = classify(&p, got);
    Ok(p)
}

/// The kind of a file whose first `got` bytes are `p.head`.
fn classify(p: &Probe, got: usize) -> Kind {
    let not_a_pool = |why| Kind::NotAPool { why };
    if got == 0 {
        return if p.age < EMPTY_LIMIT {
            Kind::Creating { creator: None }
        } else {
            Kind::HalfCreated {
                creator: None,
                creator_alive: false,
            }
        };
    }
    if got < STAMP_LEN {
        return not_a_pool("the file is too short to hold a pool header");
    }
    if p.word(O_MAGIC) != FILE_MAGIC {
        return if p.head[..STAMP_LEN].iter().all(|&b| b == 0) {
            not_a_pool("it is zero-filled: no pool header")
        } else {
            not_a_pool("it holds other bytes than a pool header (bad magic)")
        };
    }
    if p.word(O_VERSION) != FILE_VERSION {
        return not_a_pool("unsupported layout version (made by another version of the library)");
    }
    match p.word(O_STATE) {
        STATE_READY => {
            let region_len = p.word64(O_REGION_LEN);
            if got < HEADER_LEN
                || p.word64(O_REGION_OFF) != HEADER_LEN as u64
                || region_len.checked_add(HEADER_LEN as u64) != Some(p.len)
            {
                return not_a_pool("file size does not match its header");
            }
            let n = p.word(O_NAME_LEN) as usize;
            let name_ok = (1..=shm::MAX_NAME_LEN).contains(&n)
                && core::str::from_utf8(&p.head[O_NAME..O_NAME + n])
                    .is_ok_and(|s| shm::validate_name(s).is_ok());
            if !name_ok {
                return not_a_pool("bad name field in its header");
            }
            Kind::Ready {
                nonce: p.word64(O_NONCE),
            }
        }
        STATE_DESTROYED => Kind::Destroyed,
        0 => creating(p),
        _ => not_a_pool("bad state word in its header"),
    }
}

/// A stamped file whose creator has not published it: being created, or abandoned.
fn creating(p: &Probe) -> Kind {
    let creator = p.creator();
    let late = p.age >= CREATE_LIMIT;
    let Some(pid) = creator else {
        return if late {
            Kind::HalfCreated {
                creator: None,
                creator_alive: false,
            }
        } else {
            Kind::Creating { creator: None }
        };
    };
    let start = p.word64(O_CREATOR_START);
    let alive = match party::proc_state(pid) {
        ProcState::Live(s) => start == 0 || s == start,
        ProcState::Dead => false,
        ProcState::Unknown => true,
    };
    if alive && !late {
        Kind::Creating { creator }
    } else {
        Kind::HalfCreated {
            creator,
            creator_alive: alive,
        }
    }
}

/// The pool uid of a published pool's header.
pub(crate) fn pool_uid(p: &Probe) -> Option<u64> {
    matches!(p.kind, Kind::Ready { .. } | Kind::Destroyed).then(|| p.word64(O_UID))
}

/// The party table of a published pool, with liveness checked now.
pub(crate) fn parties(p: &Probe) -> Vec<crate::inspect::PartyInfo> {
    match p.kind {
        Kind::Ready { .. } | Kind::Destroyed => {
            party::census(p.head.get(shm::O_PARTIES..).unwrap_or(&[]))
        }
        _ => Vec::new(),
    }
}

/// Whether a published pool has no live party (observers do not count).
pub(crate) fn abandoned(parties: &[crate::inspect::PartyInfo]) -> bool {
    !parties.iter().any(|q| q.alive && !q.observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_of(head: Vec<u8>, len: u64, age: Duration) -> Kind {
        let got = head.len();
        let p = Probe {
            kind: Kind::NotAPool { why: "" },
            ours: false,
            len,
            reserved: 0,
            age,
            file_uid: 0,
            mode: 0o600,
            head,
        };
        classify(&p, got)
    }

    fn stamp(pid: u32, start: u64) -> Vec<u8> {
        let mut b = vec![0u8; STAMP_LEN];
        let mut put = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        put(O_MAGIC, FILE_MAGIC);
        put(O_VERSION, FILE_VERSION);
        put(O_CREATOR_PID, pid);
        put(O_CREATOR_START, start as u32);
        put(O_CREATOR_START + 4, (start >> 32) as u32);
        b
    }

    #[test]
    fn kinds_of_files() {
        let young = Duration::from_millis(1);
        let old = CREATE_LIMIT + Duration::from_secs(1);
        assert_eq!(probe_of(vec![], 0, young), Kind::Creating { creator: None });
        assert!(matches!(
            probe_of(vec![], 0, EMPTY_LIMIT),
            Kind::HalfCreated { creator: None, .. }
        ));
        assert!(matches!(
            probe_of(vec![1; 10], 10, young),
            Kind::NotAPool { why } if why.contains("too short")
        ));
        assert!(matches!(
            probe_of(vec![0; 4096], 4096, young),
            Kind::NotAPool { why } if why.contains("zero-filled")
        ));
        assert!(matches!(
            probe_of(vec![7; 4096], 4096, young),
            Kind::NotAPool { why } if why.contains("bad magic")
        ));
        let (me, start) = party::me();
        assert_eq!(
            probe_of(stamp(me, start), 64, young),
            Kind::Creating { creator: Some(me) }
        );
        // A live creator that hangs past the limit.
        assert_eq!(
            probe_of(stamp(me, start), 64, old),
            Kind::HalfCreated {
                creator: Some(me),
                creator_alive: true
            }
        );
        // The same pid with another start time: a dead creator whose pid was reused.
        assert_eq!(
            probe_of(stamp(me, start + 1), 64, young),
            Kind::HalfCreated {
                creator: Some(me),
                creator_alive: false
            }
        );
        // No creator recorded: judged by age.
        assert_eq!(
            probe_of(stamp(0, 0), 64, young),
            Kind::Creating { creator: None }
        );
        let mut v2 = stamp(me, start);
        v2[O_VERSION..O_VERSION + 4].copy_from_slice(&99u32.to_ne_bytes());
        assert!(matches!(
            probe_of(v2, 64, young),
            Kind::NotAPool { why } if why.contains("version")
        ));
    }
}
