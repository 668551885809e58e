//! Removing files: `rm NAME` and `gc`.
//!
//! What is safe to remove without being told twice: a pool nobody uses any more
//! (abandoned), a file whose creator died before finishing it (half-created), and a
//! destroyed pool's leftover file; `gc` removes all of these. `rm NAME` also removes a blank
//! file (empty or zero-filled) of this user with mode 0600, as a pool creator killed at once
//! leaves (`gc` leaves those alone: one may be another program's that it has not written
//! yet). A pool live processes use, one whose creator still runs, and a file that holds
//! another program's bytes are removed only with `rm --force`; `gc` never removes them.
//!
//! Removing is unlinking: processes that still map the file keep working on their mapping
//! (as with `MemoryPool::destroy`), new attaches fail with "not found". Each file is looked
//! at again right before it is unlinked, and left alone if it changed meanwhile (a process
//! attached to an abandoned pool, or the name now belongs to a new file).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use dragon_channels::{MemoryPool, PoolFile, PoolState, SHM_DIR};
use serde::Serialize;

use crate::gather::listed;
use crate::render::size;
use crate::{Exit, Failure};

/// What `rm` did.
#[derive(Debug, Serialize)]
pub(crate) struct Removed {
    pub(crate) name: String,
    pub(crate) state: &'static str,
    pub(crate) reserved: u64,
    pub(crate) forced: bool,
    pub(crate) message: String,
}

/// One file `gc` removed or kept.
#[derive(Debug, Serialize)]
pub(crate) struct GcEntry {
    pub(crate) name: String,
    pub(crate) state: &'static str,
    pub(crate) reason: String,
    pub(crate) reserved: u64,
}

/// One file `gc` failed to remove.
#[derive(Debug, Serialize)]
pub(crate) struct GcFailure {
    pub(crate) name: String,
    pub(crate) error: String,
}

/// What `gc` did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct GcReport {
    pub(crate) dry_run: bool,
    pub(crate) removed: Vec<GcEntry>,
    /// Stale-looking files left alone, and why.
    pub(crate) kept: Vec<GcEntry>,
    pub(crate) failed: Vec<GcFailure>,
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(SHM_DIR).join(name)
}

/// Why `f` is stale, in words (for messages), or `None` when it is not.
fn stale_reason(f: &PoolFile) -> Option<String> {
    let s = |n: usize| if n == 1 { "" } else { "es" };
    match f.state {
        PoolState::Abandoned => {
            let dead = f.dead_parties();
            Some(format!("no live process, {dead} dead process{}", s(dead)))
        }
        PoolState::HalfCreated => Some(match f.creator {
            Some(c) if !c.alive => format!("its creator, process {}, died", c.pid),
            Some(c) => format!(
                "its creator, process {}, still runs but has not finished",
                c.pid
            ),
            None => "no creator recorded, never finished".to_owned(),
        }),
        PoolState::Destroyed => Some("destroyed, its file left behind".to_owned()),
        PoolState::NotAPool if blank_of_ours(f) => Some(format!("{}, {}", f.why, "blank")),
        _ => None,
    }
}

/// A file that holds nothing, of this user, with the mode pools are made with: what a
/// creator killed before writing anything leaves.
fn blank_of_ours(f: &PoolFile) -> bool {
    f.blank && listed(f)
}

/// Unlinks `name` if it is still the file `f` describes (same inode, same state).
fn unlink_if_unchanged(name: &str, f: &PoolFile, ino: u64) -> Result<(), Failure> {
    let again = MemoryPool::probe(name)?;
    let now_ino = std::fs::metadata(path(name)).map(|m| m.ino()).ok();
    if again.state != f.state || now_ino != Some(ino) {
        return Err(Failure {
            exit: Exit::Other,
            message: format!(
                "{name} changed while it was looked at (now {}): not removed; run again",
                again.state
            ),
        });
    }
    std::fs::remove_file(path(name)).map_err(|e| Failure {
        exit: if e.kind() == std::io::ErrorKind::NotFound {
            Exit::NotFound
        } else {
            Exit::Other
        },
        message: format!("removing /dev/shm/{name}: {e}"),
    })
}

