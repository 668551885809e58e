//! Printing: aligned tables and sizes for people, pretty JSON for scripts.

use core::fmt::Write as _;

use serde::Serialize;

use crate::gather::{InspectReport, PoolRow, RecoverReport};
use crate::remove::GcReport;

/// Prints `v` as pretty JSON on stdout.
pub(crate) fn print_json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        // Only maps with non-string keys fail, and the reports have none.
        Err(e) => eprintln!("dragon-channels: cannot write JSON: {e}"),
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `128.0 MiB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn opt_size(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), size)
}

/// A table: a header row and rows, columns padded to their widest cell; columns whose index
/// is in `right` are right-aligned (numbers). Each line starts with `indent`.
fn table(indent: &str, header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from(indent);
        for (i, (cell, &w)) in cells.zip(&width).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            if right.contains(&i) {
                l.extend(core::iter::repeat_n(' ', pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.extend(core::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// `ls`.
pub(crate) fn ls_table(rows: &[PoolRow]) -> String {
    if rows.is_empty() {
        return "no pools in /dev/shm\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.to_owned(),
                size(r.file_len),
                opt_size(r.used),
                size(r.reserved),
                r.parties_alive.to_string(),
                r.parties_dead.to_string(),
                r.channels.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.note.clone(),
            ]
        })
        .collect();
    table(
        "",
        &[
            "NAME", "STATE", "SIZE", "USED", "RESERVED", "ALIVE", "DEAD", "CHANNELS", "NOTE",
        ],
        &cells,
        &[2, 3, 4, 5, 6, 7],
    )
}

/// `inspect`.
pub(crate) fn inspect_text(r: &InspectReport) -> String {
    let mut out = String::new();
    let uid = r.uid.map_or(String::new(), |u| format!(", uid {u}"));
    let _ = writeln!(out, "pool      {} ({}{uid})", r.name, r.state);
    if !r.note.is_empty() {
        let _ = writeln!(out, "note      {}", r.note);
    }
    let _ = writeln!(
        out,
        "file      /dev/shm/{}: {}, {} reserved",
        r.name,
        size(r.file_len),
        size(r.reserved)
    );
    if let Some(c) = &r.creator {
        let alive = if c.alive { "still runs" } else { "dead" };
        let _ = writeln!(out, "creator   pid {} ({alive})", c.pid);
    }
    if let Some(d) = &r.data {
        let pct = if d.size == 0 {
            0.0
        } else {
            100.0 * d.used as f64 / d.size as f64
        };
        let _ = writeln!(
            out,
            "data      {}, {} used ({pct:.1} %), {} allocations of at most {}, largest {}",
            size(d.size),
            size(d.used),
            d.allocations,
            d.max_allocations,
            size(d.largest_allocation)
        );
    }
    let alive = r.parties.iter().filter(|p| p.alive && !p.observer).count();
    let dead = r.parties.iter().filter(|p| !p.alive && !p.observer).count();
    let _ = writeln!(out, "parties   {alive} alive, {dead} dead");
    if !r.parties.is_empty() {
        let rows: Vec<Vec<String>> = r
            .parties
            .iter()
            .map(|p| {
                let state = match (p.alive, p.observer) {
                    (true, false) => "alive",
                    (false, false) => "dead",
                    (true, true) => "alive (observer)",
                    (false, true) => "dead (observer)",
                };
                vec![
                    format!("{:#010x}", p.id),
                    p.pid.to_string(),
                    state.to_owned(),
                ]
            })
            .collect();
        out.push_str(&table("  ", &["ID", "PID", "STATE"], &rows, &[1]));
    }
    if r.data.is_none() {
        return out;
    }
    let _ = writeln!(out, "channels  {}", r.channels.len());
    if !r.channels.is_empty() {
        let rows: Vec<Vec<String>> = r
            .channels
            .iter()
            .map(|c| {
                vec![
                    c.cuid.to_string(),
                    c.capacity.to_string(),
                    size(c.block_size as u64),
                    c.semaphore
                        .map_or_else(|| c.queued.to_string(), |v| format!("sem = {v}")),
                    c.blocked_receivers.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            "  ",
            &["C_UID", "CAPACITY", "BLOCK", "QUEUED", "BLOCKED_RECV"],
            &rows,
            &[0, 1, 2, 3, 4],
        ));
    }
    let _ = writeln!(out, "allocations by owner and kind");
    if r.allocations.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let rows: Vec<Vec<String>> = r
            .allocations
            .iter()
            .map(|a| {
                vec![
                    a.owner_is.clone(),
                    a.kind.clone(),
                    a.count.to_string(),
                    size(a.bytes),
                ]
            })
            .collect();
        out.push_str(&table(
            "  ",
            &["OWNER", "KIND", "COUNT", "BYTES"],
            &rows,
            &[2, 3],
        ));
    }
    let _ = writeln!(out, "free blocks");
    if r.free_blocks.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let rows: Vec<Vec<String>> = r
            .free_blocks
            .iter()
            .map(|b| vec![size(b.size), b.count.to_string()])
            .collect();
        out.push_str(&table("  ", &["SIZE", "COUNT"], &rows, &[0, 1]));
    }
    out
}

/// `recover`.
pub(crate) fn recover_text(r: &RecoverReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "recovered pool {}", r.name);
    let lock = if r.lock_taken_over {
        "taken over from a dead holder, metadata rebuilt"
    } else {
        "not held by a dead party"
    };
    let _ = writeln!(out, "  pool lock               {lock}");
    let _ = writeln!(
        out,
        "  allocations freed       {} of dead parties, {} half-made",
        r.allocations_freed, r.orphans_freed
    );
    let _ = writeln!(
        out,
        "  channels                {} checked: {} claims released, {} unfinished sends skipped, \
         {} messages lost in receive, {} side allocations freed",
        r.channels, r.claims_released, r.tombstones, r.lost_in_receive, r.side_allocations_freed
    );
    let _ = writeln!(
        out,
        "  used                    {} -> {}",
        opt_size(r.used_before),
        size(r.used_after)
    );
    let _ = writeln!(out, "  state                   {}", r.state_after);
    out
}

/// `gc`.
pub(crate) fn gc_text(r: &GcReport) -> String {
    let mut out = String::new();
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if r.removed.is_empty() {
        let _ = writeln!(out, "nothing to remove");
    }
    for g in &r.removed {
        let _ = writeln!(
            out,
            "{verb} {} ({}: {}; {} freed)",
            g.name,
            g.state,
            g.reason,
            size(g.reserved)
        );
    }
    for g in &r.kept {
        let _ = writeln!(out, "kept {} ({}: {})", g.name, g.state, g.reason);
    }
    for f in &r.failed {
        let _ = writeln!(out, "failed {}: {}", f.name, f.error);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1 << 20), "1.0 MiB");
        assert_eq!(size(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn tables_align() {
        let t = table(
            "",
            &["A", "NUM"],
            &[
                vec!["long-name".into(), "1".into()],
                vec!["b".into(), "100".into()],
            ],
            &[1],
        );
        assert_eq!(t, "A          NUM\nlong-name    1\nb          100\n");
    }
}
