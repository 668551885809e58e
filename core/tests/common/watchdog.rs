//! A watchdog for tests that wait on other threads or processes: if the guarded scope is
//! still running after its limit, the whole test process aborts with a message, so a hung
//! test fails CI instead of stalling it. Dropping the guard disarms it.

#![allow(clippy::disallowed_types)] // test support: plain atomics, not the crate's `sync`

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::io::Write as _;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Disarms the watchdog when dropped.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Arms a watchdog of `secs` seconds for `what`. Under Miri (whose clock and scheduler make
/// wall-clock limits meaningless) it does nothing.
#[must_use = "the watchdog is disarmed when the guard is dropped"]
pub fn watchdog(secs: u64, what: &'static str) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    if cfg!(miri) {
        return Watchdog { done, thread: None };
    }
    let flag = done.clone();
    let thread = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(secs);
        // SYNC: Acquire <-> the guard's Release store in `drop`.
        while !flag.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= end {
                // Straight to the stream: `eprintln!` would go to libtest's capture buffer,
                // which the abort discards.
                let _ = writeln!(
                    std::io::stderr(),
                    "watchdog: {what} still running after {secs} s, aborting"
                );
                std::process::abort();
            }
            std::thread::park_timeout(end - now);
        }
    });
    Watchdog {
        done,
        thread: Some(thread),
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // SYNC: Release <-> the watchdog thread's Acquire load.
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A flag that worker threads raise when one of them panics, so that the others stop
/// waiting for it and the test fails at once instead of hanging.
#[derive(Default)]
pub struct Failed(AtomicBool);

impl Failed {
    /// A guard for one worker thread: raises the flag if the thread unwinds.
    pub fn guard(&self) -> FailOnPanic<'_> {
        FailOnPanic(self)
    }

    /// Panics if another thread failed; call it in every wait loop.
    pub fn check(&self) {
        // SYNC: Acquire <-> `FailOnPanic::drop`'s Release store.
        assert!(
            !self.0.load(Ordering::Acquire),
            "another thread of this test failed"
        );
    }
}

/// Raises its [`Failed`] flag when dropped during a panic.
pub struct FailOnPanic<'a>(&'a Failed);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SYNC: Release <-> `Failed::check`'s Acquire load.
            self.0.0.store(true, Ordering::Release);
        }
    }
}
