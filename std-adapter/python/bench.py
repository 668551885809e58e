"""Round-trip latency between two Python processes: dragon_channels vs multiprocessing.

Not a test. Run with the venv that has the extension installed:

    .venv/bin/python bench.py [--iters N]

For each payload size (64 B, 64 KiB) the parent sends a message and the child (spawned)
echoes it back; each round trip is timed with perf_counter_ns. Prints median and p99 per
transport and the ratios of multiprocessing's figures to dragon_channels'.
"""

import argparse
import multiprocessing as mp
import os
import statistics
import time

import dragon_channels as dc

SIZES = (64, 64 * 1024)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def dragon_child(req_ser, resp_ser, n):
    req, resp = dc.Channel.attach(req_ser), dc.Channel.attach(resp_ser)
    r, s = req.recvh(), resp.sendh()
    r.open()
    s.open()
    for _ in range(n):
        s.send_bytes(r.recv_bytes())


def queue_child(q_in, q_out, n):
    for _ in range(n):
        q_out.put(q_in.get())


def pipe_child(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def time_loop(n, warm, one):
    out = []
    for i in range(n + warm):
        t0 = time.perf_counter_ns()
        one()
        t1 = time.perf_counter_ns()
        if i >= warm:
            out.append((t1 - t0) / 1000.0)
    return out


def bench_dragon(ctx, size, n, warm):
    name = f"dcbench-{os.getpid()}-{size}"
    pool = dc.MemoryPool(64 << 20, name, 0)
    try:
        req, resp = dc.Channel(pool, 1), dc.Channel(pool, 2)
        p = ctx.Process(target=dragon_child, args=(req.serialize(), resp.serialize(), n + warm))
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
        p.join(60)
        return res
    finally:
        pool.destroy()


def bench_queue(ctx, size, n, warm):
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=queue_child, args=(q_in, q_out, n + warm))
    p.start()
    payload = os.urandom(size)

    def one():
        q_in.put(payload)
        assert len(q_out.get()) == size

    res = time_loop(n, warm, one)
    p.join(60)
    return res


def bench_pipe(ctx, size, n, warm):
    a, b = ctx.Pipe()
    p = ctx.Process(target=pipe_child, args=(b, n + warm))
    p.start()
    payload = os.urandom(size)

    def one():
        a.send_bytes(payload)
        assert len(a.recv_bytes()) == size

    res = time_loop(n, warm, one)
    p.join(60)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=500)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"round trips between two processes, {args.iters} iterations each, times in us")
    print(f"{'payload':>8} {'transport':>18} {'median':>9} {'p99':>9}")
    for size in SIZES:
        res = {}
        for label, fn in (
            ("dragon_channels", bench_dragon),
            ("mp.Queue", bench_queue),
            ("mp.Pipe", bench_pipe),
        ):
            xs = fn(ctx, size, args.iters, args.warmup)
            res[label] = (statistics.median(xs), pct(xs, 0.99))
            print(f"{size:>8} {label:>18} {res[label][0]:>9.2f} {res[label][1]:>9.2f}")
        dm, dp = res["dragon_channels"]
        for label in ("mp.Queue", "mp.Pipe"):
            m, p = res[label]
            print(
                f"{size:>8} {label + '/dragon':>18} {m / dm:>8.2f}x {p / dp:>8.2f}x"
                "  (how many times slower than dragon_channels: median, p99)"
            )


if __name__ == "__main__":
    main()
