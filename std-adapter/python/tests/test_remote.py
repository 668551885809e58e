"""Remote channels from Python: two "nodes" on this machine, each a `dragon-gateway` process
(TCP transport) with its own host id, each starting this file as its node's client. A
channel of the other node attaches as a remote channel with the same handles, timeouts and
errors as a local one."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import dragon_channels as dc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _gateway_binary():
    """The gateway (the workspace's `dragon-gateway`): `$DRAGON_GATEWAY` when set (a binary
    built elsewhere, e.g. for test-abi3.sh's chroot), else built here with cargo."""
    given = os.environ.get("DRAGON_GATEWAY")
    if given:
        assert os.access(given, os.X_OK), given
        return given
    if shutil.which("cargo") is None:
        pytest.skip("needs cargo to build the gateway, or DRAGON_GATEWAY naming a built one")
    subprocess.run(
        ["cargo", "build", "-q", "-p", "dragon-channels-gateway", "--bin", "dragon-gateway"],
        cwd=REPO,
        check=True,
    )
    path = os.path.join(REPO, "target", "debug", "dragon-gateway")
    assert os.access(path, os.X_OK), path
    return path


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_remote_channel_from_python():
    gw = _gateway_binary()
    with tempfile.TemporaryDirectory() as d:
        peers = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
        procs = []
        for r in range(2):
            env = dict(os.environ, DC_DIR=d, DRAGON_CHANNELS_HOST_ID=str(0x2000 + r))
            procs.append(
                subprocess.Popen(
                    [gw, "--transport", "tcp", "--rank", str(r), "--peers", peers,
                     "--pool", f"dcpyg{os.getpid()}-{r}", "--", sys.executable, __file__],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            )
        try:
            for p in procs:
                assert p.wait(timeout=120) == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


# ---- the client (run by each gateway) ----


def _publish(d, name, ch):
    tmp = os.path.join(d, "." + name)
    with open(tmp, "wb") as f:
        f.write(ch.serialize())
    os.rename(tmp, os.path.join(d, name))


def _fetch(d, name):
    t0 = time.monotonic()
    while not os.path.exists(os.path.join(d, name)):
        assert time.monotonic() - t0 < 60, name
        time.sleep(0.005)
    with open(os.path.join(d, name), "rb") as f:
        return dc.Channel.attach(f.read())


def _barrier(d, name, rank):
    open(os.path.join(d, f"{name}-{rank}"), "w").close()
    t0 = time.monotonic()
    while not all(os.path.exists(os.path.join(d, f"{name}-{r}")) for r in range(2)):
        assert time.monotonic() - t0 < 60, name
        time.sleep(0.005)


def _client():
    d = os.environ["DC_DIR"]
    rank = int(os.environ["DRAGON_GW_RANK"])
    pool = dc.MemoryPool(1 << 22, f"dcpyc{os.getpid()}", 0, None)
    mine = dc.Channel(pool, 5)
    _publish(d, f"ch{rank}", mine)
    other = _fetch(d, f"ch{1 - rank}")
    s = other.sendh()
    s.open()
    lr = mine.recvh()
    lr.open()
    if rank == 0:
        rr = other.recvh()
        rr.open()
        with pytest.raises(dc.ChannelEmpty):
            rr.recv_bytes(blocking=False)
        t0 = time.monotonic()
        with pytest.raises(dc.ChannelRecvTimeout):
            rr.recv_bytes(timeout=0.05)
        assert time.monotonic() - t0 >= 0.05
        assert not other.poll(timeout=0, event_mask=dc.EventType.POLLIN)
        assert other.capacity == 100
        m = dc.Message.create_alloc(pool, 5)
        m.bytes_memview()[:] = b"hello"
        s.send(m, timeout=10)
        t = dc.Message.create_alloc(pool, 3000)
        t.bytes_memview()[:] = b"x" * 3000
        s.send(t, ownership=dc.transfer_ownership_on_send, timeout=10)
        s.send_bytes(b"bytes", timeout=10)
        assert lr.recv_bytes(timeout=30) == b"node 1 saw 3"
        assert other.poll(timeout=5, event_mask=dc.EventType.POLLIN)
        got = rr.recv(timeout=10)
        assert got.tobytes() == b"back"
        q = other.sendh(return_mode=dc.ChannelSendReturnWhen.WHEN_NONE)
        q.open()
        _barrier(d, "got-back", rank)
        q.send_bytes(b"queued", timeout=10)
    else:
        assert lr.recv_bytes(timeout=30) == b"hello"
        assert lr.recv(timeout=10).tobytes() == b"x" * 3000
        assert lr.recv_bytes(timeout=10) == b"bytes"
        ls = mine.sendh()
        ls.open()
        ls.send_bytes(b"back", timeout=10)
        s.send_bytes(b"node 1 saw 3", timeout=10)
        _barrier(d, "got-back", rank)
        assert lr.recv_bytes(timeout=30) == b"queued"
    _barrier(d, "end", rank)
    mine.destroy()
    pool.destroy()


if __name__ == "__main__":
    _client()
