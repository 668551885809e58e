"""Waiting: Channel.poll (every EventType), barriers, semaphores and ChannelSet, in one process
and across processes (multiprocessing, spawn).

Every wait has a timeout and every child a watchdog (`_join` kills a child that outlives
its deadline), so a lost wake-up fails a test instead of hanging the suite. Timing checks
assert lower bounds only ("waited at least the timeout").
"""

import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import types

import pytest

import dragon_channels as dc
from conftest import join_child as _join
from conftest import start_child as _start

E = dc.EventType
WAIT = 30  # seconds any single wait in a child may take before the test counts as failed
MODES = [dc.IDLE_WAIT, dc.SPIN_WAIT, dc.ADAPTIVE_WAIT]

# Exit codes of the barrier children.
ABORTED = 2
ORDINAL_BASE = 10  # exit code of a party released with ordinal k: ORDINAL_BASE + k


def _wait_until(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _destroy_quietly(*objs):
    for o in objs:
        try:
            o.destroy()
        except dc.ChannelError:
            pass


# ---------------------------------------------------------------------------------------
# Names and values


def test_event_type_names_and_values():
    expected = {
        "POLLNOTHING": 0,
        "POLLIN": 1,
        "POLLOUT": 2,
        "POLLINOUT": 3,
        "POLLEMPTY": 4,
        "POLLFULL": 5,
        "POLLSIZE": 6,
        "POLLRESET": 7,
        "POLLCAPACITY": 8,
        "POLLBARRIER": 9,
        "POLLBARRIER_ABORT": 10,
        "POLLBARRIER_RELEASE": 11,
        "POLLBARRIER_ISBROKEN": 12,
        "POLLBARRIER_WAITERS": 13,
        "POLLBLOCKED_RECEIVERS": 14,
        "SEMAPHORE_P": 15,
        "SEMAPHORE_V": 16,
        "SEMAPHORE_VZ": 17,
        "SEMAPHORE_PEEK": 18,
    }
    for name, value in expected.items():
        assert getattr(E, name) == value, name
        assert isinstance(getattr(E, name), int)
    # Dragon's tests combine the two directions with `|`.
    assert E.POLLIN | E.POLLOUT == E.POLLINOUT
    assert (E.POLLIN | E.POLLOUT) is E.POLLINOUT
    # Aliases: the C name of the barrier wait, and the Rust name of the zero wait.
    assert E.POLLBARRIER_WAIT is E.POLLBARRIER
    assert E.SEMAPHORE_Z is E.SEMAPHORE_VZ
    assert E(1) is E.POLLIN and E(9) is E.POLLBARRIER
    assert pickle.loads(pickle.dumps(E.POLLFULL)) is E.POLLFULL
    assert E.__module__ == "dragon_channels"


def test_wait_modes_and_exceptions():
    assert (dc.IDLE_WAIT.value, dc.SPIN_WAIT.value, dc.ADAPTIVE_WAIT.value) == (0, 1, 2)
    assert dc.IDLE_WAIT == dc.WaitMode.IDLE_WAIT
    assert dc.DEFAULT_WAIT_MODE == dc.ADAPTIVE_WAIT
    assert issubclass(dc.ChannelBarrierBroken, dc.ChannelError)
    assert issubclass(dc.ChannelBarrierBroken, threading.BrokenBarrierError)
    assert issubclass(dc.ChannelBarrierReady, dc.ChannelError)
    assert issubclass(dc.ChannelValueError, dc.ChannelError)
    assert issubclass(dc.ChannelValueError, ValueError)
    assert issubclass(dc.ChannelSetTimeout, dc.ChannelSetError)
    assert issubclass(dc.ChannelSetTimeout, TimeoutError)
    assert issubclass(dc.ChannelSetError, dc.ChannelError)
    assert not issubclass(dc.ChannelBarrierReady, TimeoutError)


# ---------------------------------------------------------------------------------------
# Every poll operation, once and with timeouts, in one process

# op -> (channel kind, expected return, expected PollResult.value or None for "the mask").
# Message channels have capacity 4 and start empty; semaphores start at 2 (unbounded).
ONE_PROCESS = {
    E.POLLIN: ("msg", False, 0),
    E.POLLOUT: ("msg", True, None),
    E.POLLINOUT: ("msg", True, None),
    E.POLLEMPTY: ("msg", True, None),
    E.POLLFULL: ("msg", False, 0),
    E.POLLSIZE: ("msg", True, 0),
    E.POLLRESET: ("msg", True, None),
    E.POLLCAPACITY: ("msg", True, 4),
    E.POLLBARRIER: ("msg", True, None),  # one of four parties arrives
    E.POLLBARRIER_ABORT: ("msg", True, None),
    E.POLLBARRIER_RELEASE: ("msg", True, 0),  # nobody arrived: no message deposited
    E.POLLBARRIER_ISBROKEN: ("msg", True, 0),
    E.POLLBARRIER_WAITERS: ("msg", True, 0),
    E.POLLBLOCKED_RECEIVERS: ("msg", True, 0),
    E.SEMAPHORE_P: ("sem", True, 2),  # the value before
    E.SEMAPHORE_V: ("sem", True, 2),
    E.SEMAPHORE_VZ: ("sem", False, 0),  # the value is 2, not 0
    E.SEMAPHORE_PEEK: ("sem", True, 2),
}


# Each operation tried once, with a timeout, and blocking (where that returns).
EVERY_POLL = [
    pytest.param(op, t, id=f"{op.name}-{tid}")
    for op, (_, ret, _) in ONE_PROCESS.items()
    for t, tid in ((0, "try"), (0.05, "timed"), (None, "block"))
    if ret or t is not None
]


@pytest.mark.parametrize("op, timeout", EVERY_POLL)
def test_every_poll_operation(big_pool, op, timeout):
    kind, ret, value = ONE_PROCESS[op]
    if kind == "msg":
        ch = dc.Channel(big_pool, 1, capacity=4)
        other = dc.Channel(big_pool, 2, semaphore=True, initial_sem_value=2)
    else:
        ch = dc.Channel(big_pool, 1, semaphore=True, initial_sem_value=2)
        other = dc.Channel(big_pool, 2, capacity=4)
    try:
        res = dc.PollResult()
        t0 = time.monotonic()
        assert ch.poll(timeout=timeout, event_mask=op, poll_result=res) is ret
        if not ret and timeout:
            assert time.monotonic() - t0 >= timeout
        assert res.rc == ("SUCCESS" if ret else "TIMEOUT")
        assert res.value == (int(op) if value is None else value)
        # The same poll without a PollResult answers the same way.
        if op not in (E.POLLBARRIER, E.POLLBARRIER_ABORT, E.SEMAPHORE_P, E.SEMAPHORE_V):
            assert ch.poll(timeout=timeout, event_mask=op) is ret
        # A semaphore operation on a message channel and the other way round: ChannelError
        # (POLLCAPACITY applies to both).
        if op == E.POLLCAPACITY:
            assert other.poll(timeout=timeout, event_mask=op)
        else:
            with pytest.raises(dc.ChannelError):
                other.poll(timeout=timeout, event_mask=op)
    finally:
        _destroy_quietly(ch, other)


def test_conditions_follow_the_queue(big_pool):
    ch = dc.Channel(big_pool, 1, capacity=2)
    s = ch.sendh()
    s.open()
    r = ch.recvh()
    r.open()

    ops = (E.POLLIN, E.POLLOUT, E.POLLINOUT, E.POLLEMPTY, E.POLLFULL)

    def state():
        return tuple(ch.poll(timeout=0, event_mask=op) for op in ops)

    assert state() == (False, True, True, True, False)
    s.send_bytes(b"a")
    assert state() == (True, True, True, False, False)
    s.send_bytes(b"b")
    assert state() == (True, False, True, False, True)
    res = dc.PollResult()
    assert ch.poll(event_mask=E.POLLSIZE, poll_result=res) and res.value == 2 == ch.num_msgs
    r.recv_bytes()
    r.recv_bytes()
    assert state() == (False, True, True, True, False)
    ch.destroy()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: str(m))
