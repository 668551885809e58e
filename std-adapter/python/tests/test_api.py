"""Each class, method and exception of the binding, in one process."""

import os
import threading
import time

import pytest

import dragon_channels as dc
from conftest import unique_name


def test_exception_hierarchy():
    for name in ("ChannelFull", "ChannelEmpty", "ChannelTimeout"):
        cls = getattr(dc, name)
        assert issubclass(cls, dc.ChannelError)
        assert issubclass(cls, TimeoutError)
    for name in (
        "ChannelSendError",
        "ChannelRecvError",
        "ChannelHandleNotOpenError",
        "ChannelDestroyed",
        "MemoryPoolError",
    ):
        assert issubclass(getattr(dc, name), dc.ChannelError)
        assert not issubclass(getattr(dc, name), TimeoutError)
    assert dc.ChannelError.__module__ == "dragon_channels"


def test_pool_create_serialize_attach_destroy(pool_name):
    p = dc.MemoryPool(1 << 16, pool_name, 7, None)
    assert os.path.exists(f"/dev/shm/{pool_name}")
    assert p.name == pool_name and p.uid == 7 and p.size >= 1 << 16
    assert 0 < p.free_space <= p.size
    ser = p.serialize()
    assert isinstance(ser, bytes)
    q = dc.MemoryPool.attach(ser)
    assert q.name == pool_name
    r = dc.MemoryPool.attach(pool_name)
    assert r.uid == 7
    with pytest.raises(dc.MemoryPoolError):
        dc.MemoryPool(1 << 16, pool_name, 0)  # exists
    q.detach()
    with pytest.raises(dc.MemoryPoolError):
        q.serialize()
    p.destroy()
    assert not os.path.exists(f"/dev/shm/{pool_name}")
    with pytest.raises(dc.MemoryPoolError):
        p.destroy()
    with pytest.raises(dc.MemoryPoolError):
        dc.MemoryPool.attach(ser)
    with pytest.raises(dc.ChannelError):  # MemoryPoolError is a ChannelError
        dc.MemoryPool(1 << 16, "bad/name", 0)
    with pytest.raises(TypeError):
        dc.MemoryPool(1 << 16, unique_name(), 0, "not a list of counts")


def test_channel_create_attach_serialize(pool):
    ch = dc.Channel.create(pool, 3, capacity=8, block_size=256)
    assert (ch.cuid, ch.capacity, ch.block_size, ch.num_msgs) == (3, 8, 256, 0)
    with pytest.raises(dc.ChannelError):
        dc.Channel(pool, 3)  # uid in use
    ser = ch.serialize()
    assert isinstance(ser, bytes)
    ch2 = dc.Channel.attach(ser)
    assert ch2.cuid == 3
    with pytest.raises(dc.ChannelError):
        dc.Channel.attach(b"garbage")
    with pytest.raises(dc.ChannelError):
        dc.Channel(pool, 4, attr={"x": 1})
    ch2.detach(serialize=True)
    assert ch2.serialize() == ser  # kept by detach(serialize=True)
    with pytest.raises(dc.ChannelError):
        ch2.sendh()
    ch3 = dc.Channel.attach(ser)
    ch3.detach()
    with pytest.raises(dc.ChannelError):
        ch3.serialize()
    s = ch.sendh()
    ch.destroy()
    with pytest.raises(dc.ChannelError):
        ch.destroy()
    with pytest.raises(dc.ChannelDestroyed):
        s.open()
    with pytest.raises(dc.ChannelError):
        dc.Channel.attach(ser)


