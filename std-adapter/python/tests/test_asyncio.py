"""asyncio: `await recvh.recv_async()` / `recv_bytes_async()` and `await sendh.send_async(msg)`
/ `send_bytes_async(b)`, in one process and across processes (multiprocessing, spawn).

The process's async waiter thread wakes the awaiting task through
`loop.call_soon_threadsafe`. Every wait in these tests has a timeout (`asyncio.wait_for`) and
every child a watchdog (`_join`), so a lost wake-up fails a test instead of hanging it.
"""

import asyncio
import random
import struct
import time

import pytest

import dragon_channels as dc
from conftest import join_child as _join
from conftest import start_child as _start

WAIT = 30  # seconds any single await may take before the test counts as failed


def _chan(pool, uid, capacity=4):
    return dc.Channel(pool, uid, block_size=256, capacity=capacity)


def _u64(b):
    return struct.unpack("<Q", b)[0]


def _p64(i):
    return struct.pack("<Q", i)


# ---------------------------------------------------------------------------------------
# One process


def test_every_async_form_in_one_process(big_pool):
    ch = _chan(big_pool, 1, capacity=2)

    async def main():
        with ch.sendh() as s, ch.recvh() as r:
            # The fast path: the coroutine completes without suspending.
            assert _at_once(s.send_bytes_async(b"ab")) is None
            assert _at_once(r.recv_bytes_async()) == b"ab"
            m = dc.Message.create_alloc(big_pool, 3)
            m.bytes_memview()[:] = b"xyz"
            await s.send_async(m)
            got = await r.recv_async()
            assert got.tobytes() == b"xyz"
            got.destroy()
            m.destroy()
            await s.send_bytes_async(bytearray(b"pad"), msg_len=5)
            assert await r.recv_bytes_async() == b"pad\0\0"

            # A receive that waits, woken by a send from another task.
            pending = asyncio.ensure_future(r.recv_bytes_async())
            await asyncio.sleep(0.02)
            assert not pending.done()
            await s.send_bytes_async(b"late")
            assert await asyncio.wait_for(pending, WAIT) == b"late"

            # A send that waits for a slot, freed by a receive from another task.
            await s.send_bytes_async(b"1")
            await s.send_bytes_async(b"2")
            blocked = asyncio.ensure_future(s.send_bytes_async(b"3"))
            await asyncio.sleep(0.02)
            assert not blocked.done()
            assert await r.recv_bytes_async() == b"1"
            await asyncio.wait_for(blocked, WAIT)
            assert await r.recv_bytes_async() == b"2"
            assert await r.recv_bytes_async() == b"3"

            # A timeout: nothing received, the next message is still there.
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r.recv_bytes_async(), 0.05)
            assert time.monotonic() - t0 >= 0.05
            s.send_bytes(b"kept")
            assert r.recv_bytes(blocking=False) == b"kept"

            # Errors come as the blocking calls' exceptions.
            r.close()
            with pytest.raises(dc.ChannelHandleNotOpenError):
                await r.recv_bytes_async()
            r.open()

    asyncio.run(main())
    ch.destroy()