def test_timed_polls_wait_at_least_the_timeout(big_pool, mode):
    empty = dc.Channel(big_pool, 1, capacity=1)
    full = dc.Channel(big_pool, 2, capacity=1)
    s = full.sendh()
    s.open()
    s.send_bytes(b"x")
    sem = dc.Channel(big_pool, 3, semaphore=True)
    cases = [(empty, E.POLLIN), (empty, E.POLLFULL), (full, E.POLLOUT), (full, E.POLLEMPTY),
             (sem, E.SEMAPHORE_P)]
    try:
        for ch, op in cases:
            t0 = time.monotonic()
            assert ch.poll(timeout=0.1, wait_mode=mode, event_mask=op) is False, op
            assert time.monotonic() - t0 >= 0.1, op
    finally:
        _destroy_quietly(empty, full, sem)


def test_value_polls_and_properties(big_pool):
    ch = dc.Channel(big_pool, 1, capacity=3)
    res = types.SimpleNamespace()  # any object with settable attributes will do
    assert ch.poll(event_mask=E.POLLCAPACITY, poll_result=res) and res.value == 3
    assert ch.poll(timeout=5, event_mask=E.POLLBLOCKED_RECEIVERS, poll_result=res)
    assert res.value == 0 == ch.blocked_receivers
    assert ch.barrier_count == 0 and ch.broken_barrier is False
    assert not ch.is_semaphore

    # A receiver blocked in another thread (the GIL is released while it waits).
    r = ch.recvh()
    r.open()
    got = []
    t = threading.Thread(target=lambda: got.append(r.recv_bytes(timeout=20)))
    t.start()
    _wait_until(lambda: ch.blocked_receivers == 1, what="a blocked receiver")
    assert ch.poll(event_mask=E.POLLBLOCKED_RECEIVERS, poll_result=res) and res.value == 1
    s = ch.sendh()
    s.open()
    s.send_bytes(b"wake")
    t.join(20)
    assert got == [b"wake"] and ch.blocked_receivers == 0

    # Barrier counters: one of three parties arrives, then the round is aborted.
    assert ch.poll(event_mask=E.POLLBARRIER, timeout=0) is True
    assert ch.barrier_count == 1
    assert ch.poll(event_mask=E.POLLBARRIER_WAITERS, poll_result=res) and res.value == 1
    assert ch.poll(event_mask=E.POLLBARRIER_ABORT)
    assert ch.broken_barrier is True and ch.barrier_count == 0
    assert ch.poll(event_mask=E.POLLBARRIER_ISBROKEN, poll_result=res) and res.value == 1
    assert r.recv_bytes(timeout=0) == (-1).to_bytes(8, "little", signed=True)
    assert ch.poll(event_mask=E.POLLRESET)
    assert ch.broken_barrier is False
    ch.destroy()


