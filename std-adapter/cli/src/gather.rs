//! What the library says about pools, gathered into plain data that `render` prints as
//! tables or JSON: rows of `ls`, the report of `inspect`, what `recover` reclaimed.
//!
//! Headers are read without attaching ([`MemoryPool::probe`], [`MemoryPool::list`]); the
//! inside of a published pool is read through an observer attachment
//! ([`MemoryPool::observe`]), which is not counted as a user of the pool, never repairs by
//! itself and leaves no party entry behind.

use std::collections::BTreeMap;

use dragon_channels::dragon_channels_core::pool::STRUCT_OWNER_BIT;
use dragon_channels::{AllocInfo, ChannelInfo, MemoryPool, PartyInfo, PoolFile, PoolState};
use serde::Serialize;

use crate::{Exit, Failure};

/// Bits of an owner id that hold the pid (the library's `pid | generation << 22`).
const PID_MASK: u32 = (1 << 22) - 1;

/// One row of `ls`.
#[derive(Debug, Serialize)]
pub(crate) struct PoolRow {
    pub(crate) name: String,
    pub(crate) state: &'static str,
    /// Bytes of the file.
    pub(crate) file_len: u64,
    /// Bytes of memory it occupies in /dev/shm (`st_blocks * 512`).
    pub(crate) reserved: u64,
    /// Bytes of the pool's data area, and how many of them are allocated (published pools
    /// whose inside could be read).
    pub(crate) data_size: Option<u64>,
    pub(crate) used: Option<u64>,
    pub(crate) parties_alive: usize,
    pub(crate) parties_dead: usize,
    pub(crate) channels: Option<usize>,
    /// The pool uid.
    pub(crate) uid: Option<u64>,
    /// Why the state is what it is, or what kept the inside from being read.
    pub(crate) note: String,
}

/// A party, as `inspect` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct PartyRow {
    pub(crate) id: u32,
    pub(crate) pid: u32,
    pub(crate) alive: bool,
    pub(crate) observer: bool,
}

/// A channel, as `inspect` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ChannelRow {
    pub(crate) cuid: u64,
    pub(crate) capacity: usize,
    pub(crate) block_size: usize,
    pub(crate) queued: usize,
    pub(crate) blocked_receivers: u32,
    /// The value of a semaphore channel.
    pub(crate) semaphore: Option<u32>,
}

/// Allocations of one owner and kind.
#[derive(Debug, Serialize)]
pub(crate) struct AllocGroup {
    pub(crate) owner: u32,
    /// "pid 123 (alive)", "pid 123 (dead)", "channel 7".
    pub(crate) owner_is: String,
    pub(crate) kind: String,
    pub(crate) count: usize,
    pub(crate) bytes: u64,
}

/// Free blocks of one size.
#[derive(Debug, Serialize)]
pub(crate) struct FreeBlocks {
    pub(crate) size: u64,
    pub(crate) count: u32,
}

/// The data area of a published pool.
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    pub(crate) size: u64,
    pub(crate) used: u64,
    pub(crate) free: u64,
    pub(crate) allocations: u32,
    pub(crate) max_allocations: u32,
    pub(crate) largest_allocation: u64,
}

/// The creator of a file being created.
#[derive(Debug, Serialize)]
pub(crate) struct Creator {
    pub(crate) pid: u32,
    pub(crate) alive: bool,
}

/// What `inspect` found.
#[derive(Debug, Serialize)]
pub(crate) struct InspectReport {
    pub(crate) name: String,
    pub(crate) state: &'static str,
    pub(crate) note: String,
    pub(crate) file_len: u64,
    pub(crate) reserved: u64,
    pub(crate) uid: Option<u64>,
    pub(crate) creator: Option<Creator>,
    pub(crate) data: Option<Data>,
    pub(crate) parties: Vec<PartyRow>,
    pub(crate) channels: Vec<ChannelRow>,
    pub(crate) allocations: Vec<AllocGroup>,
    pub(crate) free_blocks: Vec<FreeBlocks>,
}

/// What `recover` reclaimed.
#[derive(Debug, Default, Serialize)]
pub(crate) struct RecoverReport {
    pub(crate) name: String,
    /// A dead party held the pool lock; it was taken over and the metadata rebuilt.
    pub(crate) lock_taken_over: bool,
    /// Allocations of dead parties freed.
    pub(crate) allocations_freed: u32,
    /// Blocks a party died allocating, freed.
    pub(crate) orphans_freed: u32,
    /// Channel slots dead parties had claimed, released.
    pub(crate) claims_released: u32,
    /// Messages dead senders had not finished, skipped by receivers from now on.
    pub(crate) tombstones: u32,
    /// Messages dead receivers had taken but not finished, lost with them.
    pub(crate) lost_in_receive: u32,
    /// Side allocations of such messages, freed.
    pub(crate) side_allocations_freed: u32,
    pub(crate) channels: usize,
    /// Bytes allocated before and after (none before when a dead party held the pool lock,
    /// which keeps the pool from being read until recovery).
    pub(crate) used_before: Option<u64>,
    pub(crate) used_after: u64,
    pub(crate) state_after: &'static str,
}

