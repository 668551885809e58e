"""dragon_channels.channels as Dragon's ``dragon.channels`` behaves (what Dragon's
test_basic_channels.py checks), with the import line the only change: constructor
arguments, context managers, descriptors, timeouts, ownership, wait modes, messages."""

import multiprocessing as mp
import sys
import time

import pytest

from dragon_channels.channels import (
    ADAPTIVE_WAIT,
    IDLE_WAIT,
    MASQUERADE_AS_REMOTE,
    SPIN_WAIT,
    Channel,
    ChannelEmpty,
    ChannelError,
    ChannelFull,
    ChannelHandleNotOpenError,
    ChannelRecvTimeout,
    ChannelSendReturnWhen,
    ChannelSendTimeout,
    ChannelTimeout,
    FlowControl,
    LockType,
    Message,
    OwnershipOnSend,
    WaitMode,
)
from dragon_channels.managed_memory import MemoryPool

from conftest import join_child, unique_name

CTX = mp.get_context("spawn")


def test_dragon_tuning_arguments_are_accepted(pool):
    ch = Channel(pool, c_uid=1, max_spinners=5, fc_type=FlowControl.RESOURCES_FLOW_CONTROL,
                 lock_type=LockType.GREEDY, def_alloc_pool=pool, max_event_bcasts=2)
    assert (ch.max_spinners, ch.lock_type, ch.fc_type) == (
        5, LockType.GREEDY, FlowControl.RESOURCES_FLOW_CONTROL)
    assert ch.is_local and ch.default_alloc_pool.name == pool.name
    ch.destroy()


@pytest.mark.parametrize("kw, exc", [
    ({"block_size": 10}, ChannelError),
    ({"block_size": 255}, ChannelError),
    ({"block_size": 256, "capacity": 0}, ChannelError),
    ({"lock_type": "GREEDY"}, ChannelError),
    ({"fc_type": 1}, ChannelError),
    ({"flags": MASQUERADE_AS_REMOTE}, ChannelError),
    ({"max_spinners": -1}, OverflowError),
])
def test_constructor_arguments_are_validated(pool, kw, exc):
    with pytest.raises(exc):
        Channel(pool, 1, **kw)


def test_uid_argument_checks(pool):
    with pytest.raises(TypeError):
        Channel()
    with pytest.raises(OverflowError):
        Channel(pool, -1)
    with pytest.raises(TypeError):
        Channel(pool, "0")
    ch = Channel(pool, 0)
    with pytest.raises(ChannelError):
        Channel(pool, 0)  # uid in use
    ch.destroy()


def test_def_alloc_pool_must_be_the_channels_pool(pool):
    other = MemoryPool(1 << 20, unique_name("o"), 3, None)
    try:
        with pytest.raises(ChannelError):
            Channel(pool, 1, def_alloc_pool=other)
        ch = Channel(pool, 1)
        with pytest.raises(ChannelError):
            Channel.attach(ch.serialize(), other)
        Channel.attach(ch.serialize(), pool).detach()
        ch.destroy()
    finally:
        other.destroy()


def test_a_channel_too_big_for_its_pool_says_the_size_needed(pool_name):
    p = MemoryPool(65536, pool_name, 1, None)
    with pytest.raises(ChannelError, match="make the pool at least 131072 bytes"):
        Channel(p, 1)
    Channel(p, 1, capacity=10, block_size=256).destroy()
    p.destroy()


def test_capacity_and_block_size_are_kept(pool):
    ch = Channel(pool, 1, block_size=256, capacity=10)
    assert (ch.capacity, ch.block_size) == (10, 256)
    ch.destroy()


def test_with_statements_destroy_a_created_channel_and_close_handles(pool):
    msg = Message.create_alloc(pool, 1)
    msg.bytes_memview()[0] = 1
    with Channel(pool, 1) as ch:
        with ch.recvh() as r:
            assert r.is_open
            with pytest.raises(TimeoutError):
                r.recv(timeout=0.05)
        assert not r.is_open
        with ch.sendh() as s:
            s.send(msg)
        ser = ch.serialize()
        with Channel.attach(ser) as ch2:  # attached: detached at the end, not destroyed
            with ch2.recvh() as r2:
                assert r2.recv(timeout=1.5).bytes_memview()[0] == 1
        assert ch.num_msgs == 0
    with pytest.raises(ChannelError):
        ch.serialize()
    with pytest.raises(ChannelError):
        Channel.attach(ser)


