//! The `dragon-channels` command, run as a child process against live, abandoned,
//! half-created and foreign files: its output (tables and `--json`) and exit codes.
//!
//! Each test makes its own files (names `t<pid>-...`) and passes `--prefix` to `ls` and `gc`
//! so that it never sees, let alone removes, another test's pools. Children of the test
//! binary (re-run as a role, stdout silenced) create pools and are SIGKILLed; guards remove
//! every file and kill every child; watchdogs end a hung test.

#[path = "../../../tests/support/mod.rs"]
mod support;

use core::time::Duration;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use dragon_channels::dragon_channels_core::fault::{self, Step};
use dragon_channels::{Channel, ChannelAttrs, MemoryPool, Message, Timeout};
use serde_json::Value;
use support::{Children, ShmGuard, role, spawn_role, unique_name, wait_child, watchdog};

const NAME: &str = "DC_TEST_POOL";

/// What one run of the command gave.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.out))
    }
}

impl core::fmt::Debug for Run {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.out, self.err
        )
    }
}

/// Runs `dragon-channels args...` (30 s at most).
fn cli(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dragon-channels"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dragon-channels");
    // The outputs are small: read them after the exit.
    let st = wait_child(&mut child, Duration::from_secs(30));
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    Run {
        code: st.code().expect("exited, not killed"),
        out,
        err,
    }
}

/// Asserts the exit code, showing the whole run when it differs.
fn expect(run: &Run, code: i32) {
    assert_eq!(run.code, code, "{run:?}");
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/{name}"))
}

/// The `ls --json` row of `name`.
fn ls_row(prefix: &str, name: &str) -> Value {
    let run = cli(&["ls", "--json", "--prefix", prefix]);
    expect(&run, 0);
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {run:?}"))
        .clone()
}

/// The prefix of every file this test process makes.
fn prefix() -> String {
    format!("t{}-", std::process::id())
}

fn small() -> Option<ChannelAttrs> {
    Some(ChannelAttrs {
        capacity: 4,
        block_size: 64,
    })
}

fn wait_for_file(p: &PathBuf) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{p:?} appears");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn usage_help_and_not_found() {
    let _watchdog = watchdog(60, "usage_help_and_not_found");
    let help = cli(&["--help"]);
    expect(&help, 0);
    for part in ["Exit codes:", "3  refused", "half-created", "ls", "gc"] {
        assert!(help.out.contains(part), "{part}: {help:?}");
    }
    expect(&cli(&[]), 1);
    expect(&cli(&["frobnicate"]), 1);
    expect(&cli(&["rm"]), 1);
    let bad = cli(&["inspect", "no/slashes"]);
    expect(&bad, 1);
    assert!(bad.err.contains("bad pool name"), "{bad:?}");
    let missing = unique_name("missing");
    for cmd in ["inspect", "recover", "rm"] {
        let run = cli(&[cmd, &missing]);
        expect(&run, 2);
        assert!(run.err.contains("no pool named"), "{cmd}: {run:?}");
    }
    let none = cli(&["ls", "--prefix", &unique_name("nothing-here")]);
    expect(&none, 0);
    assert_eq!(none.out, "no pools in /dev/shm\n");
}

