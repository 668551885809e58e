//! Party ids and liveness: who owns what in a pool, and whether that process still runs.
//!
//! # Party ids
//! The core records an owner id (`1..=2^30-1`) with every allocation, pool-lock hold and
//! claimed channel slot. The adapter gives each process one id per pool, derived from its pid:
//! ```text
//! owner id = pid | generation << 22        (pid < 2^22 = Linux's PID_MAX_LIMIT; 8-bit generation)
//! ```
//! # Party table (in the pool file's header, see `shm`)
//! One 16-byte entry per registered process: `[key][start time low][start time high][role]`,
//! all 32-bit atomics. `key` is 0 for a free entry, the owner id for a valid one, and the
//! owner id with bit 31 set while its writer fills in the start time. The start time is field
//! 22 of `/proc/<pid>/stat` (clock ticks since boot), which differs between two processes
//! that had the same pid. `role` is [`ROLE_PARTY`] for a process that uses the pool, or
//! [`ROLE_OBSERVER`] for an inspection tool (the `dragon-channels` command): an observer
//! takes the pool lock to read the metadata, so it needs an id whose liveness others can
//! check, but it holds nothing between calls, is not counted as a user of the pool (an
//! abandoned pool stays abandoned while it is inspected) and frees its entry when it
//! detaches. Readers of an older layout see the role word as the spare word it was.
//!
//! - **Register** (once per process and pool): an entry with this pid and this start time is
//!   ours already (the process attached before). An entry with this pid and another start
//!   time belongs to a dead predecessor that had the same pid: it is taken over with the next
//!   generation, so the predecessor's owner id no longer matches any entry and reads as dead.
//!   Otherwise a free entry is claimed with a generation taken from the start time. When the
//!   table is full, entries of dead processes are freed first.
//!   A process registered as an observer that registers as a party keeps its entry and
//!   becomes a party; one registered as a party that observes stays a party.
//! - **Liveness** of an owner id: alive iff an entry holds exactly that key, the pid exists,
//!   is not a zombie, and its start time equals the recorded one. A missing entry means dead:
//!   every live party registered before it could own anything, and only entries of dead
//!   processes are ever freed, except an observer's own, which it frees when it detaches
//!   (it holds nothing then).
//!
//! Entries are written seqlock style: the key goes to its busy form first, then the start
//! time, then the final key with Release; a reader loads the key (Acquire), the start time,
//! and the key again after an Acquire fence, and uses the start time only if the key did not
//! change. A process that dies while writing leaves a busy entry; it is freed once its pid no
//! longer exists.
//!
//! Limits: after a pid is reused 256 times the generation wraps; a process that dies holding
//! something and whose entry was freed for room (table full) and whose pid is then reused
//! may collide with a 1/256 chance. Either case only delays recovery until the new process
//! exits. A child made by `fork` shares its parent's id through inherited handles: it must
//! attach again (which maps the pool anew under its own id) or re-exec.

use std::sync::{Mutex, OnceLock};

use crate::error::MemoryPoolError;
use crate::inspect::PartyInfo;
use crate::shm::{Header, MAX_PARTIES, O_PARTIES, PARTY_ENTRY};
use crate::sync::{Ordering, fence};

/// Bits of the owner id that hold the pid.
pub(crate) const PID_BITS: u32 = 22;
const PID_MASK: u32 = (1 << PID_BITS) - 1;
const GEN_MASK: u32 = 0xFF;
const BUSY: u32 = 1 << 31;
/// Offsets inside an entry: the start time's halves and the role word.
const E_START: usize = 4;
const E_ROLE: usize = 12;

/// Role word of an entry: a process that uses the pool.
pub(crate) const ROLE_PARTY: u32 = 0;
/// Role word of an entry: an inspection tool (see the module docs).
pub(crate) const ROLE_OBSERVER: u32 = 1;

/// Serializes this process's changes to its own entries (registration, promotion from
/// observer to party, an observer's unregistration). Taken inside the pool registry's lock
/// when both are held, never the other way round.
static OWN_ENTRIES: Mutex<()> = Mutex::new(());

/// What `/proc/<pid>/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcState {
    /// Running (or sleeping, stopped ...) with this start time.
    Live(u64),
    /// Gone, or a zombie waiting to be reaped.
    Dead,
    /// `/proc` could not tell (permissions, odd format): treated as alive.
    Unknown,
}

/// Reads state and start time (field 22) of `pid` from `/proc/<pid>/stat`.
pub(crate) fn proc_state(pid: u32) -> ProcState {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ProcState::Dead,
        // ESRCH while the process exits.
        Err(e) if e.raw_os_error() == Some(3) => return ProcState::Dead,
        Err(_) => return ProcState::Unknown,
    };
    parse_stat(&text).map_or(ProcState::Unknown, |(state, start)| {
        if state == 'Z' || state == 'X' || state == 'x' {
            ProcState::Dead
        } else {
            ProcState::Live(start)
        }
    })
}