def test_poll_argument_errors(big_pool):
    ch = dc.Channel(big_pool, 1)
    with pytest.raises(ValueError):
        ch.poll(event_mask=E.POLLNOTHING)
    with pytest.raises(ValueError):
        ch.poll(event_mask=-3)
    with pytest.raises(dc.ChannelValueError):
        ch.poll(event_mask=19)
    with pytest.raises(ValueError):
        ch.poll(timeout=-1)
    with pytest.raises(ValueError):
        ch.poll(timeout=0, wait_mode=7)
    with pytest.raises(ValueError):
        ch.poll(timeout=0, wait_mode="FAST")
    # Dragon's cast_wait_mode spellings.
    for mode in (0, 1, 2, "IDLE_WAIT", "SPIN_WAIT", "ADAPTIVE_WAIT", dc.DEFAULT_WAIT_MODE):
        assert ch.poll(timeout=0, wait_mode=mode, event_mask=E.POLLOUT)
    # A second object on the destroyed channel learns it from the poll.
    other = dc.Channel.attach(ch.serialize())
    ch.destroy()
    with pytest.raises(dc.ChannelError):
        ch.poll(timeout=0)
    with pytest.raises(dc.ChannelDestroyed):
        other.poll(timeout=0)


# ---------------------------------------------------------------------------------------
# Conditions across processes


def _send_later(ser, delay, payload):
    ch = dc.Channel.attach(ser)
    s = ch.sendh()
    s.open()
    time.sleep(delay)
    s.send_bytes(payload, timeout=WAIT)


def _recv_later(ser, delay):
    ch = dc.Channel.attach(ser)
    r = ch.recvh()
    r.open()
    time.sleep(delay)
    r.recv_bytes(timeout=WAIT)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: str(m))
def test_pollin_wakes_on_a_send_from_another_process(big_pool, mode):
    ch = dc.Channel(big_pool, 1)
    p = _start(_send_later, ch.serialize(), 0.2, b"hi")
    try:
        assert ch.poll(timeout=WAIT, wait_mode=mode, event_mask=E.POLLIN) is True
        assert ch.num_msgs == 1  # the poll consumed nothing
    finally:
        assert _join(p) == 0
        ch.destroy()


def test_pollout_wakes_on_a_receive_from_another_process(big_pool):
    ch = dc.Channel(big_pool, 1, capacity=1)
    s = ch.sendh()
    s.open()
    s.send_bytes(b"fill")
    assert ch.poll(timeout=0, event_mask=E.POLLOUT) is False
    p = _start(_recv_later, ch.serialize(), 0.2)
    try:
        assert ch.poll(timeout=WAIT, event_mask=E.POLLOUT) is True
    finally:
        assert _join(p) == 0
        ch.destroy()