/// This process's effective user id.
fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `ls` shows `f` without `--all`: a file with a pool header, or one of this user
/// with mode 0600 (as pools are made) that has none (a creator killed before writing it,
/// or a file that is not a pool, for `rm` to deal with).
pub(crate) fn listed(f: &PoolFile) -> bool {
    f.ours || (f.file_uid == my_uid() && f.mode & 0o777 == 0o600)
}

/// The note of a file: what its state means, from the library's explanation without the
/// advice (which `rm` and `gc` act on).
fn note_of(f: &PoolFile) -> String {
    match f.state {
        PoolState::NotAPool => f.why.to_owned(),
        PoolState::HalfCreated | PoolState::Creating => match f.creator {
            Some(c) if c.alive => format!("creator {} still runs", c.pid),
            Some(c) => format!("creator {} died", c.pid),
            None if f.file_len == 0 => "empty file, no creator recorded".to_owned(),
            None => "no creator recorded".to_owned(),
        },
        PoolState::Destroyed => "destroyed; file left behind".to_owned(),
        _ => String::new(),
    }
}

/// `ls`: one row per listed file whose name starts with `prefix`.
pub(crate) fn list(all: bool, prefix: &str) -> Result<Vec<PoolRow>, Failure> {
    let files = MemoryPool::list()?;
    Ok(files
        .iter()
        .filter(|f| f.name.starts_with(prefix) && (all || listed(f)))
        .map(row_of)
        .collect())
}

fn row_of(f: &PoolFile) -> PoolRow {
    let mut row = PoolRow {
        name: f.name.clone(),
        state: f.state.as_str(),
        file_len: f.file_len,
        reserved: f.reserved,
        data_size: None,
        used: None,
        parties_alive: f.live_parties(),
        parties_dead: f.dead_parties(),
        channels: None,
        uid: f.pool_uid,
        note: note_of(f),
    };
    if matches!(f.state, PoolState::Ok | PoolState::Abandoned) {
        let inside = MemoryPool::observe(&f.name).and_then(|pool| {
            let st = pool.stats()?;
            Ok((st, pool.channels()?.len()))
        });
        match inside {
            Ok((st, n)) => {
                row.data_size = Some(st.total as u64);
                row.used = Some(st.total.saturating_sub(st.free) as u64);
                row.channels = Some(n);
            }
            Err(e) => row.note = short(&e.to_string()),
        }
    }
    row
}

/// The first clause of a message (up to its first ';' or ':' after the subject).
fn short(message: &str) -> String {
    message
        .split(';')
        .next()
        .unwrap_or(message)
        .trim()
        .to_owned()
}

