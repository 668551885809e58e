//! Permissions of pool files: a pool file is private to the user that made it (mode 0600),
//! and a process of another user can neither attach to the pool or its channels nor take
//! its name, and is told so with a clear error.
//!
//! The cross-user part runs as root: the test binary is copied where any user can run it
//! and re-run as a child role under the user `nobody`; the child reports what each attempt
//! gave on stderr and the parent checks it. Without root it prints "skipped: ..." instead.

#[path = "support/mod.rs"]
mod support;

use core::time::Duration;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use dragon_channels::{Channel, ChannelAttrs, Error, MemoryPool, MemoryPoolError, Timeout};
use support::{Children, ROLE, ShmGuard, hex, role, unhex, unique_name, wait_child, watchdog};

/// Environment variables that hand the child the parent's pool and channel.
const POOL: &str = "DC_TEST_POOL";
const POOL_DESC: &str = "DC_TEST_POOL_DESC";
const CHAN_DESC: &str = "DC_TEST_DESC";
/// A name the child may use for a pool of its own.
const OWN_POOL: &str = "DC_TEST_OWN_POOL";
/// Prefix of the child's report lines on stderr.
const REPORT: &str = "perm-report";

/// What a pool operation gave, in a form the parent can match.
fn classify_pool<T>(r: Result<T, MemoryPoolError>) -> String {
    let e = match r {
        Ok(_) => return "ok".to_owned(),
        Err(e) => e,
    };
    match &e {
        MemoryPoolError::Io { op, source, .. } => format!("io {op} {:?} | {e}", source.kind()),
        MemoryPoolError::AlreadyExists(_) => format!("already-exists | {e}"),
        _ => format!("other {e:?} | {e}"),
    }
}

/// The child, running as `nobody`: tries to use the parent's pool and reports each result.
fn child_as_nobody() {
    let _watchdog = watchdog(30, "permissions child");
    let name = std::env::var(POOL).expect("pool name");
    let pool_desc = unhex(&std::env::var(POOL_DESC).expect("pool descriptor"));
    let chan_desc = unhex(&std::env::var(CHAN_DESC).expect("channel descriptor"));
    let own = std::env::var(OWN_POOL).expect("own pool name");
    let report = |what: &str, result: String| eprintln!("{REPORT} {what}: {result}");

    report("uid", rustix::process::geteuid().as_raw().to_string());
    report("attach", classify_pool(MemoryPool::attach(&name)));
    report(
        "attach_serialized",
        classify_pool(MemoryPool::attach_serialized(&pool_desc)),
    );
    report(
        "channel_attach",
        match Channel::attach(&chan_desc) {
            Ok(_) => "ok".to_owned(),
            Err(Error::MemoryPool(e)) => format!("pool-error {}", classify_pool::<()>(Err(e))),
            Err(e) => format!("other {e:?} | {e}"),
        },
    );
    report(
        "create_same_name",
        classify_pool(MemoryPool::create(4096, &name, 0)),
    );
    // Sanity: this user can make pools of its own, so the failures above are about the
    // other user's file, not about /dev/shm.
    report(
        "create_own",
        classify_pool(MemoryPool::create(64 << 10, &own, 0).and_then(MemoryPool::destroy)),
    );
}

/// The uid and gid of `nobody`, from `/etc/passwd`.
fn nobody() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("nobody:"))?;
    let mut f = line.split(':').skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// A directory any user can read and enter, removed with its contents when dropped.
struct PublicDir(PathBuf);

impl PublicDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("dc-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("make a temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }
}

impl Drop for PublicDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pool_file_is_private_to_its_user() {
    const TEST: &str = "pool_file_is_private_to_its_user";
    if role().is_some() {
        return child_as_nobody();
    }
    let _watchdog = watchdog(60, TEST);
    let name = unique_name("perm");
    let _g = ShmGuard::new(&name);
    let own = unique_name("perm-own");
    let _g_own = ShmGuard::new(&own);
    let pool = MemoryPool::create(1 << 20, &name, 5).unwrap();
    let ch = Channel::create(
        &pool,
        1,
        Some(ChannelAttrs {
            capacity: 4,
            block_size: 64,
        }),
    )
    .unwrap();
    let base = pool.stats().unwrap();

    // The file: mode 0600, owned by this process's user.
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "pool file mode");
    assert_eq!(
        meta.uid(),
        rustix::process::geteuid().as_raw(),
        "pool file owner"
    );

    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: {TEST} needs root to run a child as another user (mode checked)");
        return;
    }
    let Some((uid, gid)) = nobody() else {
        eprintln!("skipped: {TEST}: no user `nobody` in /etc/passwd (mode checked)");
        return;
    };
    assert_ne!(uid, 0);

    // The test binary may live where `nobody` cannot enter (a home directory): run a copy
    // from a directory anyone can read.
    let dir = PublicDir::new();
    let exe = dir.0.join("permissions-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).expect("copy the test binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spawned = Command::new(&exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, "as-nobody")
        .env(POOL, &name)
        .env(POOL_DESC, hex(&pool.serialize()))
        .env(CHAN_DESC, hex(&ch.serialize()))
        .env(OWN_POOL, &own)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => Children(vec![c]),
        Err(e) => {
            // E.g. a temp dir mounted noexec.
            eprintln!(
                "skipped: {TEST}: cannot run the test binary as nobody from {dir:?}: {e}",
                dir = dir.0
            );
            return;
        }
    };
    let st = wait_child(&mut child.0[0], Duration::from_secs(30));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.0[0].stderr.take().unwrap(), &mut out).unwrap();
    eprint!("{out}");
    assert!(st.success(), "child as nobody failed: {st}");
    let got = |what: &str| -> String {
        let key = format!("{REPORT} {what}: ");
        out.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("child did not report {what:?}"))
            .to_owned()
    };

    assert_eq!(got("uid"), uid.to_string(), "the child ran as nobody");
    // Attaching by name or descriptor, directly or through a channel: the open fails with
    // the OS's permission error, and the text names the pool, says "permission denied" and
    // what to do.
    for what in ["attach", "attach_serialized"] {
        let r = got(what);
        assert!(r.starts_with("io open PermissionDenied | "), "{what}: {r}");
        assert!(r.contains(&format!("{name:?}")), "{what}: {r}");
        assert!(
            r.to_lowercase().contains("permission denied"),
            "{what}: {r}"
        );
        assert!(
            r.contains("attach as that user"),
            "says what to do: {what}: {r}"
        );
    }
    let r = got("channel_attach");
    assert!(
        r.starts_with("pool-error io open PermissionDenied | "),
        "channel_attach: {r}"
    );
    // Nor can the other user take the name.
    assert!(
        got("create_same_name").starts_with("already-exists | "),
        "{}",
        got("create_same_name")
    );
    assert_eq!(
        got("create_own"),
        "ok",
        "the other user can make its own pools"
    );

    // The pool is untouched: no party, allocation or message of the child in it.
    assert_eq!(pool.live_parties(), vec![pool.party_id()]);
    assert_eq!(pool.stats().unwrap(), base);
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    s.send_bytes(b"still mine", 10, None, Timeout::Try).unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"still mine");
    assert!(
        std::fs::metadata(format!("/dev/shm/{own}")).is_err(),
        "the child destroyed its own pool"
    );
    drop((s, r));
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}
