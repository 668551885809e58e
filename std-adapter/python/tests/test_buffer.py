"""The buffer protocol (src/buffer.rs), which the abi3 wheel carries itself so that it works
the same on CPython 3.9, 3.10 and 3.11+: memoryviews export pool memory in place (no copy),
writable; `send_bytes` reads any byte buffer; exports are counted and released."""

import array
import asyncio
import ctypes
import mmap

import pytest

import dragon_channels as dc


def address(view):
    """The address of a writable view's first byte."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_memoryview_of_a_message_is_its_payload_in_place(pool):
    m = dc.Message.create_alloc(pool, 64)
    v = memoryview(m)
    assert v.obj is m and not v.readonly and v.nbytes == 64 and v.format == "B"
    w = m.bytes_memview()
    assert w.obj is m
    # Two views, one memory: the same address, and a write through one shows in the other.
    assert address(v) == address(w)
    v[0:5] = b"Hello"
    assert bytes(w[0:5]) == b"Hello" and bytes(m)[0:5] == b"Hello"
    v.release()
    w.release()
    m.destroy()  # no view is left: the memory is freed now


def test_memoryview_of_an_allocation_is_its_memory_in_place(pool):
    mem = pool.alloc(128)
    v = mem.get_memview()
    assert v.obj is mem and not v.readonly and v.nbytes == 128
    assert address(v) == mem.get_int_ptr()
    clone = mem.clone(offset=16, length=8)
    assert address(memoryview(clone)) == mem.get_int_ptr() + 16
    memoryview(clone)[0:3] = b"abc"
    assert bytes(v[16:19]) == b"abc"
    v.release()
    mem.free()


def test_a_failed_export_leaves_nothing_counted(handles):
    s, r = handles
    e = dc.Message.create_empty()
    with pytest.raises(dc.ChannelError):
        memoryview(e)
    # A counted view would make this a BufferError ("memoryview(s) ... exist").
    with pytest.raises(dc.ChannelError) as info:
        s.send_bytes(b"abc", dest_msg=e)
    assert not isinstance(info.value, BufferError) and "memoryview" not in str(info.value)


def test_destroy_with_a_live_memoryview_of_the_message_succeeds(pool):
    free0 = pool.free_space
    m = dc.Message.create_alloc(pool, 64)
    v = memoryview(m)
    v[:3] = b"old"
    m.destroy()
    assert bytes(v[:3]) == bytes(3)  # zeroed, still mapped, not yet reused
    assert pool.free_space < free0
    v.release()
    assert pool.free_space == free0


def test_send_bytes_takes_any_contiguous_byte_buffer(handles):
    s, r = handles
    data = bytes(range(100))
    with mmap.mmap(-1, 100) as mm:
        mm[:] = data
        for buf in (data, bytearray(data), memoryview(data), array.array("B", data), mm,
                    memoryview(data).cast("c"), memoryview(bytearray(data))[10:20]):
            s.send_bytes(buf)
            assert r.recv_bytes() == bytes(memoryview(buf).cast("B"))


def test_send_bytes_rejects_what_is_not_a_contiguous_byte_buffer(handles):
    s, r = handles
    with pytest.raises(BufferError, match="contiguous"):
        s.send_bytes(memoryview(bytes(range(10)))[::2])
    with pytest.raises(BufferError, match="not bytes"):
        s.send_bytes(array.array("i", [1, 2, 3]))
    with pytest.raises(TypeError):
        s.send_bytes("text")  # type: ignore[arg-type]
    # Nothing was sent, and no export was left behind: a bytearray can still grow.
    b = bytearray(b"ab")
    s.send_bytes(b)
    b.extend(b"cd")
    assert r.recv_bytes() == b"ab"
    with pytest.raises(dc.ChannelEmpty):
        r.recv_bytes(blocking=False)


def test_send_bytes_async_copies_any_byte_buffer(handles):
    s, r = handles

    async def main():
        await s.send_bytes_async(memoryview(bytes(range(10)))[::2])

    asyncio.run(main())
    assert r.recv_bytes() == bytes(range(0, 10, 2))