def test_destroy_then_serialize_raises(pool):
    for _ in range(3):
        ch = Channel(pool, 1)
        ch.destroy()
        with pytest.raises(ChannelError):
            ch.serialize()


def test_an_object_detached_with_serialize_still_names_its_channel(pool):
    ch = Channel(pool, 1)
    ch.detach(serialize=True)
    ser = ch.serialize()
    other = Channel.attach(ser)  # a second object in this process
    ch.destroy()  # destroys the channel, not just one mapping
    with pytest.raises(ChannelError):
        other.sendh().open()
    ch = Channel(pool, 1)
    ch.detach(serialize=True)
    ser = ch.serialize()
    del ch
    Channel.attach(ser).destroy()


def test_descriptor_info_without_attaching(pool, pool_name):
    ch = Channel(pool, 90210)
    ser = ch.serialize()
    assert Channel.serialized_uid(ser) == 90210
    assert Channel.serialized_uid_type(ser) == (90210, 1)
    assert Channel.serialized_pool_uid_fname(ser) == (0, f"/_dragon_{pool_name}_manifest")
    with pytest.raises(ChannelError):
        Channel.serialized_uid(b"junk")
    ch.destroy()


def test_get_pool_gives_a_usable_pool(channel):
    mem = channel.get_pool().alloc(512)
    mem.free()


def test_num_msgs_counts_queued_messages(channel, handles):
    s, r = handles
    s.send_bytes(bytearray(b"Hello"), 5)
    assert channel.num_msgs == 1
    r.recv().destroy()
    assert channel.num_msgs == 0


def test_send_and_receive_timeouts_name_their_direction(pool):
    ch = Channel(pool, 1, capacity=1, block_size=256)
    s, r = ch.sendh(), ch.recvh()
    with pytest.raises(ChannelHandleNotOpenError):
        r.recv(timeout=1)
    s.open()
    r.open()
    for recv in (r.recv, r.recv_bytes):
        t0 = time.monotonic()
        with pytest.raises(ChannelRecvTimeout):
            recv(timeout=0.1)
        assert time.monotonic() - t0 >= 0.1
        with pytest.raises(ChannelEmpty):
            recv(timeout=0)
        with pytest.raises(ChannelEmpty):
            recv(blocking=False)
    s.send_bytes(b"x")
    with pytest.raises(ChannelFull):
        s.send_bytes(b"y", timeout=0)
    with pytest.raises(ChannelSendTimeout) as e:
        s.send_bytes(b"y", timeout=0.1)
    assert isinstance(e.value, ChannelTimeout) and isinstance(e.value, TimeoutError)
    ch.destroy()


def test_ownership_modes_are_class_attributes_of_the_send_handle(pool, handles):
    s, r = handles
    assert s.transfer_ownership_on_send == OwnershipOnSend.transfer_ownership_on_send
    assert s.copy_on_send == OwnershipOnSend.copy_on_send
    m = Message.create_alloc(pool, 512)
    v = m.bytes_memview()
    v[0:5] = b"Hello"
    s.send(m, ownership=s.transfer_ownership_on_send)  # with a live view
    assert bytes(r.recv().bytes_memview()[0:5]) == b"Hello"


def test_send_into_and_receive_into_destination_messages(pool, handles):
    s, r = handles
    src = Message.create_alloc(pool, 512)
    dest = Message.create_alloc(pool, 512)
    src.bytes_memview()[0:5] = b"Hello"
    s.send(src, dest)
    src.destroy()
    r.recv(dest)
    assert bytes(dest.bytes_memview()[0:5]) == b"Hello"
    dest.destroy()


def test_send_bytes_of_a_slice_sends_its_length(handles):
    s, r = handles
    x = bytearray(1024)
    x[0:11] = b"Hello World"
    s.send_bytes(x[0:5])
    assert r.recv_bytes() == b"Hello"


def test_message_construction_and_sizes(pool):
    assert len(Message()) == 0 and not Message().has_memory
    with pytest.raises(ChannelError):
        Message.create_alloc(pool, 0)
    with pytest.raises(OverflowError):
        Message.create_alloc(pool, -1)
    m = Message.create_alloc(pool, 16)
    m.bytes_memview()[:] = b"x" * 16
    m.clear_payload(0, 8)
    assert m.tobytes() == bytes(8) + b"x" * 8