ROUNDS_EMPTY_FULL = 20


def _fill_then_poll_empty(ser, cap):
    ch = dc.Channel.attach(ser)
    s = ch.sendh()
    s.open()
    for j in range(ROUNDS_EMPTY_FULL):
        for i in range(cap):
            s.send_bytes(bytes([j, i]), timeout=WAIT)
        if not ch.poll(event_mask=E.POLLEMPTY, timeout=WAIT):
            sys.exit(3)


def _poll_full_then_drain(ser, cap):
    ch = dc.Channel.attach(ser)
    r = ch.recvh()
    r.open()
    for j in range(ROUNDS_EMPTY_FULL):
        if not ch.poll(event_mask=E.POLLFULL, timeout=WAIT):
            sys.exit(3)
        if ch.num_msgs != cap:
            sys.exit(4)
        for i in range(cap):
            if r.recv_bytes(timeout=WAIT) != bytes([j, i]):
                sys.exit(5)


def test_pollempty_and_pollfull_between_two_processes(big_pool):
    # Dragon's poll_empty_full: one process fills and waits for empty, the other waits for
    # full and drains; the rounds alternate without any other synchronization.
    cap = 5
    ch = dc.Channel(big_pool, 1, capacity=cap)
    ser = ch.serialize()
    filler = _start(_fill_then_poll_empty, ser, cap)
    drainer = _start(_poll_full_then_drain, ser, cap)
    try:
        assert _join(filler) == 0
        assert _join(drainer) == 0
        assert ch.num_msgs == 0
    finally:
        ch.destroy()


# ---------------------------------------------------------------------------------------
# Barriers

PARTIES = 8
BARRIER_ROUNDS = 200


def _barrier_rounds(ser, rounds, out_ser):
    """`rounds` barrier rounds; sends back how many it released and its ordinal + 1 per
    round (0 for an aborted round)."""
    ch = dc.Channel.attach(ser)
    r = ch.recvh()
    r.open()
    released = 0
    ords = bytearray()
    for _ in range(rounds):
        try:
            if not ch.poll(event_mask=E.POLLBARRIER, timeout=WAIT):
                sys.exit(3)
        except dc.ChannelBarrierReady:
            if not ch.poll(event_mask=E.POLLBARRIER_RELEASE, timeout=WAIT):
                sys.exit(4)
            released += 1
        x = int.from_bytes(r.recv_bytes(timeout=WAIT), "little", signed=True)
        ords.append(x + 1)
    out = dc.Channel.attach(out_ser)
    s = out.sendh()
    s.open()
    s.send_bytes(struct.pack("<I", released) + bytes(ords), timeout=WAIT)


def test_barrier_of_8_processes_200_rounds(big_pool):
    bar = dc.Channel(big_pool, 1, capacity=PARTIES)
    out = dc.Channel(big_pool, 2, capacity=PARTIES)
    procs = [_start(_barrier_rounds, bar.serialize(), BARRIER_ROUNDS, out.serialize())
             for _ in range(PARTIES)]
    try:
        r = out.recvh()
        r.open()
        reports = [r.recv_bytes(timeout=120) for _ in range(PARTIES)]
    finally:
        codes = [_join(p) for p in procs]
    try:
        assert codes == [0] * PARTIES
        released = sum(struct.unpack_from("<I", rep)[0] for rep in reports)
        assert released == BARRIER_ROUNDS  # exactly one releaser per round
        ords = [rep[4:] for rep in reports]
        assert all(len(o) == BARRIER_ROUNDS for o in ords)
        for k in range(BARRIER_ROUNDS):
            # Each party's k-th outcome is from round k: rounds never mix.
            assert sorted(o[k] - 1 for o in ords) == list(range(PARTIES)), f"round {k}"
        assert bar.num_msgs == 0 and bar.barrier_count == 0 and not bar.broken_barrier
    finally:
        _destroy_quietly(bar, out)


def _barrier_party(ser):
    """Dragon's worker_barrier_wait: one arrival; exits ORDINAL_BASE + ordinal, or ABORTED
    for a -1 outcome or a broken barrier."""
    ch = dc.Channel.attach(ser)
    r = ch.recvh()
    r.open()
    try:
        try:
            if not ch.poll(event_mask=E.POLLBARRIER, timeout=WAIT):
                sys.exit(3)
        except dc.ChannelBarrierReady:
            ch.poll(event_mask=E.POLLBARRIER_RELEASE, timeout=WAIT)
        x = int.from_bytes(r.recv_bytes(timeout=WAIT), "little", signed=True)
    except dc.ChannelBarrierBroken:
        sys.exit(ABORTED)
    sys.exit(ABORTED if x == -1 else ORDINAL_BASE + x)