def test_message_create_destroy_memview(pool):
    free0 = pool.free_space
    m = dc.Message.create_alloc(pool, 512)
    assert len(m) == 512 and m.capacity >= 512 and m.has_memory
    v = m.bytes_memview()
    assert isinstance(v, memoryview) and not v.readonly and v.nbytes == 512
    v[0:5] = b"Hello"
    # A real view of the shared memory: a second view sees the write, no copy.
    assert bytes(m.bytes_memview()[0:5]) == b"Hello"
    assert m.tobytes()[:5] == b"Hello"
    m.hints, m.clientid = 5, 9
    assert (m.hints, m.clientid) == (5, 9)
    m.destroy()  # views exist: the memory is zeroed and kept until they go
    assert not m.has_memory and bytes(v[0:5]) == bytes(5)
    assert pool.free_space < free0
    v.release()
    assert pool.free_space == free0
    with pytest.raises(dc.ChannelError):
        m.bytes_memview()
    e = dc.Message.create_empty()
    assert len(e) == 0 and not e.has_memory
    with pytest.raises(dc.ChannelError):
        dc.Message.create_alloc(pool, 1 << 30)
    m2 = dc.Message.create_alloc(pool, 64)
    m2.destroy(free_mem=False)  # memory stays allocated
    assert pool.free_space < free0


def test_memview_keeps_message_alive(pool):
    v = dc.Message.create_alloc(pool, 100).bytes_memview()
    v[:] = b"x" * 100  # the Message object has no other reference
    assert bytes(v) == b"x" * 100
    v.release()


def test_handles_open_close(channel):
    s, r = channel.sendh(), channel.recvh()
    assert not s.is_open
    with pytest.raises(dc.ChannelHandleNotOpenError):
        s.send_bytes(b"x")
    with pytest.raises(dc.ChannelHandleNotOpenError):
        r.recv_bytes()
    with pytest.raises(dc.ChannelHandleNotOpenError):
        s.close()
    s.open()
    r.open()
    with pytest.raises(dc.ChannelError):
        s.open()
    s.close()
    r.close()


def test_send_copy_and_recv(pool, handles):
    s, r = handles
    msg = dc.Message.create_alloc(pool, 512)
    msg.bytes_memview()[0:5] = b"Hello"
    msg.hints = 3
    s.send(msg)
    s.send(msg, ownership=dc.copy_on_send)
    assert msg.has_memory  # copy keeps it
    got = r.recv()
    assert bytes(got.bytes_memview()[0:5]) == b"Hello" and len(got) == 512 and got.hints == 3
    dest = dc.Message.create_alloc(pool, 1024)
    assert r.recv(dest) is dest
    assert len(dest) == 512 and dest.tobytes()[:5] == b"Hello"
    small = dc.Message.create_alloc(pool, 16)
    s.send(msg)
    with pytest.raises(dc.ChannelRecvError):
        r.recv(small)
    assert r.recv_bytes()[:5] == b"Hello"  # stayed queued


def test_send_dest_msg(pool, handles):
    s, r = handles
    msg = dc.Message.create_alloc(pool, 64)
    msg.bytes_memview()[:3] = b"abc"
    dest = dc.Message.create_alloc(pool, 128)
    s.send(msg, dest)
    assert not dest.has_memory  # its memory went into the channel
    got = r.recv()
    assert got.tobytes()[:3] == b"abc" and len(got) == 64
    with pytest.raises(dc.ChannelSendError):
        s.send(msg, dc.Message.create_empty())
    with pytest.raises(dc.ChannelSendError):  # 16 bytes round up to one 64-byte block
        s.send(dc.Message.create_alloc(pool, 100), dc.Message.create_alloc(pool, 16))
    with pytest.raises(dc.ChannelSendError):
        s.send(dc.Message.create_empty())
    with pytest.raises(ValueError):
        s.send(msg, msg)


def test_send_transfer(pool, handles):
    s, r = handles
    msg = dc.Message.create_alloc(pool, 2000)
    v = msg.bytes_memview()
    v[:4] = b"zero"
    # With a live view the payload is copied; the message is left empty either way and the
    # view keeps reading the bytes sent.
    s.send(msg, ownership=dc.transfer_ownership_on_send)
    assert not msg.has_memory and bytes(v[:4]) == b"zero"
    got = r.recv()
    assert got.tobytes()[:4] == b"zero" and len(got) == 2000
    v.release()
    msg = dc.Message.create_alloc(pool, 2000)
    msg.bytes_memview()[:4] = b"once"
    s.send(msg, ownership=dc.OwnershipOnSend.transfer_ownership_on_send)
    assert not msg.has_memory
    got = r.recv()
    assert got.tobytes()[:4] == b"once" and len(got) == 2000
    with pytest.raises(ValueError):
        s.send(got, dc.Message.create_empty(), ownership=dc.transfer_ownership_on_send)


