"""Two Python processes: dragon_channels beside multiprocessing.Queue and Pipe, the way
Dragon's `perf_channels.py` measures channels (one-way latency and messages per second).

Not a test. Run with the venv that has the extension installed:

    .venv/bin/python bench.py [--iters N] [--stream M]

For each payload size (64 B, 1 KiB, 16 KiB, 64 KiB):
- latency: the parent sends a message, the child (spawned) echoes it back; each round trip is
  timed with perf_counter_ns; one-way latency is half of it (median and p99);
- throughput: the parent sends M messages back to back, the child receives them all and
  answers once; messages per second over the whole stream.
Prints the figures per transport and how many times slower multiprocessing is.
"""

import argparse
import multiprocessing as mp
import os
import statistics
import time

import dragon_channels as dc

SIZES = (64, 1024, 16 * 1024, 64 * 1024)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def dragon_child(req_ser, resp_ser, n, stream):
    req, resp = dc.Channel.attach(req_ser), dc.Channel.attach(resp_ser)
    r, s = req.recvh(), resp.sendh()
    r.open()
    s.open()
    for _ in range(n):
        s.send_bytes(r.recv_bytes())
    for _ in range(stream):
        r.recv_bytes()
    s.send_bytes(b"done")


def queue_child(q_in, q_out, n, stream):
    for _ in range(n):
        q_out.put(q_in.get())
    for _ in range(stream):
        q_in.get()
    q_out.put(b"done")


def pipe_child(conn, n, stream):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())
    for _ in range(stream):
        conn.recv_bytes()
    conn.send_bytes(b"done")


def stream_rate(m, send, wait_done):
    """Messages per second of `m` back-to-back sends, until the receiver says it has all."""
    t0 = time.perf_counter_ns()
    for _ in range(m):
        send()
    wait_done()
    return m / ((time.perf_counter_ns() - t0) / 1e9)


def time_loop(n, warm, one):
    out = []
    for i in range(n + warm):
        t0 = time.perf_counter_ns()
        one()
        t1 = time.perf_counter_ns()
        if i >= warm:
            out.append((t1 - t0) / 1000.0)
    return out


def bench_dragon(ctx, size, n, warm, stream):
    name = f"dcbench-{os.getpid()}-{size}"
    pool = dc.MemoryPool(64 << 20, name, 0)
    try:
        req, resp = dc.Channel(pool, 1), dc.Channel(pool, 2)
        p = ctx.Process(
            target=dragon_child, args=(req.serialize(), resp.serialize(), n + warm, stream)
        )
        p.start()
        s, r = req.sendh(), resp.recvh()
        s.open()
        r.open()
        payload = os.urandom(size)

        def one():
            s.send_bytes(payload)
            got = r.recv_bytes()
            assert len(got) == size

        res = time_loop(n, warm, one)
        rate = stream_rate(stream, lambda: s.send_bytes(payload), r.recv_bytes)
        p.join(60)
        return res, rate
    finally:
        pool.destroy()


def bench_queue(ctx, size, n, warm, stream):
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=queue_child, args=(q_in, q_out, n + warm, stream))
    p.start()
    payload = os.urandom(size)

    def one():
        q_in.put(payload)
        assert len(q_out.get()) == size

    res = time_loop(n, warm, one)
    rate = stream_rate(stream, lambda: q_in.put(payload), q_out.get)
    p.join(60)
    return res, rate


def bench_pipe(ctx, size, n, warm, stream):
    a, b = ctx.Pipe()
    p = ctx.Process(target=pipe_child, args=(b, n + warm, stream))
    p.start()
    payload = os.urandom(size)

    def one():
        a.send_bytes(payload)
        assert len(a.recv_bytes()) == size

    res = time_loop(n, warm, one)
    rate = stream_rate(stream, lambda: a.send_bytes(payload), a.recv_bytes)
    p.join(60)
    return res, rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--stream", type=int, default=20000)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(
        f"two processes: one-way latency (half round trip, {args.iters} round trips, us) "
        f"and throughput ({args.stream} messages back to back)"
    )
    print(f"{'payload':>8} {'transport':>18} {'p50 us':>9} {'p99 us':>9} {'msg/s':>11}")
    for size in SIZES:
        res = {}
        for label, fn in (
            ("dragon_channels", bench_dragon),
            ("mp.Queue", bench_queue),
            ("mp.Pipe", bench_pipe),
        ):
            xs, rate = fn(ctx, size, args.iters, args.warmup, args.stream)
            res[label] = (statistics.median(xs) / 2, pct(xs, 0.99) / 2, rate)
            m, p, r = res[label]
            print(f"{size:>8} {label:>18} {m:>9.2f} {p:>9.2f} {r:>11.0f}")
        dm, dp, dr = res["dragon_channels"]
        for label in ("mp.Queue", "mp.Pipe"):
            m, p, r = res[label]
            print(
                f"{size:>8} {label + '/dragon':>18} {m / dm:>8.2f}x {p / dp:>8.2f}x {dr / r:>10.2f}x"
                "  (times slower than dragon_channels: p50, p99, throughput)"
            )


if __name__ == "__main__":
    main()