#[test]
fn live_pool() {
    let _watchdog = watchdog(120, "live_pool");
    let name = unique_name("live");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(1 << 20, &name, 17).unwrap();
    let ch = Channel::create(&pool, 5, small()).unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    for m in [&b"one"[..], b"two"] {
        s.send_bytes(m, m.len(), None, Timeout::Try).unwrap();
    }
    let held = Message::create_alloc(&pool, 1000).unwrap();
    let me = std::process::id();

    // ls: a table row, and the same in JSON.
    let ls = cli(&["ls", "--prefix", &name]);
    expect(&ls, 0);
    let line = ls.out.lines().find(|l| l.starts_with(&name)).expect("row");
    assert!(line.contains(" ok "), "{ls:?}");
    assert!(ls.out.starts_with("NAME"), "{ls:?}");
    let row = ls_row(&name, &name);
    assert_eq!(row["state"], "ok");
    assert_eq!(
        (row["parties_alive"].as_u64(), row["parties_dead"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(row["channels"], 1);
    assert_eq!(row["uid"], 17);
    assert!(row["used"].as_u64().unwrap() >= 1024 + 256, "{row}");
    assert!(row["reserved"].as_u64().unwrap() > 0, "{row}");

    // inspect: channels, allocations by owner and kind, free blocks, parties.
    let ins = cli(&["inspect", &name]);
    expect(&ins, 0);
    for part in [
        "channels  1",
        "allocations by owner and kind",
        &format!("pid {me} (alive)"),
        "channel 5",
        "free blocks",
        "parties   1 alive, 0 dead",
    ] {
        assert!(ins.out.contains(part), "{part}: {ins:?}");
    }
    let j = cli(&["--json", "inspect", &name]).json();
    assert_eq!(j["state"], "ok");
    let c = &j["channels"][0];
    assert_eq!(
        (c["cuid"].as_u64(), c["capacity"].as_u64()),
        (Some(5), Some(4))
    );
    assert_eq!(
        (c["queued"].as_u64(), c["blocked_receivers"].as_u64()),
        (Some(2), Some(0))
    );
    let groups = j["allocations"].as_array().unwrap();
    let data = groups
        .iter()
        .find(|g| g["kind"] == "data")
        .expect("the held message");
    assert_eq!(data["owner_is"], format!("pid {me} (alive)"));
    assert_eq!(
        (data["count"].as_u64(), data["bytes"].as_u64()),
        (Some(1), Some(1024))
    );
    assert!(
        groups
            .iter()
            .any(|g| g["kind"] == "channel" && g["owner_is"] == "channel 5")
    );
    assert!(!j["free_blocks"].as_array().unwrap().is_empty());
    assert_eq!(
        j["parties"].as_array().unwrap().len(),
        1,
        "the tool itself is not shown"
    );

    // recover: nothing dead, nothing changes.
    let rec = cli(&["--json", "recover", &name]);
    expect(&rec, 0);
    let r = rec.json();
    assert_eq!(
        (r["allocations_freed"].as_u64(), r["state_after"].as_str()),
        (Some(0), Some("ok"))
    );
    assert_eq!(r["used_before"], r["used_after"]);

    // The tool left no entry in the party table and took nothing.
    assert_eq!(pool.live_parties(), vec![pool.party_id()]);
    assert!(pool.parties().iter().all(|p| !p.observer), "observers gone");
    assert_eq!(pool.allocations().unwrap().len(), 2);

    // rm: refused while this process uses it; --force removes the file.
    let rm = cli(&["rm", &name]);
    expect(&rm, 3);
    assert!(
        rm.err.contains(&format!("in use by 1 live process: {me}")),
        "{rm:?}"
    );
    assert!(rm.err.contains("--force"), "{rm:?}");
    assert!(path(&name).exists());
    // gc leaves a pool in use alone.
    let gc = cli(&["gc", "--prefix", &name]);
    expect(&gc, 0);
    assert_eq!(gc.out, "nothing to remove\n", "{gc:?}");
    let rm = cli(&["rm", "--force", &name]);
    expect(&rm, 0);
    assert!(
        rm.out.starts_with(&format!("removed {name} (ok: in use")),
        "{rm:?}"
    );
    assert!(rm.out.contains("forced"), "{rm:?}");
    assert!(!path(&name).exists());
    // This process keeps working on its mapping.
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"one");
    drop((r, s, held, ch));
    pool.destroy().unwrap();
}

/// The step where the abandoned pool's owner dies (holding the pool lock).
static DIE_AT: OnceLock<Step> = OnceLock::new();

fn hook(_owner: u32, step: Step) -> bool {
    DIE_AT.get() == Some(&step)
}

/// The owner of the abandoned pool: creates it with a channel holding a message and a
/// message of its own, then stops inside an allocation with the pool lock held (as if it
/// died there), says so with a marker file, and waits to be killed.
fn owner_child() {
    let _watchdog = watchdog(60, "cli owner child");
    let name = std::env::var(NAME).unwrap();
    let pool = MemoryPool::create(1 << 20, &name, 9).unwrap();
    let ch = Channel::create(&pool, 3, small()).unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    s.send_bytes(b"left behind", 11, None, Timeout::Try)
        .unwrap();
    let held = Message::create_alloc(&pool, 1000).unwrap();
    DIE_AT.set(Step::PoolAllocSplit).unwrap();
    fault::set_hook(Some(hook));
    assert!(
        Message::create_alloc(&pool, 100).is_err(),
        "stops holding the lock"
    );
    drop(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path(&format!("{name}-ready")))
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(50));
    drop(held);
}

#[test]
fn abandoned_pool() {
    const TEST: &str = "abandoned_pool";
    if role().is_some() {
        return owner_child();
    }
    let _watchdog = watchdog(120, TEST);
    let name = unique_name("abandoned");
    let _g = ShmGuard::new(&name);
    let ready = format!("{name}-ready");
    let _gr = ShmGuard::new(&ready);
    let mut kid = Children(vec![spawn_role(TEST, "owner", &[(NAME, name.clone())])]);
    let pid = kid.0[0].id();
    wait_for_file(&path(&ready));
    kid.0[0].kill().unwrap();
    kid.0[0].wait().unwrap();

    // ls: abandoned, and the inside cannot be read until recovery.
    let row = ls_row(&name, &name);
    assert_eq!(row["state"], "abandoned");
    assert_eq!(
        (row["parties_alive"].as_u64(), row["parties_dead"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(row["used"].is_null(), "{row}");
    assert!(
        row["note"]
            .as_str()
            .unwrap()
            .contains(&format!("dead process {pid} holds the pool lock")),
        "{row}"
    );

    // inspect: what it can, then the dead lock holder and what to do, exit 4.
    let ins = cli(&["inspect", &name]);
    expect(&ins, 4);
    assert!(
        ins.out
            .contains(&format!("pool      {name} (abandoned, uid 9)")),
        "{ins:?}"
    );
    assert!(ins.out.contains("parties   0 alive, 1 dead"), "{ins:?}");
    assert!(
        ins.err
            .contains(&format!("run `dragon-channels recover {name}`")),
        "{ins:?}"
    );

    // recover: takes the lock over, frees the dead owner's message; the channel and its
    // message stay (the channel owns itself).
    let rec = cli(&["recover", &name]);
    expect(&rec, 0);
    assert!(rec.out.contains("taken over from a dead holder"), "{rec:?}");
    assert!(rec.out.contains(" of dead parties"), "{rec:?}");
    assert!(
        rec.out.contains("state                   abandoned"),
        "{rec:?}"
    );
    let j = cli(&["--json", "inspect", &name]);
    expect(&j, 0);
    let j = j.json();
    assert_eq!(j["channels"][0]["queued"], 1);
    let kinds: Vec<&str> = j["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["channel"], "only the channel is left");
    assert_eq!(
        MemoryPool::probe(&name).unwrap().state,
        dragon_channels::PoolState::Abandoned,
        "looking and recovering leave it abandoned"
    );

    // gc: a dry run says what it would remove; then it removes it.
    let dry = cli(&["gc", "--dry-run", "--prefix", &name]);
    expect(&dry, 0);
    assert!(
        dry.out.starts_with(&format!(
            "would remove {name} (abandoned: no live process, 1 dead process;"
        )),
        "{dry:?}"
    );
    assert!(path(&name).exists());
    let gc = cli(&["--json", "gc", "--prefix", &name]);
    expect(&gc, 0);
    let g = gc.json();
    assert_eq!(g["removed"][0]["name"], name.as_str());
    assert_eq!(g["removed"][0]["state"], "abandoned");
    assert!(!path(&name).exists());
}

/// Writes a creation stamp for `pid` (the documented header layout of version 1) into a new
/// file of mode 0600, as a creator killed right after creating the file leaves it.
fn write_stamp(name: &str, pid: u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let start: u64 = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_ascii_whitespace().nth(19)?.parse().ok())
        .unwrap_or(0);
    let mut b = [0u8; 64];
    b[0..4].copy_from_slice(b"DRSM");
    b[4..8].copy_from_slice(&1u32.to_ne_bytes());
    b[52..56].copy_from_slice(&pid.to_ne_bytes());
    b[56..60].copy_from_slice(&(start as u32).to_ne_bytes());
    b[60..64].copy_from_slice(&((start >> 32) as u32).to_ne_bytes());
    new_file(name, 0o600).write_all_at(&b, 0).unwrap();
}

fn new_file(name: &str, mode: u32) -> std::fs::File {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path(name))
        .unwrap()
}

/// A creator that stamps its file and then exits or hangs.
fn creator_child() {
    let _watchdog = watchdog(60, "cli creator child");
    write_stamp(&std::env::var(NAME).unwrap(), std::process::id());
    if role().as_deref() == Some("hang") {
        std::thread::sleep(Duration::from_secs(50));
    }
}

#[test]
fn half_created_files() {
    const TEST: &str = "half_created_files";
    if role().is_some() {
        return creator_child();
    }
    let _watchdog = watchdog(120, TEST);
    let p = format!("{}half-", prefix());
    let dead = format!("{p}dead");
    let hung = format!("{p}hung");
    let (_g1, _g2) = (ShmGuard::new(&dead), ShmGuard::new(&hung));
    let mut kids = Children(vec![
        spawn_role(TEST, "exit", &[(NAME, dead.clone())]),
        spawn_role(TEST, "hang", &[(NAME, hung.clone())]),
    ]);
    let dead_pid = kids.0[0].id();
    let hung_pid = kids.0[1].id();
    assert!(wait_child(&mut kids.0[0], Duration::from_secs(30)).success());
    wait_for_file(&path(&hung));
    let t0 = Instant::now();
    while std::fs::metadata(path(&hung)).map(|m| m.len()).unwrap_or(0) < 64 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the hung creator stamps"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let ls = cli(&["ls", "--prefix", &p]);
    expect(&ls, 0);
    let line = |n: &str| {
        ls.out
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{n}: {ls:?}"))
            .to_owned()
    };
    assert!(line(&dead).contains("half-created"), "{ls:?}");
    assert!(
        line(&dead).contains(&format!("creator {dead_pid} died")),
        "{ls:?}"
    );
    assert!(line(&hung).contains("creating"), "{ls:?}");
    assert!(
        line(&hung).contains(&format!("creator {hung_pid} still runs")),
        "{ls:?}"
    );

    // inspect reports what is known (exit 0); recover has nothing to work on (exit 4).
    let ins = cli(&["inspect", &dead]);
    expect(&ins, 0);
    assert!(
        ins.out
            .contains(&format!("creator   pid {dead_pid} (dead)")),
        "{ins:?}"
    );
    let rec = cli(&["recover", &dead]);
    expect(&rec, 4);
    assert!(rec.err.contains("abandoned while being created"), "{rec:?}");
    assert!(
        rec.err.contains(&format!("dragon-channels rm {dead}")),
        "{rec:?}"
    );

    // rm of a file whose creator still runs: refused (3).
    let rm = cli(&["rm", &hung]);
    expect(&rm, 3);
    assert!(
        rm.err
            .contains(&format!("being created by process {hung_pid}")),
        "{rm:?}"
    );

    // gc removes the dead creator's file, not the running one's.
    let gc = cli(&["gc", "--prefix", &p]);
    expect(&gc, 0);
    assert!(
        gc.out.contains(&format!(
            "removed {dead} (half-created: its creator, process {dead_pid}, died;"
        )),
        "{gc:?}"
    );
    assert!(!gc.out.contains(&hung), "{gc:?}");
    assert!(!path(&dead).exists() && path(&hung).exists());

    // Hung past the limit: half-created, but its creator may yet finish, so only
    // `rm --force` takes it.
    let old = std::time::SystemTime::now() - dragon_channels::CREATE_LIMIT - Duration::from_secs(5);
    OpenOptions::new()
        .write(true)
        .open(path(&hung))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let row = ls_row(&p, &hung);
    assert_eq!(row["state"], "half-created", "{row}");
    let rm = cli(&["rm", &hung]);
    expect(&rm, 3);
    assert!(rm.err.contains("still runs but has not finished"), "{rm:?}");
    let gc = cli(&["gc", "--prefix", &p]);
    expect(&gc, 0);
    assert!(
        gc.out.contains(&format!(
            "kept {hung} (half-created: its creator, process {hung_pid}, still runs"
        )),
        "{gc:?}"
    );
    assert!(gc.out.contains("remove it with rm --force"), "{gc:?}");
    assert!(path(&hung).exists());

    // Killed: now gc takes it too.
    kids.0[1].kill().unwrap();
    kids.0[1].wait().unwrap();
    let gc = cli(&["gc", "--prefix", &p]);
    expect(&gc, 0);
    assert!(
        gc.out.contains(&format!("removed {hung} (half-created")),
        "{gc:?}"
    );
    assert!(!path(&hung).exists());
}

#[test]
fn foreign_and_blank_files() {
    let _watchdog = watchdog(60, "foreign_and_blank_files");
    let p = format!("{}other-", prefix());
    let foreign = format!("{p}foreign");
    let zeros = format!("{p}zeros");
    let public = format!("{p}public");
    let _g = (
        ShmGuard::new(&foreign),
        ShmGuard::new(&zeros),
        ShmGuard::new(&public),
    );
    new_file(&foreign, 0o600)
        .write_all_at(&b"another program's shared memory ".repeat(64), 0)
        .unwrap();
    new_file(&zeros, 0o600).set_len(1 << 16).unwrap();
    new_file(&public, 0o644)
        .write_all_at(&b"not ours at all ".repeat(64), 0)
        .unwrap();

    // ls lists this user's 0600 files as not-a-pool, others only with --all.
    let ls = cli(&["ls", "--prefix", &p]);
    expect(&ls, 0);
    assert!(
        ls.out.contains(&foreign) && ls.out.contains(&zeros),
        "{ls:?}"
    );
    assert!(!ls.out.contains(&public), "{ls:?}");
    let row = ls_row(&p, &foreign);
    assert_eq!(row["state"], "not-a-pool");
    assert!(row["note"].as_str().unwrap().contains("bad magic"), "{row}");
    assert!(cli(&["ls", "--all", "--prefix", &p]).out.contains(&public));

    // inspect and recover: not a pool (5), with what it is.
    let ins = cli(&["inspect", &foreign]);
    expect(&ins, 5);
    assert!(ins.out.contains("not-a-pool"), "{ins:?}");
    assert!(ins.err.contains("is not a dragon-channels pool"), "{ins:?}");
    expect(&cli(&["recover", &foreign]), 5);

    // gc never touches them.
    let gc = cli(&["gc", "--prefix", &p]);
    expect(&gc, 0);
    assert_eq!(gc.out, "nothing to remove\n");

    // rm: foreign bytes need --force; a blank file of this user goes without.
    let rm = cli(&["rm", &foreign]);
    expect(&rm, 5);
    assert!(rm.err.contains("it may be another program's"), "{rm:?}");
    assert!(rm.err.contains("--force"), "{rm:?}");
    assert!(path(&foreign).exists());
    let rm = cli(&["--json", "rm", "--force", &foreign]);
    expect(&rm, 0);
    assert_eq!(rm.json()["forced"], true);
    assert!(!path(&foreign).exists());
    let rm = cli(&["rm", &zeros]);
    expect(&rm, 0);
    assert!(rm.out.contains("zero-filled"), "{rm:?}");
    assert!(!path(&zeros).exists());
    expect(&cli(&["rm", &public]), 5);
}
