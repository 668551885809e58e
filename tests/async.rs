//! Async sends and receives across processes, on tokio (multi-thread and current-thread
//! runtimes) and on `futures::executor` (the test binary re-runs itself as child roles,
//! stdout discarded):
//!
//! - two processes, 100,000 messages each way (`DC_ASYNC_MESSAGES` overrides) through
//!   channels of 8 slots, each process sending and receiving at once with futures: nothing
//!   lost, FIFO per sender, on each of the three executors;
//! - 1,000 futures in one process waiting on 1,000 channels (so the waiter sleeps on more
//!   than 128 words) fed one at a time, in random order, by another process that waits for
//!   each future to report before it sends the next: every future completes when its own
//!   message arrives, and no other does;
//! - cancellation: receive futures (and, the other way, send futures) dropped at random
//!   points (after one poll, by a timer, by losing a `select!` against another future on the
//!   same handle) while another process sends (receives) 20,000 messages: every message is
//!   received exactly once and in order, and nothing stays registered;
//! - a sender process SIGKILLed in the middle of a send while futures wait, and the futures
//!   completing with a second sender's messages (the dead one's slot recovered);
//! - the forms of one process: every `*_async` method, the stream and the sink, the set's
//!   `poll_async`, the fast path that never registers, and a timeout through tokio's timer;
//! - a channel destroyed while futures, a stream and a set's poll wait on it: each ends
//!   (`ChannelDestroyed`, the stream's end, `SetEventKind::Destroyed`), promptly, and nothing
//!   stays registered.
//!
//! The waiter is one per process, so the tests of this binary take turns (`SERIAL`) to see
//! its counts.

#[path = "support/mod.rs"]
mod support;

use core::future::Future;
use core::pin::pin;
use core::task::Poll as TaskPoll;
use core::time::Duration;
use std::sync::Mutex;
use std::time::Instant;

use dragon_channels::dragon_channels_core::Waiter;
use dragon_channels::dragon_channels_core::fault::Step;
use dragon_channels::{
    AsyncWaiter, Channel, ChannelRecvH, ChannelSendH, ChannelSet, Error, Message, Poll,
    SetEventKind, Timeout,
};
use futures::{SinkExt as _, StreamExt as _};
use support::{
    Children, HANG, Rng, attach_env, attrs, die_at, env, hex, new_pool, receiver, role, sender,
    spawn_role, unhex, wait_child, wait_until, watchdog,
};

const DESC_A: &str = "DC_TEST_DESC_A";
const DESC_B: &str = "DC_TEST_DESC_B";
const CTRL: &str = "DC_TEST_CTRL";
const EXEC: &str = "DC_TEST_EXEC";
const FILE: &str = "DC_TEST_FILE";
const COUNT: &str = "DC_TEST_COUNT";

/// The tests of this binary take turns: they share the process's waiter and read its counts.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ----- helpers -----

fn u64_of(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("an 8-byte message"))
}

/// The executors the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exec {
    TokioMulti,
    TokioCurrent,
    Futures,
}

const EXECS: [Exec; 3] = [Exec::TokioMulti, Exec::TokioCurrent, Exec::Futures];