def _clean_round(bar, n):
    procs = [_start(_barrier_party, bar.serialize()) for _ in range(n)]
    codes = sorted(_join(p) for p in procs)
    assert codes == [ORDINAL_BASE + k for k in range(n)]


def test_barrier_abort_releases_waiters_then_reset(big_pool):
    # Dragon's poll_barrier_abort: 4 of 5 parties wait, the round is aborted (each gets -1),
    # the barrier is reset, then 5 parties complete a round.
    bar = dc.Channel(big_pool, 1, capacity=5)
    procs = [_start(_barrier_party, bar.serialize()) for _ in range(4)]
    try:
        _wait_until(lambda: bar.barrier_count == 4, what="4 arrivals")
        assert bar.poll(event_mask=E.POLLBARRIER_ABORT, timeout=5)
    finally:
        codes = [_join(p) for p in procs]
    try:
        assert codes == [ABORTED] * 4
        assert bar.broken_barrier is True
        with pytest.raises(dc.ChannelBarrierBroken):
            bar.poll(event_mask=E.POLLBARRIER, timeout=0)
        assert bar.poll(event_mask=E.POLLRESET, timeout=5)
        assert bar.broken_barrier is False and bar.num_msgs == 0
        _clean_round(bar, 5)
    finally:
        bar.destroy()


def test_barrier_abort_mid_round_then_reset_then_clean_round(big_pool):
    # Dragon's poll_barrier3_with_abort: a clean round, then an abort while 3 of 5 have
    # arrived (they get -1) and 2 more arrive at the broken barrier (ChannelBarrierBroken),
    # then a reset and a clean round with distinct ordinals.
    bar = dc.Channel(big_pool, 1, capacity=5)
    try:
        _clean_round(bar, 5)
        early = [_start(_barrier_party, bar.serialize()) for _ in range(3)]
        try:
            _wait_until(lambda: bar.barrier_count == 3, what="3 arrivals")
            assert bar.poll(event_mask=E.POLLBARRIER_ABORT)
            late = [_start(_barrier_party, bar.serialize()) for _ in range(2)]
        finally:
            codes = [_join(p) for p in early]
        codes += [_join(p) for p in late]
        assert codes == [ABORTED] * 5
        assert bar.poll(event_mask=E.POLLRESET)
        assert not bar.broken_barrier and bar.barrier_count == 0 and bar.num_msgs == 0
        _clean_round(bar, 5)
    finally:
        bar.destroy()


def test_barrier_arrival_timeout_breaks_it(big_pool):
    # Two parties; the round's outcome is still queued, so a second arrival waits for it to
    # drain. Trying once reports "try again" (False); a timed wait that expires breaks the
    # barrier (Dragon's rule) so that nobody waits forever.
    bar = dc.Channel(big_pool, 1, capacity=2)
    r = bar.recvh()
    r.open()
    assert bar.poll(event_mask=E.POLLBARRIER) is True
    with pytest.raises(dc.ChannelBarrierReady):
        bar.poll(event_mask=E.POLLBARRIER)
    res = dc.PollResult()
    assert bar.poll(event_mask=E.POLLBARRIER_RELEASE, poll_result=res) and res.value == 2
    assert bar.num_msgs == 2
    assert bar.poll(event_mask=E.POLLBARRIER, timeout=0) is False
    assert not bar.broken_barrier
    t0 = time.monotonic()
    with pytest.raises(dc.ChannelBarrierBroken):
        bar.poll(event_mask=E.POLLBARRIER, timeout=0.1)
    assert time.monotonic() - t0 >= 0.1
    assert bar.broken_barrier
    # The released round's outcomes are still there; the reset discards the rest.
    got = sorted(int.from_bytes(r.recv_bytes(timeout=0), "little", signed=True)
                 for _ in range(2))
    assert got == [0, 1]
    assert bar.poll(event_mask=E.POLLRESET)
    assert not bar.broken_barrier
    bar.destroy()


# ---------------------------------------------------------------------------------------
# Semaphores

SEM_PROCS = 8
SEM_INCREMENTS = 300