def test_send_bytes_recv_bytes(pool, handles):
    s, r = handles
    x = bytearray(512)
    x[0:5] = b"Hello"
    s.send_bytes(x, 512)
    y = r.recv_bytes()
    assert isinstance(y, bytes) and y == bytes(x)
    s.send_bytes(b"abc")
    assert r.recv_bytes() == b"abc"
    s.send_bytes(b"abc", 8)
    assert r.recv_bytes() == b"abc" + bytes(5)
    with pytest.raises(dc.ChannelSendError):
        s.send_bytes(b"abcdef", 2)
    big = os.urandom(100_000)  # larger than the block size: side allocation
    s.send_bytes(memoryview(big))
    assert r.recv_bytes() == big
    dest = dc.Message.create_alloc(pool, 64)
    s.send_bytes(b"hey", dest_msg=dest)
    assert r.recv().tobytes() == b"hey"
    # Intermixed: bytes in, message out and vice versa.
    s.send_bytes(b"q" * 10)
    assert r.recv().tobytes() == b"q" * 10
    m = dc.Message.create_alloc(pool, 4)
    m.bytes_memview()[:] = b"wxyz"
    s.send(m)
    assert r.recv_bytes() == b"wxyz"


def test_timeouts(pool):
    ch = dc.Channel(pool, 9, capacity=1)
    s, r = ch.sendh(), ch.recvh()
    s.open()
    r.open()
    with pytest.raises(dc.ChannelEmpty):
        r.recv(blocking=False)
    with pytest.raises(dc.ChannelEmpty):
        r.recv_bytes(timeout=0)
    t0 = time.monotonic()
    with pytest.raises(dc.ChannelTimeout):
        r.recv(timeout=0.3)
    assert 0.28 < time.monotonic() - t0 < 2.0
    with pytest.raises(TimeoutError):
        r.recv_bytes(timeout=0.05)
    with pytest.raises((ValueError, dc.ChannelError)):
        r.recv(timeout=-1)
    with pytest.raises((ValueError, dc.ChannelError)):
        s.send_bytes(b"x", timeout=-0.5)
    s.send_bytes(b"1")
    with pytest.raises(dc.ChannelFull):
        s.send_bytes(b"2", blocking=False)
    with pytest.raises(dc.ChannelFull):
        s.send_bytes(b"2", timeout=0)
    with pytest.raises(dc.ChannelTimeout):
        s.send_bytes(b"2", timeout=0.1)
    m = dc.Message.create_alloc(pool, 8)
    with pytest.raises(dc.ChannelTimeout):
        s.send(m, ownership=dc.transfer_ownership_on_send, timeout=0.1)
    assert m.has_memory  # handed back after the failed transfer
    assert r.recv_bytes(timeout=None) == b"1"
    assert s.USE_CHANNEL_SENDH_DEFAULT is dc.ChannelSendH.USE_CHANNEL_SENDH_DEFAULT
    assert r.recv is not None and dc.ChannelRecvH.USE_CHANNEL_RECVH_DEFAULT is dc.USE_DEFAULT
    # Handle defaults: a recvh made with timeout=0.1 times out by default.
    r2 = ch.recvh(timeout=0.1)
    r2.open()
    with pytest.raises(dc.ChannelTimeout):
        r2.recv(timeout=dc.ChannelRecvH.USE_CHANNEL_RECVH_DEFAULT)
    with pytest.raises(dc.ChannelEmpty):
        r2.recv(blocking=False)
    ch.destroy()


def test_blocking_recv_releases_gil(pool, handles):
    s, r = handles
    out = []
    t = threading.Thread(target=lambda: out.append(r.recv_bytes(timeout=10)))
    t.start()
    time.sleep(0.2)  # the main thread runs while the other blocks: the GIL is free
    s.send_bytes(b"wake")
    t.join(10)
    assert out == [b"wake"]


def test_pickle_channel(channel):
    import pickle

    ch2 = pickle.loads(pickle.dumps(channel))
    assert ch2.cuid == channel.cuid