impl Exec {
    fn name(self) -> &'static str {
        match self {
            Self::TokioMulti => "tokio-multi-thread",
            Self::TokioCurrent => "tokio-current-thread",
            Self::Futures => "futures-executor",
        }
    }

    fn from_env() -> Self {
        let n = env(EXEC);
        EXECS.into_iter().find(|e| e.name() == n).expect("executor")
    }

    /// Runs `a` and `b` at once to completion: two tasks on tokio's multi-thread runtime
    /// (two workers), joined on the others.
    fn run2<A, B>(self, a: A, b: B) -> (A::Output, B::Output)
    where
        A: Future + Send + 'static,
        B: Future + Send + 'static,
        A::Output: Send + 'static,
        B::Output: Send + 'static,
    {
        match self {
            Self::TokioMulti => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (a, b) = (tokio::spawn(a), tokio::spawn(b));
                    (a.await.unwrap(), b.await.unwrap())
                })
            }
            Self::TokioCurrent => current_thread().block_on(futures::future::join(a, b)),
            Self::Futures => futures::executor::block_on(futures::future::join(a, b)),
        }
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `0..n` (8-byte little-endian) with `send_bytes_async`.
async fn send_seq(s: ChannelSendH, n: u64) -> ChannelSendH {
    for i in 0..n {
        s.send_bytes_async(&i.to_le_bytes(), 8, None)
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    s
}

/// Receives `n` messages with `recv_bytes_async`; each must be the next of `0..n`.
async fn recv_seq(r: ChannelRecvH, n: u64) -> ChannelRecvH {
    for i in 0..n {
        let got = u64_of(&r.recv_bytes_async().await.unwrap());
        assert_eq!(got, i, "message {i} out of order or lost");
    }
    r
}

fn messages() -> u64 {
    std::env::var("DC_ASYNC_MESSAGES").map_or(100_000, |v| v.parse().unwrap())
}

/// Waits until no future of this process waits and the waiter watches no word.
fn assert_nothing_registered(what: &str) {
    wait_until(what, || {
        let w = AsyncWaiter::now();
        w.waiting == 0 && w.words == 0
    });
}

// ----- two processes, each way -----

/// Two processes each send 100,000 messages to the other and receive the other's at the
/// same time, with futures only, through channels of 8 slots (so both sides wait for slots
/// and for messages all the time): every message arrives, in order, on each executor.
#[test]
fn two_processes_exchange_100k_messages_each_way() {
    const TEST: &str = "two_processes_exchange_100k_messages_each_way";
    let n = messages();
    if role().is_some() {
        let _watchdog = watchdog(300, "exchanging child");
        let out = attach_env(DESC_B);
        let inn = attach_env(DESC_A);
        Exec::from_env().run2(send_seq(sender(&out), n), recv_seq(receiver(&inn), n));
        return;
    }
    let _serial = serial();
    let _watchdog = watchdog(600, TEST);
    for exec in EXECS {
        let (pool, _g) = new_pool("xchg", 1 << 20);
        let a = Channel::create(&pool, 1, attrs(8, 64)).unwrap();
        let b = Channel::create(&pool, 2, attrs(8, 64)).unwrap();
        let t0 = Instant::now();
        let mut child = Children(vec![spawn_role(
            TEST,
            "child",
            &[
                (DESC_A, hex(&a.serialize())),
                (DESC_B, hex(&b.serialize())),
                (EXEC, exec.name().to_owned()),
            ],
        )]);
        exec.run2(send_seq(sender(&a), n), recv_seq(receiver(&b), n));
        let st = wait_child(&mut child.0[0], Duration::from_secs(300));
        assert!(st.success(), "{}: the child failed: {st}", exec.name());
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{}: {n} messages each way in {secs:.2} s ({:.0} messages/s each way)",
            exec.name(),
            n as f64 / secs
        );
        assert_eq!((a.num_msgs(), b.num_msgs()), (0, 0), "{}", exec.name());
        assert_nothing_registered(exec.name());
        a.destroy().unwrap();
        b.destroy().unwrap();
        pool.destroy().unwrap();
    }
}

// ----- 1,000 futures on 1,000 channels -----

/// Removes a file when dropped.
struct FileGuard(std::path::PathBuf);