def _at_once(coro):
    """The result of a coroutine that completes without suspending (the fast path)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    pytest.fail("the coroutine suspended")


def test_async_calls_are_coroutines_that_try_nothing_until_awaited(big_pool):
    ch = _chan(big_pool, 1)
    with ch.sendh() as s, ch.recvh() as r:
        asyncio.run(s.send_bytes_async(b"x"))
        assert asyncio.run(r.recv_bytes_async()) == b"x"
        # Made but never awaited: nothing tried, nothing received.
        never = r.recv_bytes_async()
        s.send_bytes(b"y")
        never.close()
        assert r.recv_bytes(blocking=False) == b"y"
    ch.destroy()


def test_a_receive_cancelled_whenever_its_message_arrives_loses_nothing(big_pool):
    """A waiting receive cancelled in any loop pass after its message arrived: either it
    returned the message, or it was cancelled and the message is still queued. (A design that
    takes the message in a loop callback and resolves a future loses it when the cancel lands
    between that callback and the task's resumption.)"""
    ch = _chan(big_pool, 1)
    rng = random.Random(5)

    async def take(r):
        return await r.recv_bytes_async()

    async def main():
        got = kept = 0
        with ch.sendh() as s, ch.recvh() as r:
            for i in range(200):
                task = asyncio.ensure_future(take(r))
                await asyncio.sleep(0)
                s.send_bytes(_p64(i))
                # Let the message get taken (or not) for a random number of loop passes.
                for _ in range(rng.randrange(200)):
                    if task.done() or ch.num_msgs == 0:
                        break
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    assert _u64(await task) == i
                    got += 1
                except asyncio.CancelledError:
                    assert _u64(r.recv_bytes(timeout=WAIT)) == i, "a cancelled receive took it"
                    kept += 1
        return got, kept

    got, kept = asyncio.run(main())
    assert got + kept == 200 and ch.num_msgs == 0
    ch.destroy()


# ---------------------------------------------------------------------------------------
# Across processes


def _exchange_child(out_ser, in_ser, n):
    out_ch = dc.Channel.attach(out_ser)
    in_ch = dc.Channel.attach(in_ser)

    async def main():
        with out_ch.sendh() as s, in_ch.recvh() as r:

            async def send():
                for i in range(n):
                    await asyncio.wait_for(s.send_bytes_async(_p64(i)), WAIT)

            async def recv():
                for i in range(n):
                    got = _u64(await asyncio.wait_for(r.recv_bytes_async(), WAIT))
                    if got != i:
                        raise SystemExit(3)

            await asyncio.gather(send(), recv())

    asyncio.run(main())


def test_two_processes_exchange_with_asyncio(big_pool):
    """Both processes send and receive 5,000 messages at once through channels of 4 slots,
    with asyncio tasks: every message arrives, in order."""
    n = 5_000
    a, b = _chan(big_pool, 1), _chan(big_pool, 2)
    p = _start(_exchange_child, b.serialize(), a.serialize(), n)

    async def main():
        with a.sendh() as s, b.recvh() as r:

            async def send():
                for i in range(n):
                    await asyncio.wait_for(s.send_bytes_async(_p64(i)), WAIT)

            async def recv():
                for i in range(n):
                    assert _u64(await asyncio.wait_for(r.recv_bytes_async(), WAIT)) == i

            await asyncio.gather(send(), recv())

    asyncio.run(main())
    assert _join(p) == 0
    assert a.num_msgs == 0 and b.num_msgs == 0
    a.destroy()
    b.destroy()


def _feed_each(sers, order, ack_ser):
    chans = [dc.Channel.attach(s) for s in sers]
    ack = dc.Channel.attach(ack_ser)
    with ack.recvh() as acks:
        for i in order:
            with chans[i].sendh() as s:
                s.send_bytes(_p64(i), timeout=WAIT)
            if _u64(acks.recv_bytes(timeout=WAIT)) != i:
                raise SystemExit(4)


def test_a_hundred_tasks_on_a_hundred_channels_fed_by_another_process(big_pool):
    """100 tasks each await a receive on a channel of their own; another process sends into
    one channel at a time, in random order, and waits for this one to say which task
    completed before the next: it is always the one it sent to."""
    n = 100
    chans = [_chan(big_pool, 100 + i, capacity=2) for i in range(n)]
    ack = _chan(big_pool, 1)
    order = list(range(n))
    random.Random(7).shuffle(order)
    p = _start(_feed_each, [c.serialize() for c in chans], order, ack.serialize())

    async def main():
        done = asyncio.Queue()
        recvhs = [c.recvh() for c in chans]

        async def one(i, r):
            r.open()
            got = _u64(await asyncio.wait_for(r.recv_bytes_async(), WAIT))
            await done.put((i, got))

        tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(recvhs)]
        with ack.sendh() as s:
            for want in order:
                i, got = await asyncio.wait_for(done.get(), WAIT)
                assert (i, got) == (want, want)
                await s.send_bytes_async(_p64(i))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert _join(p) == 0
    for c in chans:
        c.destroy()
    ack.destroy()


def _send_seq(ser, n, seed):
    ch = dc.Channel.attach(ser)
    rng = random.Random(seed)
    with ch.sendh() as s:
        for i in range(n):
            if rng.random() < 0.05:
                time.sleep(rng.random() * 0.002)
            s.send_bytes(_p64(i), timeout=WAIT)


def _recv_seq(ser, n, seed):
    ch = dc.Channel.attach(ser)
    rng = random.Random(seed)
    with ch.recvh() as r:
        for i in range(n):
            if rng.random() < 0.05:
                time.sleep(rng.random() * 0.002)
            if _u64(r.recv_bytes(timeout=WAIT)) != i:
                raise SystemExit(5)
        try:
            r.recv_bytes(blocking=False)
            raise SystemExit(6)
        except dc.ChannelEmpty:
            pass


def test_cancelled_awaits_lose_and_duplicate_nothing(big_pool):
    """Receives cancelled by short `wait_for` timeouts (and by losing a race against a second
    receive) while another process sends 3,000 messages: each is received exactly once, in
    order. Then sends cancelled the same way while another process receives: it sees each
    value exactly once, in order (a cancelled send sent nothing, so it is sent again)."""
    n = 3_000
    ch = _chan(big_pool, 1)
    rng = random.Random(11)
    p = _start(_send_seq, ch.serialize(), n, 1)

    async def receive():
        got, cancelled = [], 0
        with ch.recvh() as r:
            while len(got) < n:
                k = rng.randrange(3)
                if k == 0:
                    try:
                        got.append(_u64(await asyncio.wait_for(r.recv_bytes_async(),
                                                               rng.random() * 0.0005)))
                    except asyncio.TimeoutError:
                        cancelled += 1
                elif k == 1:
                    a = asyncio.ensure_future(r.recv_bytes_async())
                    b = asyncio.ensure_future(r.recv_bytes_async())
                    done, pending = await asyncio.wait({a, b}, timeout=WAIT,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    for f in pending:
                        f.cancel()
                    # Both may have completed in the same loop iteration: keep both, in
                    # the order they took the messages (the smaller value first).
                    got.extend(sorted(_u64(f.result()) for f in done))
                    cancelled += len(pending)
                else:
                    got.append(_u64(await asyncio.wait_for(r.recv_bytes_async(), WAIT)))
        return got, cancelled

    got, cancelled = asyncio.run(receive())
    assert _join(p) == 0
    assert got == list(range(n))
    assert cancelled > 0

    p = _start(_recv_seq, ch.serialize(), n, 2)

    async def send():
        cancelled = 0
        with ch.sendh() as s:
            i = 0
            while i < n:
                try:
                    await asyncio.wait_for(s.send_bytes_async(_p64(i)),
                                           rng.random() * 0.0005)
                    i += 1
                except asyncio.TimeoutError:
                    cancelled += 1
        return cancelled

    cancelled = asyncio.run(send())
    assert _join(p) == 0
    assert cancelled > 0
    assert ch.num_msgs == 0
    ch.destroy()