/// Parses `pid (comm) state ... starttime ...`: the command may hold spaces and parentheses,
/// so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is `state`; field 22 is `starttime`, 19 fields further.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// This process's pid and start time (read once).
pub(crate) fn me() -> (u32, u64) {
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    let pid = std::process::id();
    let cached = *ME.get_or_init(|| {
        let start = match proc_state(pid) {
            ProcState::Live(s) => s,
            _ => 0,
        };
        (pid, start)
    });
    if cached.0 == pid {
        cached
    } else {
        // A forked child: not cached.
        let start = match proc_state(pid) {
            ProcState::Live(s) => s,
            _ => 0,
        };
        (pid, start)
    }
}

/// Whether the process `pid` is the one that started at `recorded` (clock ticks since boot):
/// a process `/proc` cannot tell about counts as alive.
pub(crate) fn started_at(pid: u32, recorded: u64) -> bool {
    match proc_state(pid) {
        ProcState::Live(start) => start == recorded,
        ProcState::Dead => false,
        ProcState::Unknown => true,
    }
}

/// The entries of a party table copied out of a pool file (`table`: the bytes from the
/// table's start, native-endian words), with each process's liveness checked now. A
/// snapshot: entries being written at the time of the copy may read as dead.
pub(crate) fn census(table: &[u8]) -> Vec<PartyInfo> {
    let word = |off: usize| {
        table
            .get(off..off + 4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut out = Vec::new();
    for i in 0..MAX_PARTIES {
        let base = i * PARTY_ENTRY;
        let key = word(base);
        if key == 0 {
            continue;
        }
        let start = u64::from(word(base + E_START)) | u64::from(word(base + E_START + 4)) << 32;
        let pid = key & PID_MASK;
        let busy = key & BUSY != 0;
        let alive = if busy {
            proc_state(pid) != ProcState::Dead
        } else {
            started_at(pid, start)
        };
        out.push(PartyInfo {
            id: key & !BUSY,
            pid,
            start_time: start,
            alive,
            observer: word(base + E_ROLE) == ROLE_OBSERVER,
        });
    }
    out
}

/// The party table of one pool file.
pub(crate) struct Parties<'a> {
    hdr: Header<'a>,
}

impl<'a> Parties<'a> {
    pub(crate) fn new(hdr: Header<'a>) -> Self {
        Self { hdr }
    }

    fn key(&self, i: usize) -> &'a crate::sync::AtomicU32 {
        debug_assert!(i < MAX_PARTIES);
        self.hdr.atomic(O_PARTIES + i * PARTY_ENTRY)
    }

    fn role(&self, i: usize) -> &'a crate::sync::AtomicU32 {
        debug_assert!(i < MAX_PARTIES);
        self.hdr.atomic(O_PARTIES + i * PARTY_ENTRY + E_ROLE)
    }

    /// The start time recorded under key `k` in entry `i`, if the entry still holds `k`.
    fn start_of(&self, i: usize, k: u32) -> Option<u64> {
        let base = O_PARTIES + i * PARTY_ENTRY;
        let lo = self.hdr.atomic(base + E_START).load(Ordering::Relaxed);
        let hi = self.hdr.atomic(base + E_START + 4).load(Ordering::Relaxed);
        // SYNC: seqlock read fence (Acquire) <-> writer's fence (Release) after it set the
        // busy key: if we read its new start words, we also see the busy (changed) key below.
        fence(Ordering::Acquire);
        (self.key(i).load(Ordering::Relaxed) == k).then_some(u64::from(lo) | u64::from(hi) << 32)
    }

    /// Fills entry `i`, whose key this party just set to `BUSY | owner`, and publishes it.
    fn fill(&self, i: usize, owner: u32, start: u64, role: u32) {
        let base = O_PARTIES + i * PARTY_ENTRY;
        // SYNC: seqlock write fence (Release) <-> reader's Acquire fence in `start_of`.
        fence(Ordering::Release);
        self.hdr
            .atomic(base + E_START)
            .store(start as u32, Ordering::Relaxed);
        self.hdr
            .atomic(base + E_START + 4)
            .store((start >> 32) as u32, Ordering::Relaxed);
        self.role(i).store(role, Ordering::Relaxed);
        // SYNC: publish entry (Release) <-> readers' key load (Acquire) in `is_alive` and
        // `register`.
        self.key(i).store(owner, Ordering::Release);
    }

    /// Registers this process (`pid`, `start`) in `role` ([`ROLE_PARTY`] or
    /// [`ROLE_OBSERVER`]) and returns its owner id for this pool.
    pub(crate) fn register(&self, pid: u32, start: u64, role: u32) -> Result<u32, MemoryPoolError> {
        if pid == 0 || pid > PID_MASK {
            return Err(MemoryPoolError::TooManyParties);
        }
        let _own = OWN_ENTRIES.lock().unwrap_or_else(|p| p.into_inner());
        for _round in 0..8 {
            let mut free = None;
            let mut retry = false;
            for i in 0..MAX_PARTIES {
                // SYNC: Acquire <-> publish entry (Release) in `fill`.
                let k = self.key(i).load(Ordering::Acquire);
                if k == 0 {
                    free.get_or_insert(i);
                    continue;
                }
                if k & PID_MASK != pid {
                    continue;
                }
                let recorded = if k & BUSY == 0 {
                    self.start_of(i, k)
                } else {
                    None
                };
                if recorded == Some(start) {
                    if role == ROLE_PARTY {
                        // An observer of this process becomes a party (see the module docs).
                        self.role(i).store(ROLE_PARTY, Ordering::Relaxed);
                    }
                    return Ok(k);
                }
                // A dead predecessor with our pid (or one that died mid-registration):
                // take the entry over with the next generation.
                let generation = ((k >> PID_BITS) + 1) & GEN_MASK;
                let owner = pid | generation << PID_BITS;
                // SYNC: take entry (CAS Acquire) <-> publish entry (Release) of its writer.
                if self
                    .key(i)
                    .compare_exchange(k, BUSY | owner, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.fill(i, owner, start, role);
                    return Ok(owner);
                }
                retry = true;
                break;
            }
            if retry {
                continue;
            }
            if let Some(i) = free {
                let generation = (start ^ start >> 8 ^ start >> 16) as u32 & GEN_MASK;
                let owner = pid | generation << PID_BITS;
                // SYNC: claim entry (CAS Acquire) <-> free entry (Release) in `reclaim`.
                if self
                    .key(i)
                    .compare_exchange(0, BUSY | owner, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.fill(i, owner, start, role);
                    return Ok(owner);
                }
                continue;
            }
            if self.reclaim() == 0 {
                return Err(MemoryPoolError::TooManyParties);
            }
        }
        Err(MemoryPoolError::TooManyParties)
    }

    /// Frees the entry of this process's observer `owner`, unless it became a party meanwhile
    /// (an observer holds nothing when it detaches, so no one can mistake it for a dead owner
    /// of anything).
    pub(crate) fn unregister_observer(&self, owner: u32) {
        let _own = OWN_ENTRIES.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..MAX_PARTIES {
            if self.key(i).load(Ordering::Relaxed) != owner
                || self.role(i).load(Ordering::Relaxed) != ROLE_OBSERVER
            {
                continue;
            }
            // SYNC: free entry (Release) <-> claim entry (CAS Acquire) in `register`.
            let _ = self
                .key(i)
                .compare_exchange(owner, 0, Ordering::Release, Ordering::Relaxed);
            return;
        }
    }

    /// Frees the entries of dead processes; returns how many.
    fn reclaim(&self) -> usize {
        let mut n = 0;
        for i in 0..MAX_PARTIES {
            // SYNC: Acquire <-> publish entry (Release) in `fill`.
            let k = self.key(i).load(Ordering::Acquire);
            if k == 0 {
                continue;
            }
            let dead = if k & BUSY != 0 {
                proc_state(k & PID_MASK) == ProcState::Dead
            } else {
                !self.is_alive(k)
            };
            // SYNC: free entry (Release) <-> claim entry (CAS Acquire) in `register`.
            if dead
                && self
                    .key(i)
                    .compare_exchange(k, 0, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Whether the party with this owner id is alive (see the module docs).
    pub(crate) fn is_alive(&self, owner: u32) -> bool {
        if owner == 0 || owner & BUSY != 0 {
            return false;
        }
        for i in 0..MAX_PARTIES {
            // SYNC: Acquire <-> publish entry (Release) in `fill`.
            if self.key(i).load(Ordering::Acquire) != owner {
                continue;
            }
            let Some(recorded) = self.start_of(i, owner) else {
                continue;
            };
            return started_at(owner & PID_MASK, recorded);
        }
        false
    }

    /// Live registered parties, observers left out (a diagnostic snapshot).
    pub(crate) fn live(&self) -> Vec<u32> {
        (0..MAX_PARTIES)
            .filter(|&i| self.role(i).load(Ordering::Relaxed) != ROLE_OBSERVER)
            // SYNC: Acquire <-> publish entry (Release) in `fill`.
            .map(|i| self.key(i).load(Ordering::Acquire))
            .filter(|&k| k != 0 && k & BUSY == 0 && self.is_alive(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_live() {
        let (pid, start) = me();
        assert_eq!(proc_state(pid), ProcState::Live(start));
        assert_eq!(proc_state(PID_MASK + 1), ProcState::Dead);
    }
}