impl Drop for FileGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// 1,000 tasks on tokio's multi-thread runtime each await a receive on a channel of its own
/// (1,000 words: the waiter sleeps on them in eight groups). Another process sends one
/// message into one channel at a time, in random order, and before the next waits until
/// this process reports which future completed: it must be the one whose channel it sent
/// to, with its message, every time.
#[test]
fn a_thousand_futures_on_a_thousand_channels_fed_by_another_process() {
    const TEST: &str = "a_thousand_futures_on_a_thousand_channels_fed_by_another_process";
    const N: usize = 1_000;
    if role().is_some() {
        let _watchdog = watchdog(300, "feeding child");
        let descs = std::fs::read_to_string(env(FILE)).unwrap();
        let chans: Vec<Channel> = descs
            .lines()
            .map(|l| Channel::attach(&unhex(l)).unwrap())
            .collect();
        assert_eq!(chans.len(), N);
        let ctrl = attach_env(CTRL);
        let (acks, done) = (receiver(&ctrl), sender(&attach_env(DESC_A)));
        let mut order: Vec<usize> = (0..N).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in (1..N).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for &i in &order {
            sender(&chans[i])
                .send_bytes(&(i as u64).to_le_bytes(), 8, None, Timeout::After(HANG))
                .unwrap();
            let woke = u64_of(&acks.recv_bytes(Timeout::After(HANG)).unwrap());
            assert_eq!(
                woke, i as u64,
                "sent to channel {i}, future {woke} completed"
            );
        }
        done.send_bytes(b"done", 4, None, Timeout::After(HANG))
            .unwrap();
        return;
    }
    let _serial = serial();
    let _watchdog = watchdog(300, TEST);
    let (pool, _g) = new_pool("thousand", 16 << 20);
    let chans: Vec<Channel> = (0..N)
        .map(|i| Channel::create(&pool, 100 + i as u64, attrs(2, 64)).unwrap())
        .collect();
    let ctrl = Channel::create(&pool, 1, attrs(4, 64)).unwrap();
    let done = Channel::create(&pool, 2, attrs(4, 64)).unwrap();
    let path = std::env::temp_dir().join(format!("dc-async-{}.desc", std::process::id()));
    let _f = FileGuard(path.clone());
    let lines: Vec<String> = chans.iter().map(|c| hex(&c.serialize())).collect();
    std::fs::write(&path, lines.join("\n")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before = AsyncWaiter::now().registrations;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, ch) in chans.iter().enumerate() {
        let r = receiver(ch);
        let tx = tx.clone();
        rt.spawn(async move {
            let got = r.recv_bytes_async().await;
            let _ = tx.send((i, got));
        });
    }
    wait_until("every future waiting", || AsyncWaiter::now().waiting == N);
    let w = AsyncWaiter::now();
    assert_eq!(w.words, N, "one word per channel");
    assert!(w.running);
    for ch in &chans {
        assert_eq!(ch.core_channel().recv_event().waiters(Waiter::All), 1);
    }
    println!(
        "{N} futures waiting; {} registrations",
        w.registrations - before
    );
    let mut child = Children(vec![spawn_role(
        TEST,
        "child",
        &[
            (FILE, path.display().to_string()),
            (CTRL, hex(&ctrl.serialize())),
            (DESC_A, hex(&done.serialize())),
        ],
    )]);
    let acks = sender(&ctrl);
    let t0 = Instant::now();
    let seen = rt.block_on(async {
        let mut seen = vec![false; N];
        for _ in 0..N {
            let (i, got) = tokio::time::timeout(HANG, rx.recv())
                .await
                .expect("a future completes")
                .unwrap();
            assert_eq!(u64_of(&got.unwrap()), i as u64, "future {i}'s message");
            assert!(!seen[i], "future {i} completed twice");
            seen[i] = true;
            // Exactly one future is done: the one whose message was just sent.
            assert_eq!(
                AsyncWaiter::now().waiting,
                N - seen.iter().filter(|s| **s).count()
            );
            acks.send_bytes_async(&(i as u64).to_le_bytes(), 8, None)
                .await
                .unwrap();
        }
        seen
    });
    assert!(seen.iter().all(|s| *s));
    let st = wait_child(&mut child.0[0], Duration::from_secs(120));
    assert!(st.success(), "the feeding child failed: {st}");
    assert_eq!(receiver(&done).recv_bytes(Timeout::Try).unwrap(), b"done");
    println!(
        "{N} wake-ups one at a time across processes: {:.1} us each (send, wake, ack)",
        t0.elapsed().as_secs_f64() * 1e6 / N as f64
    );
    drop(rt);
    assert_nothing_registered("after the thousand");
    for ch in &chans {
        assert_eq!(ch.core_channel().recv_event().waiters(Waiter::All), 0);
    }
    for c in chans {
        c.destroy().unwrap();
    }
    ctrl.destroy().unwrap();
    done.destroy().unwrap();
    pool.destroy().unwrap();
}

// ----- cancellation -----

fn cancel_count() -> u64 {
    std::env::var("DC_ASYNC_CANCEL").map_or(20_000, |v| v.parse().unwrap())
}

