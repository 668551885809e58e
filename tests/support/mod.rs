//! Helpers shared by the std adapter's integration tests: unique pool names, `/dev/shm`
//! cleanup guards, watchdogs, and re-running the test binary as a child role.
#![allow(dead_code)]

use core::time::Duration;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use dragon_channels::dragon_channels_core::fault::{self, Step};
use dragon_channels::{Channel, ChannelAttrs, ChannelRecvH, ChannelSendH, MemoryPool};

#[path = "../../core/tests/common/watchdog.rs"]
mod watchdog;
#[allow(unused_imports)] // each test binary uses a different part
pub use watchdog::{Failed, watchdog};

/// Environment variable that names the role a re-executed test binary plays.
pub const ROLE: &str = "DC_TEST_ROLE";

/// A pool name unique to this process and `tag` (at most 29 bytes).
pub fn unique_name(tag: &str) -> String {
    let name = format!("t{}-{tag}", std::process::id());
    assert!(name.len() <= 29, "test pool name {name:?} too long");
    name
}

/// Removes `/dev/shm/<name>` when dropped (the test may have destroyed it already).
pub struct ShmGuard(pub String);

impl ShmGuard {
    /// Guards `name`, removing a stale file of that name first.
    pub fn new(name: &str) -> Self {
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        Self(name.to_owned())
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
    }
}

/// The role this process plays, if it is a re-executed child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Re-runs this test binary as `role`, running only `test` (its full name), with `envs`.
/// The child's stdout (libtest's summary lines) is discarded; stderr is inherited.
pub fn spawn_role(test: &str, role: &str, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child role")
}

/// Waits for `child` at most `limit`; kills it and panics when it takes longer.
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills children that are still running when dropped (a failing test leaves none behind).
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Lowercase hex of `b` (descriptors travel through the environment as hex).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses [`hex`].
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// CPU time this thread has used.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Attaches to the channel whose descriptor (hex) is in environment variable `var` (a child
/// role's channel).
pub fn attach_env(var: &str) -> Channel {
    let ser = std::env::var(var).unwrap_or_else(|_| panic!("descriptor in ${var}"));
    Channel::attach(&unhex(&ser)).expect("child attaches to the channel")
}

/// The step this process dies at (one death per process).
static DIE_AT: OnceLock<Step> = OnceLock::new();

fn die_hook(_owner: u32, step: Step) -> bool {
    DIE_AT.get() == Some(&step)
}

/// Runs `op` with the core's fault hook armed for `step`: the operation returns `Died` there,
/// leaving what a crash at that step would.
pub fn die_at<T>(step: Step, op: impl FnOnce() -> T) -> T {
    DIE_AT.set(step).expect("one death per process");
    fault::set_hook(Some(die_hook));
    let r = op();
    fault::set_hook(None);
    r
}

/// A limit for waits that only guard against hangs (never a timing assertion).
pub const HANG: Duration = Duration::from_secs(60);

/// The value of environment variable `var` (a child role's argument); panics without it.
pub fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} in the environment"))
}

/// A new pool of `size` bytes named after `tag`, and the guard that removes its file.
pub fn new_pool(tag: &str, size: usize) -> (MemoryPool, ShmGuard) {
    let name = unique_name(tag);
    let guard = ShmGuard::new(&name);
    (
        MemoryPool::create(size, &name, 7).expect("create pool"),
        guard,
    )
}

/// Channel attributes of `capacity` slots of `block_size` inline bytes.
pub fn attrs(capacity: u32, block_size: u32) -> Option<ChannelAttrs> {
    Some(ChannelAttrs {
        capacity,
        block_size,
    })
}

/// An open send handle of `ch`.
pub fn sender(ch: &Channel) -> ChannelSendH {
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    s
}

/// An open receive handle of `ch`.
pub fn receiver(ch: &Channel) -> ChannelRecvH {
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    r
}

/// Polls `cond` until it holds; panics (naming `what`) after [`HANG`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < HANG,
            "still waiting for {what} after {HANG:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A small xorshift generator (each test its own seed).
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