def _guarded_increments(sem_ser, path, n):
    sem = dc.Channel.attach(sem_ser)
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 8)
        for _ in range(n):
            if not sem.poll(event_mask=E.SEMAPHORE_P, timeout=WAIT):
                sys.exit(3)
            v = struct.unpack_from("<q", m, 0)[0]
            time.sleep(0)  # give others a chance to run inside, if they could
            struct.pack_into("<q", m, 0, v + 1)
            sem.poll(event_mask=E.SEMAPHORE_V)
        m.close()


def test_semaphore_guards_a_shared_counter(big_pool, tmp_path):
    path = tmp_path / "counter"
    path.write_bytes(bytes(8))
    sem = dc.Channel(big_pool, 1, bounded_semaphore=True, initial_sem_value=1)
    procs = [_start(_guarded_increments, sem.serialize(), str(path), SEM_INCREMENTS)
             for _ in range(SEM_PROCS)]
    try:
        codes = [_join(p, 120) for p in procs]
        assert codes == [0] * SEM_PROCS
        assert struct.unpack("<q", path.read_bytes())[0] == SEM_PROCS * SEM_INCREMENTS
        res = dc.PollResult()
        assert sem.poll(event_mask=E.SEMAPHORE_PEEK, poll_result=res) and res.value == 1
    finally:
        sem.destroy()


def test_semaphore_operations_and_bounds(big_pool):
    sem = dc.Channel(big_pool, 1, semaphore=True, initial_sem_value=1)
    bsem = dc.Channel(big_pool, 2, bounded_semaphore=True, initial_sem_value=2)
    res = dc.PollResult()
    try:
        assert sem.is_semaphore and bsem.is_semaphore
        assert sem.poll(event_mask=E.SEMAPHORE_P, poll_result=res) and res.value == 1
        assert sem.poll(event_mask=E.SEMAPHORE_P, timeout=0) is False  # at 0: try again
        t0 = time.monotonic()
        assert sem.poll(event_mask=E.SEMAPHORE_P, timeout=0.1) is False
        assert time.monotonic() - t0 >= 0.1
        assert sem.poll(event_mask=E.SEMAPHORE_VZ, timeout=0) is True  # it is 0
        # An unbounded semaphore goes past its initial value.
        for k in range(3):
            assert sem.poll(event_mask=E.SEMAPHORE_V, poll_result=res) and res.value == k
        assert sem.poll(event_mask=E.SEMAPHORE_PEEK, poll_result=res) and res.value == 3
        # A bounded one refuses a V past its initial value.
        with pytest.raises(dc.ChannelValueError):
            bsem.poll(event_mask=E.SEMAPHORE_V)
        assert bsem.poll(event_mask=E.SEMAPHORE_P)
        assert bsem.poll(event_mask=E.SEMAPHORE_V)
        with pytest.raises(dc.ChannelValueError):
            bsem.poll(event_mask=E.SEMAPHORE_V)
        assert bsem.poll(event_mask=E.SEMAPHORE_PEEK, poll_result=res) and res.value == 2
        # No handles on a semaphore channel; capacity applies, message polls do not.
        for ch in (sem, bsem):
            with pytest.raises(dc.ChannelError):
                ch.sendh()
            with pytest.raises(dc.ChannelError):
                ch.recvh()
            with pytest.raises(dc.ChannelError):
                ch.poll(event_mask=E.POLLIN, timeout=0)
            assert ch.poll(event_mask=E.POLLCAPACITY)
        with pytest.raises(dc.ChannelError):
            dc.Channel(big_pool, 3, semaphore=True, bounded_semaphore=True)
        # Channel.create takes the same arguments.
        c = dc.Channel.create(big_pool, 4, semaphore=True, initial_sem_value=5)
        assert c.poll(event_mask=E.SEMAPHORE_PEEK, poll_result=res) and res.value == 5
        c.destroy()
    finally:
        _destroy_quietly(sem, bsem)


def _sem_op_then_report(sem_ser, out_ser, op):
    sem = dc.Channel.attach(sem_ser)
    out = dc.Channel.attach(out_ser)
    s = out.sendh()
    s.open()
    ok = sem.poll(event_mask=op, timeout=WAIT)
    s.send_bytes(b"done" if ok else b"timeout", timeout=WAIT)


