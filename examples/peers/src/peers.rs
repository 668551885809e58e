//! Peer mechanisms: iceoryx2 pub/sub, crossbeam-channel (threads), a Unix domain socket
//! pair, a pipe pair, POSIX message queues, ipc-channel.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ARG, Lat, ROLE, Res, STOP, cpu_ns, hist, lat, reap, record, spawn};

fn de<E: std::fmt::Debug>(e: E) -> Box<dyn std::error::Error> {
    format!("{e:?}").into()
}

fn warmup(n: usize) -> usize {
    (n / 10).max(100)
}

// ----- byte streams over inherited descriptors (UDS pair, pipe pair) -----

/// Spawns `role` with `r` as its fd 3 (read) and `w` as its fd 4 (write).
fn spawn_fds(role: &str, arg: &str, r: RawFd, w: RawFd) -> Res<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE, role)
        .env(ARG, arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r2 = libc::fcntl(r, libc::F_DUPFD, 100);
            let w2 = libc::fcntl(w, libc::F_DUPFD, 100);
            if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

fn stream_pingpong(r: &mut impl Read, w: &mut impl Write, size: usize, n: usize) -> Res<Lat> {
    let warm = warmup(n);
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut h = hist();
    for i in 0..(warm + n) as u64 {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = Instant::now();
        w.write_all(&msg)?;
        r.read_exact(&mut back)?;
        let dt = t0.elapsed();
        if back[..8] != i.to_le_bytes() {
            return Err("stream: wrong echo".into());
        }
        if i as usize >= warm {
            record(&mut h, dt);
        }
    }
    msg[..8].copy_from_slice(&STOP.to_le_bytes());
    w.write_all(&msg)?;
    Ok(lat(&h))
}

/// The stream peer: echoes `size`-byte messages from fd 3 to fd 4 until the stop marker.
pub fn stream_peer(arg: &str) -> Res<()> {
    let size: usize = arg.parse()?;
    // SAFETY: fds 3 and 4 were set up by `spawn_fds` for this process and are owned here.
    let (mut r, mut w) = unsafe { (File::from_raw_fd(3), File::from_raw_fd(4)) };
    let mut buf = vec![0u8; size];
    loop {
        r.read_exact(&mut buf)?;
        if buf[..8] == STOP.to_le_bytes() {
            return Ok(());
        }
        w.write_all(&buf)?;
    }
}

/// Unix domain socket pair (`SOCK_STREAM`), one end in each process.
pub fn uds(size: usize, n: usize) -> Res<Lat> {
    let (mut a, b) = UnixStream::pair()?;
    let child = spawn_fds("stream", &size.to_string(), b.as_raw_fd(), b.as_raw_fd())?;
    drop(b);
    let mut a2 = a.try_clone()?;
    let r = stream_pingpong(&mut a, &mut a2, size, n);
    reap(child, "uds")?;
    r
}

fn pipe() -> Res<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Two pipes, one each way.
pub fn pipes(size: usize, n: usize) -> Res<Lat> {
    let (p1r, p1w) = pipe()?;
    let (p2r, p2w) = pipe()?;
    let child = spawn_fds(
        "stream",
        &size.to_string(),
        p1r.as_raw_fd(),
        p2w.as_raw_fd(),
    )?;
    drop((p1r, p2w));
    let (mut w, mut r) = (File::from(p1w), File::from(p2r));
    let res = stream_pingpong(&mut r, &mut w, size, n);
    reap(child, "pipe")?;
    res
}

// ----- POSIX message queues -----

struct Mq(libc::mqd_t);

impl Mq {
    fn open(name: &str, size: usize, create: bool) -> Res<Self> {
        let c = CString::new(name)?;
        // SAFETY: a zeroed mq_attr is valid; the fields we use are set below.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = 4;
        attr.mq_msgsize = size as _;
        let fd = if create {
            // SAFETY: valid C string; the variadic mode and attr pointer are what mq_open
            // reads with O_CREAT.
            unsafe {
                libc::mq_open(
                    c.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                    0o600 as libc::mode_t,
                    &attr as *const libc::mq_attr,
                )
            }
        } else {
            // SAFETY: valid C string.
            unsafe { libc::mq_open(c.as_ptr(), libc::O_RDWR) }
        };
        if fd < 0 {
            return Err(format!("mq_open {name}: {}", std::io::Error::last_os_error()).into());
        }
        Ok(Self(fd))
    }

    fn send(&self, b: &[u8]) -> Res<()> {
        // SAFETY: `b` is valid for reads of its length.
        if unsafe { libc::mq_send(self.0, b.as_ptr().cast(), b.len(), 0) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    fn recv(&self, b: &mut [u8]) -> Res<usize> {
        // SAFETY: `b` is valid for writes of its length.
        let n = unsafe {
            libc::mq_receive(self.0, b.as_mut_ptr().cast(), b.len(), std::ptr::null_mut())
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(n as usize)
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns.
        unsafe { libc::mq_close(self.0) };
    }
}

fn mq_unlink(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: valid C string.
        unsafe { libc::mq_unlink(c.as_ptr()) };
    }
}

/// POSIX message queues (one each way, 4 messages deep).
pub fn mq(size: usize, n: usize) -> Res<Lat> {
    let pid = std::process::id();
    let (na, nb) = (format!("/dcb-{pid}-a"), format!("/dcb-{pid}-b"));
    let run = || -> Res<Lat> {
        let a = Mq::open(&na, size, true)?;
        let b = Mq::open(&nb, size, true)?;
        let child = spawn("mq", &format!("{na}:{nb}:{size}"))?;
        let warm = warmup(n);
        let mut msg = vec![0u8; size];
        let mut back = vec![0u8; size];
        let mut h = hist();
        let mut body = || -> Res<()> {
            for i in 0..(warm + n) as u64 {
                msg[..8].copy_from_slice(&i.to_le_bytes());
                let t0 = Instant::now();
                a.send(&msg)?;
                b.recv(&mut back)?;
                let dt = t0.elapsed();
                if back[..8] != i.to_le_bytes() {
                    return Err("mq: wrong echo".into());
                }
                if i as usize >= warm {
                    record(&mut h, dt);
                }
            }
            msg[..8].copy_from_slice(&STOP.to_le_bytes());
            a.send(&msg)
        };
        let r = body();
        reap(child, "mq")?;
        r?;
        Ok(lat(&h))
    };
    let r = run();
    mq_unlink(&na);
    mq_unlink(&nb);
    r
}

/// The mq peer.
pub fn mq_peer(arg: &str) -> Res<()> {
    let v: Vec<&str> = arg.split(':').collect();
    let size: usize = v.get(2).ok_or("bad argument")?.parse()?;
    let a = Mq::open(v[0], size, false)?;
    let b = Mq::open(v[1], size, false)?;
    let mut buf = vec![0u8; size];
    loop {
        let k = a.recv(&mut buf)?;
        if buf[..8] == STOP.to_le_bytes() {
            return Ok(());
        }
        b.send(&buf[..k])?;
    }
}

// ----- ipc-channel -----

type Boot = (
    ipc_channel::ipc::IpcBytesReceiver,
    ipc_channel::ipc::IpcBytesSender,
);

/// ipc-channel byte channels (`IpcBytesSender` / `IpcBytesReceiver`), one each way.
pub fn ipc(size: usize, n: usize) -> Res<Lat> {
    use ipc_channel::ipc::{self, IpcOneShotServer, IpcSender};
    let (server, name) = IpcOneShotServer::<IpcSender<Boot>>::new()?;
    let child = spawn("ipc", &format!("{name}\n{size}"))?;
    let run = || -> Res<Lat> {
        let (_, boot) = server.accept().map_err(de)?;
        let (ping_tx, ping_rx) = ipc::bytes_channel()?;
        let (pong_tx, pong_rx) = ipc::bytes_channel()?;
        boot.send((ping_rx, pong_tx)).map_err(de)?;
        let warm = warmup(n);
        let mut msg = vec![0u8; size];
        let mut h = hist();
        for i in 0..(warm + n) as u64 {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            let t0 = Instant::now();
            ping_tx.send(&msg)?;
            let back = pong_rx.recv().map_err(de)?;
            let dt = t0.elapsed();
            if back.len() != size || back[..8] != i.to_le_bytes() {
                return Err("ipc-channel: wrong echo".into());
            }
            if i as usize >= warm {
                record(&mut h, dt);
            }
        }
        msg[..8].copy_from_slice(&STOP.to_le_bytes());
        ping_tx.send(&msg)?;
        Ok(lat(&h))
    };
    let r = run();
    reap(child, "ipc-channel")?;
    r
}

/// The ipc-channel peer.
pub fn ipc_peer(arg: &str) -> Res<()> {
    use ipc_channel::ipc::{self, IpcSender};
    let (name, _) = arg.split_once('\n').ok_or("bad argument")?;
    let (tx, rx) = ipc::channel::<Boot>()?;
    IpcSender::<IpcSender<Boot>>::connect(name.to_string())?
        .send(tx)
        .map_err(de)?;
    let (ping_rx, pong_tx) = rx.recv().map_err(de)?;
    loop {
        let m = ping_rx.recv().map_err(de)?;
        if m[..8] == STOP.to_le_bytes() {
            return Ok(());
        }
        pong_tx.send(&m)?;
    }
}

// ----- iceoryx2 -----

mod iox {
    use super::*;
    use iceoryx2::prelude::*;

    type Node = iceoryx2::node::Node<ipc::Service>;
    type Pub = iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>;
    type Sub = iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>;

    pub(super) fn quiet() {
        set_log_level(LogLevel::Error);
    }

    pub(super) fn ports(tag: &str, size: usize, parent: bool) -> Res<(Node, Pub, Sub)> {
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(de)?;
        let svc = |dir: &str| -> Res<_> {
            let name = format!("dcb/{tag}/{dir}");
            let sn: ServiceName = name.as_str().try_into().map_err(de)?;
            node.service_builder(&sn)
                .publish_subscribe::<[u8]>()
                .open_or_create()
                .map_err(de)
        };
        let ping = svc("ping")?;
        let pong = svc("pong")?;
        let (out, inn) = if parent {
            (&ping, &pong)
        } else {
            (&pong, &ping)
        };
        let p = out
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()
            .map_err(de)?;
        let s = inn.subscriber_builder().create().map_err(de)?;
        Ok((node, p, s))
    }

    pub(super) fn send(p: &Pub, b: &[u8]) -> Res<()> {
        let s = p.loan_slice_uninit(b.len()).map_err(de)?;
        s.write_from_slice(b).send().map_err(de)?;
        Ok(())
    }

    /// Busy-polls for the next sample and copies it out into `b`.
    pub(super) fn recv(s: &Sub, b: &mut [u8]) -> Res<()> {
        loop {
            if let Some(x) = s.receive().map_err(de)? {
                b.copy_from_slice(x.payload());
                return Ok(());
            }
            // No `spin_loop()` (PAUSE): see the floor's `wait_for`.
        }
    }

    pub(super) fn try_recv(s: &Sub, b: &mut [u8]) -> Res<bool> {
        match s.receive().map_err(de)? {
            Some(x) => {
                b.copy_from_slice(x.payload());
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

const HELLO: u64 = u64::MAX - 1;

/// iceoryx2 pub/sub ping-pong: one publisher -> one subscriber each way, `[u8]` payloads;
/// both sides busy-poll `receive()` and copy the payload in (`write_from_slice`) and out.
pub fn iceoryx2(size: usize, n: usize) -> Res<Lat> {
    iox::quiet();
    let tag = format!("{}-{size}", std::process::id());
    let (node, p, s) = iox::ports(&tag, size, true)?;
    let child = spawn("iox", &format!("{tag}:{size}"))?;
    let run = || -> Res<Lat> {
        let mut msg = vec![0u8; size];
        let mut back = vec![0u8; size];
        // Handshake: a subscriber sees only samples published after it connected, so
        // repeat a hello until the peer echoes one, then drain stray echoes.
        msg[..8].copy_from_slice(&HELLO.to_le_bytes());
        let t_end = Instant::now() + Duration::from_secs(20);
        'outer: loop {
            iox::send(&p, &msg)?;
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(2) {
                if iox::try_recv(&s, &mut back)? {
                    break 'outer;
                }
            }
            if Instant::now() > t_end {
                return Err("iceoryx2: peer never answered".into());
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(20) {
            iox::try_recv(&s, &mut back)?;
        }
        let warm = warmup(n);
        let mut h = hist();
        for i in 0..(warm + n) as u64 {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            let t0 = Instant::now();
            iox::send(&p, &msg)?;
            iox::recv(&s, &mut back)?;
            let dt = t0.elapsed();
            if back[..8] != i.to_le_bytes() {
                return Err("iceoryx2: wrong echo".into());
            }
            if i as usize >= warm {
                record(&mut h, dt);
            }
        }
        msg[..8].copy_from_slice(&STOP.to_le_bytes());
        iox::send(&p, &msg)?;
        Ok(lat(&h))
    };
    let r = run();
    let reaped = reap(child, "iceoryx2");
    drop((p, s, node));
    let r = r?;
    reaped?;
    Ok(r)
}

/// The iceoryx2 peer.
pub fn iceoryx2_peer(arg: &str) -> Res<()> {
    iox::quiet();
    let (tag, size) = arg.split_once(':').ok_or("bad argument")?;
    let size: usize = size.parse()?;
    let (_node, p, s) = iox::ports(tag, size, false)?;
    let mut buf = vec![0u8; size];
    loop {
        iox::recv(&s, &mut buf)?;
        if buf[..8] == STOP.to_le_bytes() {
            return Ok(());
        }
        iox::send(&p, &buf)?;
    }
}

/// Removes what iceoryx2 leaves behind: `/dev/shm/iox2_*` and `/tmp/iceoryx2`.
pub fn iceoryx2_cleanup() {
    if let Ok(d) = std::fs::read_dir("/dev/shm") {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with("iox2_") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all("/tmp/iceoryx2");
}

// ----- crossbeam-channel (threads) -----

/// Ping-pong between two threads over two `bounded(1)` channels of `[u8; N]` values.
pub fn crossbeam<const N: usize>(n: usize) -> Res<Lat> {
    let (ping_tx, ping_rx) = crossbeam_channel::bounded::<[u8; N]>(1);
    let (pong_tx, pong_rx) = crossbeam_channel::bounded::<[u8; N]>(1);
    let peer = std::thread::spawn(move || {
        while let Ok(m) = ping_rx.recv() {
            if m[..8] == STOP.to_le_bytes() || pong_tx.send(m).is_err() {
                break;
            }
        }
    });
    let warm = warmup(n);
    let mut msg = [0u8; N];
    let mut h = hist();
    for i in 0..(warm + n) as u64 {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = Instant::now();
        ping_tx.send(msg)?;
        let back = pong_rx.recv()?;
        let dt = t0.elapsed();
        if back[..8] != i.to_le_bytes() {
            return Err("crossbeam: wrong echo".into());
        }
        if i as usize >= warm {
            record(&mut h, dt);
        }
    }
    msg[..8].copy_from_slice(&STOP.to_le_bytes());
    ping_tx.send(msg)?;
    peer.join().map_err(|_| "crossbeam peer panicked")?;
    Ok(lat(&h))
}

/// N sender threads -> `bounded(100)` of `[u8; 64]` -> N receiver threads. Messages per
/// second.
pub fn crossbeam_throughput(nthreads: usize, total: usize) -> Res<f64> {
    let per = total / nthreads;
    let (tx, rx) = crossbeam_channel::bounded::<[u8; 64]>(100);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2 * nthreads + 1));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..nthreads {
        let (tx, b) = (tx.clone(), barrier.clone());
        senders.push(std::thread::spawn(move || {
            b.wait();
            let mut m = [0u8; 64];
            for i in 0..per as u64 {
                m[..8].copy_from_slice(&i.to_le_bytes());
                if tx.send(m).is_err() {
                    break;
                }
            }
        }));
        let (rx, b) = (rx.clone(), barrier.clone());
        receivers.push(std::thread::spawn(move || {
            b.wait();
            let mut got = 0u64;
            while rx.recv().is_ok() {
                got += 1;
            }
            got
        }));
    }
    drop((tx, rx));
    barrier.wait();
    let t0 = Instant::now();
    for s in senders {
        s.join().map_err(|_| "sender panicked")?;
    }
    let mut got = 0;
    for r in receivers {
        got += r.join().map_err(|_| "receiver panicked")?;
    }
    let dt = t0.elapsed().as_secs_f64();
    if got != (per * nthreads) as u64 {
        return Err("crossbeam throughput: lost messages".into());
    }
    Ok(got as f64 / dt)
}

/// CPU ns used by a thread blocked over `idle` in crossbeam `recv` and in a pipe `read`.
pub fn idle_cpu(idle: Duration) -> Res<(u64, u64)> {
    let (tx, rx) = crossbeam_channel::bounded::<u8>(1);
    let cb = std::thread::spawn(move || {
        let c0 = cpu_ns(libc::RUSAGE_THREAD);
        let _ = rx.recv();
        cpu_ns(libc::RUSAGE_THREAD) - c0
    });
    let (pr, pw) = pipe()?;
    let pt = std::thread::spawn(move || {
        let mut f = File::from(pr);
        let c0 = cpu_ns(libc::RUSAGE_THREAD);
        let mut b = [0u8; 1];
        let _ = f.read(&mut b);
        cpu_ns(libc::RUSAGE_THREAD) - c0
    });
    std::thread::sleep(idle);
    tx.send(1)?;
    File::from(pw).write_all(&[1])?;
    let a = cb.join().map_err(|_| "crossbeam idle thread panicked")?;
    let b = pt.join().map_err(|_| "pipe idle thread panicked")?;
    Ok((a, b))
}