/// Receives with futures dropped at random points while another process sends `0..n`:
/// after one poll, by a timer of 0-200 us, by losing a `select!` against a second receive
/// future on the same handle, or awaited to the end. Returns what was received.
async fn recv_with_cancellations(r: &ChannelRecvH, n: u64, rng: &mut Rng) -> Vec<u64> {
    let mut got = Vec::new();
    let mut dropped = 0u64;
    while (got.len() as u64) < n {
        match rng.below(4) {
            0 => {
                let mut f = pin!(r.recv_bytes_async());
                match futures::poll!(f.as_mut()) {
                    TaskPoll::Ready(b) => got.push(u64_of(&b.unwrap())),
                    TaskPoll::Pending => dropped += 1,
                }
            }
            1 => {
                let d = Duration::from_micros(rng.below(200));
                match tokio::time::timeout(d, r.recv_bytes_async()).await {
                    Ok(b) => got.push(u64_of(&b.unwrap())),
                    Err(_) => dropped += 1,
                }
            }
            2 => {
                tokio::select! {
                    b = r.recv_bytes_async() => got.push(u64_of(&b.unwrap())),
                    b = r.recv_bytes_async() => got.push(u64_of(&b.unwrap())),
                }
            }
            _ => got.push(u64_of(&r.recv_bytes_async().await.unwrap())),
        }
    }
    println!("received {n} with {dropped} receive futures dropped before completing");
    got
}

/// Sends `0..n` with futures dropped at random points (as [`recv_with_cancellations`]); a
/// value whose future was dropped is sent again by the next one.
async fn send_with_cancellations(s: &ChannelSendH, n: u64, rng: &mut Rng) {
    let mut i = 0u64;
    let mut dropped = 0u64;
    while i < n {
        let b = i.to_le_bytes();
        let sent = match rng.below(3) {
            0 => {
                let mut f = pin!(s.send_bytes_async(&b, 8, None));
                match futures::poll!(f.as_mut()) {
                    TaskPoll::Ready(r) => r.map(|()| true),
                    TaskPoll::Pending => Ok(false),
                }
            }
            1 => {
                let d = Duration::from_micros(rng.below(200));
                match tokio::time::timeout(d, s.send_bytes_async(&b, 8, None)).await {
                    Ok(r) => r.map(|()| true),
                    Err(_) => Ok(false),
                }
            }
            _ => s.send_bytes_async(&b, 8, None).await.map(|()| true),
        };
        if sent.unwrap() {
            i += 1;
        } else {
            dropped += 1;
        }
    }
    println!("sent {n} with {dropped} send futures dropped before completing");
}

/// Receive futures dropped at random points while another process sends 20,000 messages
/// into a channel of 4 slots; then send futures dropped at random points while another
/// process receives. Every message is received exactly once and in order; afterwards no
/// future is registered and the process is registered on no word of the channel.
#[test]
fn futures_dropped_at_random_points_lose_and_duplicate_nothing() {
    const TEST: &str = "futures_dropped_at_random_points_lose_and_duplicate_nothing";
    let n = cancel_count();
    if let Some(r) = role() {
        let _watchdog = watchdog(300, "cancellation child");
        let ch = attach_env(DESC_A);
        let n: u64 = env(COUNT).parse().unwrap();
        // Pauses now and then, so that the other side's futures often wait.
        let mut rng = Rng(u64::from(std::process::id()) | 1);
        let mut pause = || {
            if rng.below(16) == 0 {
                std::thread::sleep(Duration::from_micros(rng.below(300)));
            }
        };
        if r == "sender" {
            let s = sender(&ch);
            for i in 0..n {
                pause();
                s.send_bytes(&i.to_le_bytes(), 8, None, Timeout::After(HANG))
                    .unwrap();
            }
        } else {
            let r = receiver(&ch);
            for i in 0..n {
                pause();
                let got = u64_of(&r.recv_bytes(Timeout::After(HANG)).unwrap());
                assert_eq!(got, i, "received out of order, twice, or lost");
            }
            assert!(matches!(
                r.recv_bytes(Timeout::Try),
                Err(Error::ChannelEmpty)
            ));
        }
        return;
    }
    let _serial = serial();
    let _watchdog = watchdog(300, TEST);
    let (pool, _g) = new_pool("cancel", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(4, 64)).unwrap();
    let envs = [(DESC_A, hex(&ch.serialize())), (COUNT, n.to_string())];
    let rt = current_thread();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);

    let mut child = Children(vec![spawn_role(TEST, "sender", &envs)]);
    let r = receiver(&ch);
    let got = rt.block_on(recv_with_cancellations(&r, n, &mut rng));
    let st = wait_child(&mut child.0[0], Duration::from_secs(120));
    assert!(st.success(), "the sending child failed: {st}");
    assert!(matches!(
        r.recv_bytes(Timeout::Try),
        Err(Error::ChannelEmpty)
    ));
    let want: Vec<u64> = (0..n).collect();
    assert!(
        got == want,
        "received something twice, lost or out of order"
    );
    assert_nothing_registered("after the receive cancellations");
    assert_eq!(ch.core_channel().recv_event().waiters(Waiter::All), 0);

    let mut child = Children(vec![spawn_role(TEST, "receiver", &envs)]);
    let s = sender(&ch);
    rt.block_on(send_with_cancellations(&s, n, &mut rng));
    let st = wait_child(&mut child.0[0], Duration::from_secs(120));
    assert!(
        st.success(),
        "the receiving child saw a loss or a duplicate: {st}"
    );
    assert_eq!(ch.num_msgs(), 0);
    assert_nothing_registered("after the send cancellations");
    assert_eq!(ch.core_channel().send_event().waiters(Waiter::All), 0);
    drop((r, s, rt));
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