def test_destroy_with_a_live_view_succeeds_and_the_view_reads_zeros(pool):
    free0 = pool.free_space
    m = Message.create_alloc(pool, 512)
    view = m.bytes_memview()
    view[0:5] = b"Hello"
    m.destroy()
    assert bytes(view[0:5]) != b"Hello" and bytes(view[0:5]) == bytes(5)
    with pytest.raises(ChannelError):
        m.bytes_memview()
    view[0] = 7  # writes go to memory nobody else owns
    assert pool.free_space < free0
    del view
    assert pool.free_space == free0


def test_return_modes(channel):
    channel.sendh(return_mode=ChannelSendReturnWhen.WHEN_BUFFERED)
    channel.sendh(return_mode=ChannelSendReturnWhen.WHEN_DEPOSITED)
    with pytest.raises(ChannelError):
        channel.sendh(return_mode=ChannelSendReturnWhen.WHEN_RECEIVED)


def test_handles_take_a_wait_mode(channel):
    assert channel.sendh(wait_mode=SPIN_WAIT).wait_mode == WaitMode.SPIN_WAIT
    assert channel.recvh(wait_mode=IDLE_WAIT).wait_mode == WaitMode.IDLE_WAIT
    assert channel.recvh().wait_mode == WaitMode.ADAPTIVE_WAIT
    with pytest.raises(ValueError):
        channel.sendh(wait_mode=7)


def _spin_child(ser1, ser2, pool_ser, mode):
    ch, ch2 = Channel.attach(ser1), Channel.attach(ser2)
    pool = MemoryPool.attach(pool_ser)
    with ch.sendh(wait_mode=SPIN_WAIT) as s:
        m = Message.create_alloc(pool, 32)
        m.bytes_memview()[0:5] = b"Hello"
        s.send(m, timeout=20)
    with ch2.recvh(wait_mode=mode) as r:
        r.recv(timeout=20).destroy()
    sys.exit(0)


def _sleeping_receiver(ser, mode):
    with Channel.attach(ser).recvh(wait_mode=mode) as r:
        r.recv(timeout=30).destroy()
    sys.exit(0)


@pytest.mark.parametrize("mode", [ADAPTIVE_WAIT, IDLE_WAIT])
def test_try_once_sends_hand_over_to_receivers_asleep(pool, mode):
    """Ten `timeout=0` sends into a five-slot channel on which ten receivers sleep all
    succeed: a send that finds the channel full waits for a woken receiver to make room (what
    Dragon's test_blocking_spin_wait_to_idle_wait needs). With nobody asleep, a full channel
    refuses a try-once send."""
    n = 10
    ch = Channel(pool, 2, capacity=5)
    procs = [CTX.Process(target=_sleeping_receiver, args=(ch.serialize(), mode))
             for _ in range(n)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 60
    while ch.blocked_receivers < n:
        assert time.monotonic() < deadline, f"only {ch.blocked_receivers} receivers asleep"
        time.sleep(0.01)
    with ch.sendh() as s:
        for i in range(n):
            s.send_bytes(b"Hello", timeout=0)
    for p in procs:
        assert join_child(p) == 0
    with ch.sendh() as s:
        for _ in range(5):
            s.send_bytes(b"Hello", timeout=0)
        with pytest.raises(ChannelFull):
            s.send_bytes(b"Hello", timeout=0)
    ch.destroy()


@pytest.mark.parametrize("mode", [SPIN_WAIT, ADAPTIVE_WAIT, IDLE_WAIT])
def test_processes_waiting_in_each_mode_all_get_through(pool, mode):
    ch, ch2 = Channel(pool, 1), Channel(pool, 2, capacity=5)
    procs = [CTX.Process(target=_spin_child,
                         args=(ch.serialize(), ch2.serialize(), pool.serialize(), mode))
             for _ in range(6)]
    for p in procs:
        p.start()
    with ch.recvh(wait_mode=mode) as r:
        for _ in procs:
            r.recv(timeout=30).destroy()
    with ch2.sendh(wait_mode=mode) as s:
        for _ in procs:
            s.send_bytes(b"Hello", timeout=30)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    ch.destroy()
    ch2.destroy()
