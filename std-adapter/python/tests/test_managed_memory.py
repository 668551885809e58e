"""dragon_channels.managed_memory: pools, allocations and their exceptions, as Dragon's
``dragon.managed_memory`` behaves (what Dragon's test_basic_mempool.py and test_mempool.py
check), with the import line the only change."""

import multiprocessing as mp
import os
import pickle
import time

import pytest

from dragon_channels.dtypes import DragonError
from dragon_channels.managed_memory import (
    AllocType,
    DragonMemoryError,
    DragonPoolAllocationNotAvailable,
    DragonPoolAttachFail,
    DragonPoolCreateFail,
    DragonPoolError,
    MemoryAlloc,
    MemoryAllocations,
    MemoryPool,
)

from dragon_channels.channels import Message

from conftest import unique_name

CTX = mp.get_context("spawn")


@pytest.fixture
def small_pool(pool_name):
    p = MemoryPool(32768, pool_name, 1, None)
    yield p
    try:
        p.destroy()
    except DragonPoolError:
        pass


def _remote(ser, *offsets):
    b = bytearray(ser)
    for o in offsets:
        b[o] = 99
    return bytes(b)


# ---- pool creation ----------------------------------------------------------------------

def test_pool_size_rounds_up_to_a_power_of_two(pool_name):
    p = MemoryPool(40000, pool_name, 1, None)
    assert p.size == 65536
    p.destroy()


@pytest.mark.parametrize("size", [0, 100])
def test_pool_too_small_raises_create_fail_saying_the_size_needed(pool_name, size):
    with pytest.raises(DragonPoolCreateFail, match="at least 320 bytes"):
        MemoryPool(size, pool_name, 1, None)


@pytest.mark.parametrize("name", ["", "a" * 237, "a" * 4096, "bad/name"])
def test_bad_pool_names_raise_create_fail(name):
    with pytest.raises(DragonPoolCreateFail):
        MemoryPool(32768, name, 1, None)


def test_long_and_odd_names_get_a_file_and_attach_by_name():
    for name in ["a" * 236, f"pool <{os.getpid()}> x", "12345"]:
        p = MemoryPool(32768, name, 1, None)
        assert p.name == name and os.path.exists(f"/dev/shm/{p.file_name}")
        q = MemoryPool.attach(name)
        assert q.file_name == p.file_name
        q.detach()
        f = p.file_name
        p.destroy()
        assert not os.path.exists(f"/dev/shm/{f}")


@pytest.mark.parametrize(
    "args, exc",
    [
        (("32768", "x", 1, None), TypeError),
        ((34567.9, "x", 1, None), TypeError),
        ((32768, 12345, 1, None), TypeError),
        ((32768, "x", "1", None), TypeError),
        ((32768, "x", 1.8, None), TypeError),
        ((32768,), TypeError),
        ((32768, "x", 1, None, None), TypeError),
        ((-12, "x", 1, None), OverflowError),
        ((32768, "x", -1, None), OverflowError),
    ],
)
def test_pool_argument_types_are_checked(args, exc):
    with pytest.raises(exc):
        MemoryPool(*args)


def test_pool_uids_zero_and_above_two_to_the_63_work(pool_name):
    for uid in (0, 2**63 + 1234):
        p = MemoryPool(32768, pool_name, uid, None)
        assert p.uid == uid
        p.destroy()


def test_pool_with_pre_alloc_blocks_and_large_sparse_pools(pool_name):
    p = MemoryPool(2**31, pool_name, 1, [8, 16, 11])
    assert p.size == 2**31
    p.destroy()


def test_a_taken_name_raises_create_fail(pool_name):
    p = MemoryPool(34567, pool_name, 1, None)
    with pytest.raises(DragonPoolCreateFail):
        MemoryPool(45678, pool_name, 2, None)
    p.destroy()


def test_destroying_an_uncreated_pool_raises_pool_error():
    p = MemoryPool.__new__(MemoryPool)
    with pytest.raises(DragonPoolError):
        p.destroy()


def test_attaching_a_destroyed_pool_raises_attach_fail(pool_name):
    p = MemoryPool(32768, pool_name, 1, None)
    ser = p.serialize()
    p.destroy()
    with pytest.raises(DragonPoolAttachFail):
        MemoryPool.attach(ser)
    with pytest.raises(DragonPoolError):
        p.alloc(512)