/// The kind of an allocation in lowercase words: data, channel, channel-buffer.
fn kind_name(a: &AllocInfo) -> String {
    let camel = format!("{:?}", a.kind);
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Who an owner id is: a party (by pid, alive or dead) or a channel's structure.
fn owner_is(owner: u32, parties: &[PartyInfo], channels: &[ChannelInfo]) -> String {
    if owner & STRUCT_OWNER_BIT != 0 {
        return match channels.iter().find(|c| c.struct_owner == owner) {
            Some(c) => format!("channel {}", c.cuid),
            None => format!("structure {:#x}", owner & !STRUCT_OWNER_BIT),
        };
    }
    let alive = parties.iter().any(|p| p.id == owner && p.alive);
    let what = if alive { "alive" } else { "dead" };
    format!("pid {} ({what})", owner & PID_MASK)
}

/// `inspect NAME`: the report, and the failure to exit with after printing it (a file that
/// is not a pool, a pool whose inside could not be read).
pub(crate) fn inspect(name: &str) -> Result<(InspectReport, Option<Failure>), Failure> {
    let f = MemoryPool::probe(name)?;
    let mut rep = InspectReport {
        name: f.name.clone(),
        state: f.state.as_str(),
        note: note_of(&f),
        file_len: f.file_len,
        reserved: f.reserved,
        uid: f.pool_uid,
        creator: f.creator.map(|c| Creator {
            pid: c.pid,
            alive: c.alive,
        }),
        data: None,
        parties: party_rows(&f.parties),
        channels: Vec::new(),
        allocations: Vec::new(),
        free_blocks: Vec::new(),
    };
    match f.state {
        PoolState::Ok | PoolState::Abandoned => {}
        PoolState::NotAPool => {
            let failure = f.problem().map(Failure::from);
            return Ok((rep, failure));
        }
        _ => return Ok((rep, None)),
    }
    let failure = inside(name, &mut rep).err();
    Ok((rep, failure))
}

fn party_rows(parties: &[PartyInfo]) -> Vec<PartyRow> {
    parties
        .iter()
        .map(|p| PartyRow {
            id: p.id,
            pid: p.pid,
            alive: p.alive,
            observer: p.observer,
        })
        .collect()
}

/// Fills in what is inside a published pool, read through an observer.
fn inside(name: &str, rep: &mut InspectReport) -> Result<(), Failure> {
    let pool = MemoryPool::observe(name)?;
    // The table as the observer sees it, without the observer itself.
    let parties: Vec<PartyInfo> = pool
        .parties()
        .into_iter()
        .filter(|p| !(p.observer && p.id == pool.party_id()))
        .collect();
    rep.parties = party_rows(&parties);
    let st = pool.stats()?;
    rep.data = Some(Data {
        size: st.total as u64,
        used: st.total.saturating_sub(st.free) as u64,
        free: st.free as u64,
        allocations: st.live,
        max_allocations: st.max_allocations,
        largest_allocation: pool.max_alloc() as u64,
    });
    let infos: Vec<ChannelInfo> = pool.channels()?.iter().map(|c| c.info()).collect();
    rep.channels = infos
        .iter()
        .map(|c| ChannelRow {
            cuid: c.cuid,
            capacity: c.capacity,
            block_size: c.block_size,
            queued: c.queued,
            blocked_receivers: c.blocked_receivers,
            semaphore: c.semaphore,
        })
        .collect();
    let mut groups: BTreeMap<(u32, String), (usize, u64)> = BTreeMap::new();
    for a in pool.allocations()? {
        let g = groups.entry((a.owner, kind_name(&a))).or_default();
        g.0 += 1;
        g.1 += a.size as u64;
    }
    rep.allocations = groups
        .into_iter()
        .map(|((owner, kind), (count, bytes))| AllocGroup {
            owner,
            owner_is: owner_is(owner, &parties, &infos),
            kind,
            count,
            bytes,
        })
        .collect();
    rep.free_blocks = pool
        .free_blocks()?
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(size, count)| FreeBlocks {
            size: size as u64,
            count,
        })
        .collect();
    Ok(())
}

/// `recover NAME`: runs the pool's recovery and each channel's.
pub(crate) fn recover(name: &str) -> Result<RecoverReport, Failure> {
    let f = MemoryPool::probe(name)?;
    if !matches!(f.state, PoolState::Ok | PoolState::Abandoned) {
        let message = f.problem().map_or_else(
            || format!("{name}: no finished pool to recover"),
            |e| e.to_string(),
        );
        let exit = if f.state == PoolState::NotAPool {
            Exit::NotAPool
        } else {
            Exit::Other
        };
        return Err(Failure { exit, message });
    }
    let pool = MemoryPool::observe(name)?;
    let mut rep = RecoverReport {
        name: name.to_owned(),
        ..RecoverReport::default()
    };
    let used = |pool: &MemoryPool| {
        pool.stats()
            .map(|st| st.total.saturating_sub(st.free) as u64)
    };
    rep.used_before = used(&pool).ok();
    // The pool first: a dead lock holder keeps everything else from being read.
    let r = pool.recover()?;
    rep.lock_taken_over = r.pool.lock_taken_over;
    rep.allocations_freed = r.pool.freed;
    rep.orphans_freed = r.pool.orphans;
    let channels = pool.channels()?;
    rep.channels = channels.len();
    for ch in &channels {
        let r = ch.recover().map_err(|e| Failure {
            exit: Exit::Other,
            message: format!("recovering channel {}: {e}", ch.cuid()),
        })?;
        rep.lock_taken_over |= r.pool.lock_taken_over;
        rep.allocations_freed += r.pool.freed;
        rep.orphans_freed += r.pool.orphans;
        if let Some(c) = r.channel {
            rep.claims_released += c.claims_released;
            rep.tombstones += c.tombstones;
            rep.lost_in_receive += c.lost_in_receive;
            rep.side_allocations_freed += c.freed;
        }
    }
    rep.used_after = used(&pool)?;
    drop(channels);
    drop(pool);
    rep.state_after = MemoryPool::probe(name)?.state.as_str();
    Ok(rep)
}