@pytest.mark.parametrize("op", [E.SEMAPHORE_P, E.SEMAPHORE_VZ], ids=lambda op: op.name)
def test_semaphore_waiter_in_another_process(big_pool, op):
    # P waits at 0 until a V; VZ waits at 2 until two Ps bring it to 0.
    initial = 0 if op == E.SEMAPHORE_P else 2
    sem = dc.Channel(big_pool, 1, semaphore=True, initial_sem_value=initial)
    out = dc.Channel(big_pool, 2)
    r = out.recvh()
    r.open()
    p = _start(_sem_op_then_report, sem.serialize(), out.serialize(), op)
    try:
        time.sleep(0.3)
        with pytest.raises(dc.ChannelEmpty):
            r.recv_bytes(timeout=0)  # still waiting
        if op == E.SEMAPHORE_P:
            assert sem.poll(event_mask=E.SEMAPHORE_V)
        else:
            assert sem.poll(event_mask=E.SEMAPHORE_P)
            assert sem.poll(event_mask=E.SEMAPHORE_P)
        assert r.recv_bytes(timeout=WAIT) == b"done"
    finally:
        assert _join(p) == 0
        _destroy_quietly(sem, out)


# ---------------------------------------------------------------------------------------
# Channel sets

SET_CHANNELS = 4
SET_MESSAGES = 200


def _tagged_sender(ser, tag, n):
    ch = dc.Channel.attach(ser)
    s = ch.sendh()
    s.open()
    for i in range(n):
        s.send_bytes(struct.pack("<II", tag, i), timeout=WAIT)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: str(m))
def test_channel_set_reports_each_message_once(big_pool, mode):
    # Small channels, so senders also wait for room while the parent is busy.
    chans = [dc.Channel(big_pool, 10 + i, capacity=4) for i in range(SET_CHANNELS)]
    recvhs = {}
    for ch in chans:
        recvhs[id(ch)] = ch.recvh()
        recvhs[id(ch)].open()
    cs = dc.ChannelSet(big_pool, chans)
    procs = [_start(_tagged_sender, ch.serialize(), i, SET_MESSAGES)
             for i, ch in enumerate(chans)]
    try:
        next_seq = [0] * SET_CHANNELS
        for _ in range(SET_CHANNELS * SET_MESSAGES):
            ch, ev = cs.poll(timeout=WAIT, wait_mode=mode)
            assert ev is E.POLLIN
            # The only receiver: a reported message is there to take.
            tag, seq = struct.unpack("<II", recvhs[id(ch)].recv_bytes(timeout=0))
            assert ch is chans[tag]
            assert seq == next_seq[tag]  # exactly once, in order per channel
            next_seq[tag] += 1
        assert next_seq == [SET_MESSAGES] * SET_CHANNELS
    finally:
        codes = [_join(p) for p in procs]
    try:
        assert codes == [0] * SET_CHANNELS
        with pytest.raises(dc.ChannelSetTimeout):
            cs.poll(timeout=0.1)
    finally:
        cs.destroy()
        _destroy_quietly(*chans)


def test_channel_set_timeout(big_pool):
    chans = [dc.Channel(big_pool, i) for i in range(3)]
    cs = dc.ChannelSet(big_pool, chans)
    try:
        with pytest.raises(dc.ChannelSetTimeout):
            cs.poll(timeout=0)
        t0 = time.monotonic()
        with pytest.raises(dc.ChannelSetTimeout):
            cs.poll(timeout=0.2)
        assert time.monotonic() - t0 >= 0.2
        with pytest.raises(TimeoutError):
            cs.poll(timeout=0.05, wait_mode=dc.SPIN_WAIT)
        with pytest.raises(ValueError):
            cs.poll(timeout=-1)
    finally:
        cs.destroy()
        _destroy_quietly(*chans)


def test_channel_set_wakes_on_a_send_from_another_process(big_pool):
    chans = [dc.Channel(big_pool, i) for i in range(3)]
    cs = dc.ChannelSet(big_pool, chans)
    p = _start(_send_later, chans[2].serialize(), 0.2, b"x")
    try:
        assert cs.poll(timeout=WAIT) == (chans[2], E.POLLIN)
    finally:
        assert _join(p) == 0
        cs.destroy()
        _destroy_quietly(*chans)


def _destroy_later(ser, delay):
    ch = dc.Channel.attach(ser)
    time.sleep(delay)
    ch.destroy()


def test_channel_set_reports_a_destroyed_channel(big_pool):
    chans = [dc.Channel(big_pool, i) for i in range(3)]
    cs = dc.ChannelSet(big_pool, chans)
    p = _start(_destroy_later, chans[1].serialize(), 0.2)
    try:
        ch, ev = cs.poll(timeout=WAIT)
        assert ch is chans[1] and ev is E.POLLNOTHING
        # Reported once, then out of the set.
        assert len(cs) == 2 and cs.channels == [chans[0], chans[2]]
        with pytest.raises(dc.ChannelSetTimeout):
            cs.poll(timeout=0.1)
        with pytest.raises(dc.ChannelDestroyed):
            chans[1].poll(timeout=0)
    finally:
        assert _join(p) == 0
        cs.destroy()
        _destroy_quietly(*chans)