def test_serialized_uid_fname_reads_a_descriptor_without_attaching(small_pool, pool_name):
    assert MemoryPool.serialized_uid_fname(small_pool.serialize()) == (
        1, f"/_dragon_{pool_name}_manifest")


def test_return_codes_have_dragon_names():
    assert (DragonError.SUCCESS.name, DragonError.SUCCESS.value) == ("SUCCESS", 0)
    assert DragonError.INVALID_ARGUMENT.name == "INVALID_ARGUMENT"


# ---- allocations ------------------------------------------------------------------------

def test_alloc_and_free_change_the_allocation_count(small_pool):
    mem = small_pool.alloc(512)
    allocs = small_pool.get_allocations()
    assert isinstance(allocs, MemoryAllocations) and allocs.num_allocs == 1
    assert allocs.alloc_id(0) == 1 == mem.id
    assert allocs.alloc_type(0) is AllocType.DATA and allocs.alloc_type(0).value == 0
    assert small_pool.allocation_exists(AllocType.DATA, mem.id)
    mem.free()
    assert small_pool.get_allocations().num_allocs == 0
    assert not small_pool.allocation_exists(AllocType.DATA, mem.id)


@pytest.mark.parametrize("pool_size", [32768, 1 << 20, 64 << 20, 1 << 30])
def test_the_first_allocation_of_a_fresh_pool_has_id_1(pool_name, pool_size):
    """Whatever the pool's size, and after messages of the same thread used the pool (its
    cache of small blocks): allocations are the pool's, numbered from 1 as Dragon's."""
    pool = MemoryPool(pool_size, pool_name, 1, None)
    try:
        for _ in range(3):
            Message.create_alloc(pool, 64).destroy()
        first, second = pool.alloc(512), pool.alloc(64)
        assert (first.id, second.id) == (1, 2)
        assert pool.get_allocations().alloc_id(0) == 1
        assert pool.alloc_from_id(2).size == 64
        first.free()
        second.free()
        assert pool.get_allocations().num_allocs == 0
    finally:
        pool.destroy()


@pytest.mark.parametrize("size, exc", [("512", TypeError), (512.5, TypeError),
                                       (-1, OverflowError), (0, RuntimeError)])
def test_alloc_argument_checks(small_pool, size, exc):
    with pytest.raises(exc):
        small_pool.alloc(size)


def test_alloc_the_whole_pool_and_the_smallest_block(pool_name):
    p = MemoryPool(100000, pool_name, 1, None)
    mem = p.alloc(100000)
    assert p.get_allocations().num_allocs == 1
    mem.free()
    mem = p.alloc(1)
    mem.free()
    p.destroy()


def test_exhausting_the_pool_raises_allocation_not_available(small_pool):
    allocs = []
    with pytest.raises(DragonPoolAllocationNotAvailable) as e:
        while True:
            allocs.append(small_pool.alloc(1))
    assert "DRAGON_DYNHEAP_REQUESTED_SIZE_NOT_AVAILABLE" in str(e.value)
    assert len(allocs) == 32768 // 64
    for a in allocs:
        a.free()
    assert small_pool.free_space == 32768


def test_out_of_memory_is_a_dragon_memory_error(small_pool):
    a, b = small_pool.alloc(10000), small_pool.alloc(10000)
    with pytest.raises(DragonMemoryError):
        small_pool.alloc(5000)
    with pytest.raises(DragonMemoryError, match="can never fit"):
        small_pool.alloc(1 << 20)
    a.free()
    b.free()


def test_random_power_of_two_allocations_fill_the_pool_exactly(small_pool):
    for order in range(6, 16):
        allocs = [small_pool.alloc(1 << order) for _ in range(32768 >> order)]
        with pytest.raises(DragonPoolAllocationNotAvailable):
            small_pool.alloc(1)
        for a in allocs:
            a.free()