// ----- a sender killed while futures wait -----

/// 16 futures (on `futures::executor`, in a thread of their own) await receives on 16
/// channels. A sender process sends into the first 8, then stops in the middle of a send
/// into channel 8 (its slot claimed, not published) and is SIGKILLed there. A second
/// sender process then sends into all 16: the futures of channels 8-15 complete with its
/// messages (the one behind the dead sender's claim once that is recovered), those of 0-7
/// had completed with the first sender's. The dead sender's message appears nowhere.
#[test]
fn a_sender_killed_mid_send_while_futures_wait() {
    const TEST: &str = "a_sender_killed_mid_send_while_futures_wait";
    const N: usize = 16;
    const FIRST: usize = 8;
    if let Some(r) = role() {
        let _watchdog = watchdog(120, "killed-sender child");
        let descs = env(DESC_A);
        let chans: Vec<Channel> = descs
            .split(',')
            .map(|h| Channel::attach(&unhex(h)).unwrap())
            .collect();
        let tag = if r == "victim" { b'A' } else { b'B' };
        let upto = if r == "victim" { FIRST } else { N };
        for (i, ch) in chans.iter().enumerate().take(upto) {
            sender(ch)
                .send_bytes(&[tag, i as u8], 2, None, Timeout::After(HANG))
                .unwrap();
        }
        if r == "victim" {
            let s = sender(&chans[FIRST]);
            let died = die_at(Step::SendClaimed, || {
                s.send_bytes(b"doomed", 6, None, Timeout::Try)
            });
            assert!(died.is_err(), "the send stops at its claim: {died:?}");
            sender(&attach_env(CTRL))
                .send_bytes(b"k", 1, None, Timeout::After(HANG))
                .unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        return;
    }
    let _serial = serial();
    let _watchdog = watchdog(240, TEST);
    let (pool, _g) = new_pool("killed", 1 << 20);
    let chans: Vec<Channel> = (0..N)
        .map(|i| Channel::create(&pool, 100 + i as u64, attrs(4, 64)).unwrap())
        .collect();
    let ctrl = Channel::create(&pool, 1, attrs(4, 64)).unwrap();
    let descs = chans
        .iter()
        .map(|c| hex(&c.serialize()))
        .collect::<Vec<_>>()
        .join(",");
    let recvhs: Vec<ChannelRecvH> = chans.iter().map(receiver).collect();
    let got = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            futures::executor::block_on(futures::future::join_all(
                recvhs.iter().map(ChannelRecvH::recv_bytes_async),
            ))
        });
        wait_until("the futures waiting", || AsyncWaiter::now().waiting >= N);
        let mut victim = Children(vec![spawn_role(
            TEST,
            "victim",
            &[(DESC_A, descs.clone()), (CTRL, hex(&ctrl.serialize()))],
        )]);
        assert_eq!(
            receiver(&ctrl).recv_bytes(Timeout::After(HANG)).unwrap(),
            b"k"
        );
        wait_until("the first eight completed", || {
            AsyncWaiter::now().waiting == N - FIRST
        });
        victim.0[0].kill().unwrap();
        victim.0[0].wait().unwrap();
        let mut second = Children(vec![spawn_role(TEST, "second", &[(DESC_A, descs.clone())])]);
        let st = wait_child(&mut second.0[0], Duration::from_secs(120));
        assert!(st.success(), "the second sender failed: {st}");
        waiter.join().unwrap()
    });
    for (i, r) in got.into_iter().enumerate() {
        let tag = if i < FIRST { b'A' } else { b'B' };
        assert_eq!(r.unwrap(), [tag, i as u8], "future {i}");
    }
    for (i, r) in recvhs.iter().enumerate() {
        if i < FIRST {
            assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [b'B', i as u8]);
        }
        assert!(
            matches!(r.recv_bytes(Timeout::Try), Err(Error::ChannelEmpty)),
            "channel {i}: only the senders' completed messages"
        );
    }
    assert_nothing_registered("after the recovery");
    drop(recvhs);
    for c in chans {
        c.destroy().unwrap();
    }
    ctrl.destroy().unwrap();
    pool.destroy().unwrap();
}

