"""Two Python processes (multiprocessing, spawn) on one channel; Ctrl-C in a blocked recv."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dragon_channels as dc

CTX = mp.get_context("spawn")


def _echo_child(req_ser, resp_ser, n):
    """Attaches both channels from bytes and echoes `n` messages back, upper-cased."""
    req = dc.Channel.attach(req_ser)
    resp = dc.Channel.attach(resp_ser)
    r = req.recvh()
    r.open()
    s = resp.sendh()
    s.open()
    for _ in range(n):
        s.send_bytes(r.recv_bytes(timeout=20).upper(), timeout=20)


def _view_child(ch_ser, pool_ser):
    """Writes through a memoryview of a message in its pool, sends it by transfer, then
    receives the parent's reply into a message and checks it through a memoryview."""
    pool = dc.MemoryPool.attach(pool_ser)
    ch = dc.Channel.attach(ch_ser)
    s = ch.sendh()
    s.open()
    m = dc.Message.create_alloc(pool, 4096)
    v = m.bytes_memview()
    v[:] = bytes(i % 251 for i in range(4096))
    v.release()
    s.send(m, ownership=dc.transfer_ownership_on_send, timeout=20)


def _run(target, *args):
    p = CTX.Process(target=target, args=args)
    p.start()
    return p


def _join(p):
    p.join(30)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail("child process hung")
    assert p.exitcode == 0


def test_two_processes_exchange_messages(pool):
    req = dc.Channel(pool, 11)
    resp = dc.Channel(pool, 12)
    n = 200
    p = _run(_echo_child, req.serialize(), resp.serialize(), n)
    try:
        s = req.sendh()
        s.open()
        r = resp.recvh()
        r.open()
        for i in range(n):
            s.send_bytes(f"msg {i}".encode(), timeout=20)
            assert r.recv_bytes(timeout=20) == f"MSG {i}".encode()
    finally:
        _join(p)


def test_channel_pickled_to_child(pool):
    # Channel objects pickle as their serialized descriptor, so they can be passed directly.
    req = dc.Channel(pool, 21)
    resp = dc.Channel(pool, 22)
    p = CTX.Process(target=_echo_pickled_child, args=(req, resp))
    p.start()
    try:
        s = req.sendh()
        s.open()
        r = resp.recvh()
        r.open()
        s.send_bytes(b"pickled")
        assert r.recv_bytes(timeout=20) == b"PICKLED"
    finally:
        _join(p)


def _echo_pickled_child(req, resp):
    _echo_child(req.serialize(), resp.serialize(), 1)


def test_memoryview_written_in_one_process_read_in_another(pool):
    ch = dc.Channel(pool, 31)
    p = _run(_view_child, ch.serialize(), pool.serialize())
    try:
        r = ch.recvh()
        r.open()
        got = r.recv(timeout=20)
        v = got.bytes_memview()
        assert v.nbytes == 4096
        assert bytes(v) == bytes(i % 251 for i in range(4096))
        v.release()
    finally:
        _join(p)


CHILD_BLOCKED_RECV = textwrap.dedent(
    """
    import sys
    import dragon_channels as dc
    ch = dc.Channel.attach(bytes.fromhex(sys.argv[1]))
    r = ch.recvh()
    r.open()
    print("ready", flush=True)
    try:
        r.recv(timeout=None)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
    print("received?!", flush=True)
    """
)


def test_ctrl_c_interrupts_blocked_recv(channel):
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD_BLOCKED_RECV, channel.serialize().hex()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it block in recv
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=10)
        assert time.monotonic() - t0 < 2.0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 3, err
    assert "interrupted" in out