def test_clone_is_a_window_of_the_same_allocation(small_pool):
    mem = small_pool.alloc(512)
    mem.get_memview()[100] = 75
    mem2 = mem.clone(100)
    assert mem2.get_memview()[0] == 75 and mem.size == mem2.size + 100
    assert mem2.is_the_same_as(mem) and small_pool.get_allocations().num_allocs == 1
    mem3 = mem.clone(10, 20)
    assert mem3.size == 20
    with pytest.raises(ValueError):
        mem.clone(600)
    mem2.free()  # frees the whole allocation, as Dragon's
    assert small_pool.get_allocations().num_allocs == 0


def test_copy_clear_hash_and_equality_are_by_content(small_pool):
    a = small_pool.alloc(64)
    a.get_memview()[:] = bytes(range(64))
    b = a.copy()
    assert b == a and hash(b) == hash(a) and not b.is_the_same_as(a)
    b.clear(0, 8)
    assert bytes(b.get_memview()[:8]) == bytes(8) and b != a
    b.clear()
    assert bytes(b.get_memview()) == bytes(64)
    assert small_pool.alloc_from_id(a.id).is_the_same_as(a)
    with pytest.raises(DragonPoolError):
        small_pool.alloc_from_id(9999)
    assert a.pool.name == small_pool.name
    a.free()
    b.free()


def test_a_stale_view_after_free_stays_mapped(pool_name):
    p = MemoryPool(32768, pool_name, 1, None)
    a = p.alloc(64)
    v = a.get_memview()
    a.free()
    p.destroy()
    v[0] = 1  # the pool stays mapped while the view lives: no crash
    assert v[0] == 1
    with pytest.raises(DragonMemoryError):
        a.get_memview()


# ---- descriptors ------------------------------------------------------------------------

def test_attached_allocations_share_memory(small_pool):
    m1 = small_pool.alloc(512)
    m2 = MemoryAlloc.attach(m1.serialize())
    m3 = MemoryAlloc.attach(m2.serialize())
    m2.get_memview()[0:5] = b"Hello"
    assert bytes(m1.get_memview()[0:5]) == bytes(m3.get_memview()[0:5]) == b"Hello"
    m2.detach()
    with pytest.raises(DragonMemoryError):
        m2.get_memview()
    m1.free()


@pytest.mark.parametrize("what", [1, "pool", "alloc", "pool_obj"])
def test_attach_refuses_what_is_not_a_descriptor(small_pool, what):
    arg = {"alloc": None, "pool_obj": small_pool}.get(what, what)
    mem = small_pool.alloc(512)
    if what == "alloc":
        arg = mem
    with pytest.raises(TypeError):
        MemoryAlloc.attach(arg)
    with pytest.raises(TypeError):
        pickle.dumps(mem)
    mem.free()


def test_remote_descriptors_serialize_but_refuse_memory_and_pool_operations(small_pool):
    mem = small_pool.alloc(512)
    rmem = MemoryAlloc.attach(_remote(mem.serialize(), 8, 16))
    rclone = MemoryAlloc.attach(MemoryAlloc.attach(rmem.serialize()).clone(100).serialize())
    rpool = MemoryPool.attach(_remote(small_pool.serialize(), 0, 8))
    assert not rpool.is_local
    for op in (rpool.destroy, lambda: rpool.alloc(100), lambda: rpool.alloc_blocking(100),
               rpool.get_allocations, lambda: rpool.allocation_exists(AllocType.DATA, 20)):
        with pytest.raises(DragonPoolError):
            op()
    rpool.detach()
    for op in (rclone.get_memview, rclone.free):
        with pytest.raises(DragonMemoryError):
            op()
    mem.free()


# ---- across processes -------------------------------------------------------------------

def _child_alloc(q, pool_ser):
    pool = pool_ser if isinstance(pool_ser, MemoryPool) else MemoryPool.attach(pool_ser)
    mem = pool.alloc(512)
    mem.get_memview()[0:5] = b"Hello"
    q.put(mem.serialize())
    pool.detach()


def _child_write(mem_ser):
    MemoryAlloc.attach(mem_ser).get_memview()[0:1] = b"Y"


def _child_blocking_alloc(q, pool_ser, k):
    pool = MemoryPool.attach(pool_ser)
    mem = pool.alloc_blocking(3000 * k + 100, timeout=30)
    mem.get_memview()[0:5] = b"Hello"
    q.put(mem.serialize())