def test_channel_set_masks_membership_and_lifecycle(big_pool):
    a = dc.Channel(big_pool, 1, capacity=1)
    b = dc.Channel(big_pool, 2, capacity=1)
    c = dc.Channel(big_pool, 3, capacity=1)
    sem = dc.Channel(big_pool, 4, semaphore=True)
    sa = a.sendh()
    sa.open()
    sa.send_bytes(b"a")  # a is full; b and c are empty
    try:
        cs = dc.ChannelSet(big_pool, [a, b])
        assert cs.event_mask is E.POLLIN and len(cs) == 2
        assert cs.poll(timeout=0) == (a, E.POLLIN)
        cs.event_mask = E.POLLOUT
        assert cs.poll(timeout=0) == (b, E.POLLOUT)
        cs.event_mask = E.POLLFULL
        assert cs.poll(timeout=0) == (a, E.POLLFULL)
        cs.event_mask = E.POLLEMPTY
        assert cs.poll(timeout=0) == (b, E.POLLEMPTY)
        cs.event_mask = E.POLLIN | E.POLLOUT
        assert {cs.poll(timeout=0) for _ in range(2)} == {(a, E.POLLIN), (b, E.POLLOUT)}
        with pytest.raises(dc.ChannelSetError):
            cs.event_mask = E.POLLSIZE
        # Add and remove (by the object given).
        cs.event_mask = E.POLLIN
        cs.remove(a)
        with pytest.raises(ValueError):
            cs.remove(a)
        with pytest.raises(dc.ChannelSetTimeout):
            cs.poll(timeout=0)
        cs.add(c)
        sc = c.sendh()
        sc.open()
        sc.send_bytes(b"c")
        assert cs.poll(timeout=0) == (c, E.POLLIN)
        assert cs.channels == [b, c]
        with pytest.raises(dc.ChannelSetError):
            cs.add(sem)
        with pytest.raises(TypeError):
            pickle.dumps(cs)  # not shareable: each process makes its own
        cs.destroy()
        with pytest.raises(dc.ChannelSetError):
            cs.poll(timeout=0)
        with pytest.raises(dc.ChannelSetError):
            cs.destroy()

        # Constructor checks (Dragon's signature).
        with pytest.raises(dc.ChannelSetError):
            dc.ChannelSet(big_pool, [a, "not a channel"])
        with pytest.raises(dc.ChannelSetError):
            dc.ChannelSet(big_pool, [a, sem])
        with pytest.raises(dc.ChannelSetError):
            dc.ChannelSet(big_pool, [a], event_mask=E.POLLBARRIER)
        with pytest.raises(dc.ChannelSetError):
            dc.ChannelSet(big_pool, [a], num_allowed_spin_waiters=0)
        empty = dc.ChannelSet(big_pool, [], lock_type=None, num_allowed_spin_waiters=5,
                              capture_all_events=False)
        with pytest.raises(dc.ChannelSetError):
            empty.poll(timeout=0)
        with dc.ChannelSet(big_pool, [a], event_mask=E.POLLFULL) as cs2:
            assert cs2.poll(timeout=0, wait_mode=dc.ADAPTIVE_WAIT) == (a, E.POLLFULL)
        with pytest.raises(dc.ChannelSetError):
            cs2.poll(timeout=0)
    finally:
        _destroy_quietly(a, b, c, sem)


# ---------------------------------------------------------------------------------------
# Ctrl-C

CHILD_BLOCKED_POLL = """
import sys
import dragon_channels as dc
ch = dc.Channel.attach(bytes.fromhex(sys.argv[1]))
print("ready", flush=True)
try:
    if sys.argv[2] == "set":
        dc.ChannelSet(dc.MemoryPool.attach(sys.argv[3]), [ch]).poll()
    else:
        ch.poll(timeout=None, event_mask=dc.EventType.POLLIN)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("returned?!", flush=True)
"""


@pytest.mark.parametrize("what", ["poll", "set"])
def test_ctrl_c_interrupts_a_blocked_poll(big_pool, what):
    ch = dc.Channel(big_pool, 1)
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD_BLOCKED_POLL, ch.serialize().hex(), what, big_pool.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it block
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        ch.destroy()
    assert p.returncode == 3, err
    assert "interrupted" in out