fn inode(name: &str) -> Result<u64, Failure> {
    std::fs::metadata(path(name))
        .map(|m| m.ino())
        .map_err(|e| Failure {
            exit: if e.kind() == std::io::ErrorKind::NotFound {
                Exit::NotFound
            } else {
                Exit::Other
            },
            message: format!("/dev/shm/{name}: {e}"),
        })
}

/// `rm NAME [--force]`.
pub(crate) fn rm(name: &str, force: bool) -> Result<Removed, Failure> {
    // The name's checks and "not found" come from the library, in its words.
    let f = MemoryPool::probe(name)?;
    let ino = inode(name)?;
    let (what, refused) = match f.state {
        PoolState::Ok => {
            let pids: Vec<String> = f
                .parties
                .iter()
                .filter(|p| p.alive && !p.observer)
                .map(|p| p.pid.to_string())
                .collect();
            let es = if pids.len() == 1 { "" } else { "es" };
            (
                format!(
                    "in use by {} live process{es}: {}",
                    pids.len(),
                    pids.join(", ")
                ),
                Some(Exit::InUse),
            )
        }
        PoolState::Creating => (
            match f.creator {
                Some(c) => format!("being created by process {}, which still runs", c.pid),
                None => "being created".to_owned(),
            },
            Some(Exit::InUse),
        ),
        // Hung past the limit, but it may yet finish: as for a pool in use.
        PoolState::HalfCreated if f.creator.is_some_and(|c| c.alive) => {
            (stale_reason(&f).unwrap_or_default(), Some(Exit::InUse))
        }
        PoolState::NotAPool if !blank_of_ours(&f) => (
            format!(
                "not a dragon-channels pool ({}); it may be another program's",
                f.why
            ),
            Some(Exit::NotAPool),
        ),
        _ => (stale_reason(&f).unwrap_or_default(), None),
    };
    if let Some(exit) = refused
        && !force
    {
        return Err(Failure {
            exit,
            message: format!(
                "not removing {name}: {what}; pass --force to remove it anyway{}",
                if exit == Exit::InUse {
                    " (its processes keep their mapping, new attaches fail)"
                } else {
                    ""
                }
            ),
        });
    }
    unlink_if_unchanged(name, &f, ino)?;
    let forced = refused.is_some();
    Ok(Removed {
        name: name.to_owned(),
        state: f.state.as_str(),
        reserved: f.reserved,
        forced,
        message: format!(
            "removed {name} ({}: {what}; {} freed{})",
            f.state,
            size(f.reserved),
            if forced { ", forced" } else { "" }
        ),
    })
}

/// `gc [--dry-run] [--prefix P]`: removes every stale file `ls` lists (whose name starts
/// with `prefix`).
pub(crate) fn gc(dry_run: bool, prefix: &str) -> Result<GcReport, Failure> {
    let mut rep = GcReport {
        dry_run,
        ..GcReport::default()
    };
    // A blank file is left to `rm`: it may be another program's that it has not written yet.
    let candidates = MemoryPool::list()?
        .into_iter()
        .filter(|f| f.name.starts_with(prefix) && listed(f) && f.state != PoolState::NotAPool);
    for f in candidates {
        let Some(reason) = stale_reason(&f) else {
            continue;
        };
        let entry = GcEntry {
            name: f.name.clone(),
            state: f.state.as_str(),
            reason,
            reserved: f.reserved,
        };
        // A hung creator may still finish: only `rm --force` takes its file.
        if f.creator.is_some_and(|c| c.alive) {
            rep.kept.push(GcEntry {
                reason: format!("{}; remove it with rm --force", entry.reason),
                ..entry
            });
            continue;
        }
        if dry_run {
            rep.removed.push(entry);
            continue;
        }
        match inode(&f.name).and_then(|ino| unlink_if_unchanged(&f.name, &f, ino)) {
            Ok(()) => rep.removed.push(entry),
            // Someone else removed it first: nothing left to do.
            Err(e) if e.exit == Exit::NotFound => {}
            Err(e) => rep.failed.push(GcFailure {
                name: f.name.clone(),
                error: e.message,
            }),
        }
    }
    Ok(rep)
}