def _child_alloc_timeout(pool_ser, timeout):
    pool = MemoryPool.attach(pool_ser)
    try:
        pool.alloc_blocking(3100, timeout=timeout)
        rc = 1
    except TimeoutError:
        rc = 0
    except DragonPoolError:
        rc = 2
    os._exit(rc)


def _run(target, *args):
    p = CTX.Process(target=target, args=args)
    p.start()
    p.join(60)
    return p


def test_an_allocation_outlives_the_process_that_made_it(small_pool):
    q = CTX.Queue()
    for arg in (small_pool.serialize(), small_pool):  # bytes, or the pickled pool
        p = _run(_child_alloc, q, arg)
        assert p.exitcode == 0
        mem = MemoryAlloc.attach(q.get(timeout=10))
        assert bytes(mem.get_memview()[0:5]) == b"Hello"
        mem.free()


def test_another_process_writes_into_an_allocation(small_pool):
    mem = small_pool.alloc(512)
    view = mem.get_memview()
    view[0:5] = b"Hello"
    assert _run(_child_write, mem.serialize()).exitcode == 0
    assert bytes(view[0:5]) == b"Yello"
    mem.free()


def test_blocking_allocations_wait_for_frees_in_another_process(small_pool):
    big = small_pool.alloc(32000)
    q = CTX.Queue()
    procs = [CTX.Process(target=_child_blocking_alloc, args=(q, small_pool.serialize(), k))
             for k in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    big.free()
    for _ in procs:
        mem = MemoryAlloc.attach(q.get(timeout=30))
        assert bytes(mem.get_memview()[0:5]) == b"Hello"
        mem.free()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0


@pytest.mark.parametrize("timeout, rc", [(0.2, 0), (0, 2)])
def test_blocking_allocation_timeouts(small_pool, timeout, rc):
    big = small_pool.alloc(32000)
    t0 = time.monotonic()
    p = _run(_child_alloc_timeout, small_pool.serialize(), timeout)
    dt = time.monotonic() - t0
    big.free()
    assert p.exitcode == rc  # a timeout is a TimeoutError; try-once is a DragonPoolError
    assert dt > timeout


def test_an_allocation_of_a_gigabyte_in_a_sparse_pool(pool_name):
    p = MemoryPool(1 << 30, pool_name, 2)
    mem = p.alloc(1 << 30)
    v = mem.get_memview()
    v[(1 << 30) - 1] = 42
    assert v[(1 << 30) - 1] == 42
    v.release()
    mem.free()
    p.destroy()


def test_unique_name_helper_is_short():
    assert len(unique_name()) <= 29


def test_a_message_takes_over_an_allocation_with_create_from_mem(small_pool, pool_name):
    from dragon_channels.channels import Channel, ChannelError, Message
    from dragon_channels import MemoryPoolError

    mem = small_pool.alloc(512)
    mem.get_memview()[0:5] = b"hello"
    msg = Message.create_from_mem(mem, hints=3, clientid=4)
    assert (len(msg), msg.hints, msg.clientid) == (512, 3, 4)
    assert msg.tobytes()[:5] == b"hello"
    # The same memory, not a copy.
    msg.bytes_memview()[0:1] = b"j"
    assert bytes(mem.get_memview()[0:5]) == b"jello"
    # Sent by transfer through a channel of its pool, and received whole.
    ch = Channel(small_pool, 7, 256, 2)
    with ch.sendh() as s, ch.recvh() as r:
        s.send(msg, ownership=s.transfer_ownership_on_send)
        got = r.recv(timeout=1.0)
        assert got.tobytes()[:5] == b"jello" and len(got) == 512
        # Destroying the message frees the allocation it took over.
        got.destroy()
    ch.destroy()
    assert small_pool.get_allocations().num_allocs == 0
    with pytest.raises(MemoryPoolError):
        Message.create_from_mem(mem)

    kept = small_pool.alloc(256)
    with pytest.raises(ChannelError, match="starts 8 bytes into"):
        Message.create_from_mem(kept.clone(8))
    for bad in (-1, 2**64):
        with pytest.raises(ChannelError, match="hints and clientid"):
            Message.create_from_mem(kept, hints=bad)
    m = Message.create_from_mem(kept.clone(0, 100))
    assert len(m) == 100
    m.destroy(free_mem=False)
    assert small_pool.get_allocations().num_allocs == 1
    kept.free()