// ----- one process: every form -----

/// Every async form, in one process: copies, transfers, destination messages, bytes, the
/// stream and the sink, the set's poll; the fast path registers nothing; a send future
/// waits for a slot and a receive future for a message; a timeout through tokio's timer
/// drops the future with nothing received.
#[test]
fn every_async_form_in_one_process() {
    let _serial = serial();
    let _watchdog = watchdog(120, "every_async_form_in_one_process");
    let (pool, _g) = new_pool("forms", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(2, 64)).unwrap();
    let (s, r) = (sender(&ch), receiver(&ch));
    let rt = current_thread();
    rt.block_on(async {
        // The fast path: a message there, a slot free: no registration.
        let before = AsyncWaiter::now().registrations;
        s.send_bytes_async(b"ab", 2, None).await.unwrap();
        assert_eq!(r.recv_bytes_async().await.unwrap(), b"ab");
        assert_eq!(
            AsyncWaiter::now().registrations,
            before,
            "fast path registered"
        );

        // Message copy, transfer (a large one, zero copy), destination messages.
        let mut m = Message::create_alloc(&pool, 3).unwrap();
        m.bytes_memview().unwrap().copy_from_slice(b"xyz");
        s.send_async(&m, None).await.unwrap();
        assert_eq!(r.recv_async().await.unwrap().bytes().unwrap(), b"xyz");
        let mut big = Message::create_alloc(&pool, 1000).unwrap();
        big.bytes_memview().unwrap().fill(7);
        s.send_transfer_async(big).await.unwrap();
        let mut dest = Message::create_alloc(&pool, 1000).unwrap();
        r.recv_into_async(&mut dest).await.unwrap();
        assert_eq!(dest.bytes().unwrap(), &[7u8; 1000][..]);
        let mut via = Message::create_alloc(&pool, 8).unwrap();
        s.send_bytes_async(b"via", 3, Some(&mut via)).await.unwrap();
        assert!(!via.has_memory(), "the destination's memory was sent");
        assert_eq!(r.recv_bytes_async().await.unwrap(), b"via");

        // A receive that waits, woken by a send from another thread.
        let t = std::thread::spawn({
            let s = sender(&ch);
            move || {
                std::thread::sleep(Duration::from_millis(20));
                s.send_bytes(b"late", 4, None, Timeout::Block).unwrap();
            }
        });
        assert_eq!(r.recv_bytes_async().await.unwrap(), b"late");
        t.join().unwrap();

        // A send that waits for a slot, freed by a receive from another thread.
        s.send_bytes_async(b"1", 1, None).await.unwrap();
        s.send_bytes_async(b"2", 1, None).await.unwrap();
        let t = std::thread::spawn({
            let r = receiver(&ch);
            move || {
                std::thread::sleep(Duration::from_millis(20));
                r.recv_bytes(Timeout::Block).unwrap()
            }
        });
        s.send_bytes_async(b"3", 1, None).await.unwrap();
        assert_eq!(t.join().unwrap(), b"1");
        assert_eq!(r.recv_bytes_async().await.unwrap(), b"2");
        assert_eq!(r.recv_bytes_async().await.unwrap(), b"3");

        // A timeout from the executor's timer: the future is dropped, nothing received.
        let t0 = Instant::now();
        let d = Duration::from_millis(30);
        assert!(tokio::time::timeout(d, r.recv_bytes_async()).await.is_err());
        assert!(t0.elapsed() >= d);
        assert_eq!(AsyncWaiter::now().waiting, 0, "the dropped future left");
        assert_eq!(ch.core_channel().recv_event().waiters(Waiter::All), 0);
    });

    // Stream and sink.
    let (s2, r2) = (sender(&ch), receiver(&ch));
    rt.block_on(async {
        let mut sink = s2.into_sink();
        let mut stream = r2.into_stream();
        let feed = async {
            for i in 0u8..50 {
                sink.send(vec![i]).await.unwrap();
            }
            sink.close().await.unwrap();
        };
        let take = async {
            for i in 0u8..50 {
                assert_eq!(stream.next().await.unwrap().unwrap(), [i]);
            }
        };
        futures::join!(feed, take);
    });

    // The set's poll.
    let others: Vec<Channel> = (0..3)
        .map(|i| Channel::create(&pool, 10 + i, attrs(2, 64)).unwrap())
        .collect();
    let mut set = ChannelSet::new(&others, Poll::In).unwrap();
    rt.block_on(async {
        let t = std::thread::spawn({
            let s = sender(&others[2]);
            move || {
                std::thread::sleep(Duration::from_millis(20));
                s.send_bytes(b"s", 1, None, Timeout::Block).unwrap();
            }
        });
        let ev = set.poll_async().await.unwrap();
        assert_eq!((ev.index, ev.kind), (2, SetEventKind::Ready(Poll::In)));
        t.join().unwrap();
    });
    assert_nothing_registered("after the forms");
    drop((set, s, r));
    for c in others {
        c.destroy().unwrap();
    }
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// A channel destroyed while a receive future, a send future (on a full channel), a stream
/// and a set's poll wait on it: the destroy wakes them through the waiter, each ends (the
/// futures with `ChannelDestroyed`, the stream with `None`, the set's poll with
/// `Destroyed`), and the waiter's entries and registrations are gone.
#[test]
fn a_channel_destroyed_under_waiting_futures_ends_them() {
    let _serial = serial();
    let _watchdog = watchdog(120, "a_channel_destroyed_under_waiting_futures_ends_them");
    let (pool, _g) = new_pool("destroyed", 1 << 20);
    let empty = Channel::create(&pool, 1, attrs(2, 64)).unwrap();
    let full = Channel::create(&pool, 2, attrs(1, 64)).unwrap();
    let (r, s) = (receiver(&empty), sender(&full));
    s.send_bytes(b"x", 1, None, Timeout::Try).unwrap();
    let mut stream = receiver(&empty).into_stream();
    let mut set = ChannelSet::new(core::slice::from_ref(&empty), Poll::In).unwrap();
    let rt = current_thread();
    let (a, b, c, d) = rt.block_on(async {
        let destroyer = tokio::task::spawn_blocking({
            let (empty, full) = (empty.clone(), full.clone());
            move || {
                wait_until("four waiting", || AsyncWaiter::now().waiting >= 4);
                empty.destroy().unwrap();
                full.destroy().unwrap();
            }
        });
        let out = tokio::time::timeout(HANG, async {
            futures::join!(
                r.recv_bytes_async(),
                s.send_bytes_async(b"y", 1, None),
                stream.next(),
                set.poll_async(),
            )
        })
        .await
        .expect("the destroy ends every wait");
        destroyer.await.unwrap();
        out
    });
    assert!(matches!(a, Err(Error::ChannelDestroyed)), "{a:?}");
    assert!(matches!(b, Err(Error::ChannelDestroyed)), "{b:?}");
    assert!(c.is_none(), "the stream ends: {c:?}");
    assert_eq!(d.unwrap().kind, SetEventKind::Destroyed);
    assert_nothing_registered("after the destroy");
    drop((r, s, stream, set));
    pool.destroy().unwrap();
}
