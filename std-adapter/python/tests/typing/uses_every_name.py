"""A program that uses every public name of dragon_channels, for `mypy --strict` (run by
tests/test_packaging.py); it also runs."""

import asyncio
import os
import threading
from typing import List, Tuple

import dragon_channels as dc
from dragon_channels import channels, dtypes, managed_memory


def main() -> None:
    name = f"dcpy-types-{os.getpid()}"
    pool: managed_memory.MemoryPool = dc.MemoryPool(1 << 20, name, 7, None, min_block_size=64)
    assert managed_memory.MemoryPoolAttr is dc.MemoryPool
    uid_fname: Tuple[int, str] = dc.MemoryPool.serialized_uid_fname(pool.serialize())
    print(uid_fname, pool.name, pool.file_name, pool.uid, pool.muid, pool.rt_uid, pool.is_local,
          pool.size, pool.free_space, pool.utilization, pool.max_allocations,
          pool.current_allocations, pool.free_blocks, pool.num_block_sizes)
    mem: dc.MemoryAlloc = pool.alloc(64, dc.AllocType.DATA)
    mem2 = pool.alloc_blocking(64, timeout=1.0)
    view: memoryview = mem.get_memview()
    view[0:2] = b"hi"
    same = dc.MemoryAlloc.attach(mem.serialize())
    allocs: dc.MemoryAllocations = pool.get_allocations()
    ok: bool = pool.allocation_exists(allocs.alloc_type(0), allocs.alloc_id(0))
    print(ok, allocs.num_allocs, len(allocs), same.is_the_same_as(mem), mem == mem2, hash(mem),
          mem.size, mem.id, mem.pool.name, mem.get_int_ptr(), len(mem),
          pool.alloc_from_id(mem.id).size)
    mem.clone(1, 2).clear()
    copy = mem.copy(pool, 1.0)
    copy.free()
    same.detach()
    del view
    mem.free()
    mem2.free()

    lock: dc.LockType = dc.LockType.FIFO
    fc: dc.FlowControl = dc.FlowControl.NO_FLOW_CONTROL
    flags: dc.ChannelFlags = dc.ChannelFlags.DRAGON_CHANNEL_FLAGS_NONE
    ch = channels.Channel(pool, 1, 256, 10, lock, fc, flags, pool, 5)
    print(ch.num_msgs, ch.capacity, ch.block_size, ch.cuid, ch.blocked_receivers,
          ch.barrier_count, ch.broken_barrier, ch.is_semaphore, ch.lock_type, ch.fc_type,
          ch.flags, ch.max_spinners, ch.max_event_bcasts, ch.default_alloc_pool.name,
          ch.is_local, ch.get_pool().name)
    ser = ch.serialize()
    print(dc.Channel.serialized_uid(ser), dc.Channel.serialized_uid_type(ser),
          dc.Channel.serialized_pool_uid_fname(ser))
    wm: dtypes.WaitMode = dc.SPIN_WAIT
    with ch.sendh(timeout=None, wait_mode=wm,
                  return_mode=dc.ChannelSendReturnWhen.WHEN_DEPOSITED) as s:
        msg = dc.Message.create_alloc(pool, 8)
        dc.Message.create_from_mem(pool.alloc(64), 0, 0).destroy()
        msg.hints, msg.clientid = 1, 2
        msg.bytes_memview()[0:2] = b"ok"
        s.send(msg, None, dc.copy_on_send, True, dc.ChannelSendH.USE_CHANNEL_SENDH_DEFAULT)
        s.send(msg, ownership=s.transfer_ownership_on_send)
        s.send_bytes(b"bytes", timeout=1.0)
        print(s.is_open, s.wait_mode, s.copy_on_send, dc.transfer_ownership_on_send,
              dc.OwnershipOnSend.copy_on_send)
    with ch.recvh(wait_mode=dc.ADAPTIVE_WAIT) as r:
        got: dc.Message = r.recv(timeout=1.0)
        print(got.tobytes()[:2], len(got), got.capacity, got.has_memory, got.hints, r.wait_mode)
        got.clear_payload()
        got.destroy()
        dest = dc.Message()
        r.recv(dest, True, dc.ChannelRecvH.USE_CHANNEL_RECVH_DEFAULT)
        dest.destroy(free_mem=True)
        data: bytes = r.recv_bytes(blocking=True, timeout=dc.USE_DEFAULT)
        print(data, r.is_open, dc.Message.create_empty().has_memory)
    async def exchange() -> bytes:
        got_bytes = b""
        with ch.sendh() as s, ch.recvh() as r:
            m = dc.Message.create_alloc(pool, 2)
            await s.send_async(m)
            await s.send_bytes_async(b"as", msg_len=2)
            got_async: dc.Message = await r.recv_async()
            got_async.destroy()
            got_bytes = await r.recv_bytes_async()
        return got_bytes

    print(asyncio.run(exchange()))
    res = dc.PollResult()
    print(ch.poll(timeout=0, wait_mode=dc.IDLE_WAIT, event_mask=dc.EventType.POLLSIZE,
                  poll_result=res), res.value, res.rc, dc.POLLIN, dc.DEFAULT_WAIT_MODE,
          dc.WaitMode.SPIN_WAIT.value, dc.WAIT_SLICE_SECONDS, dc.MASQUERADE_AS_REMOTE,
          isinstance(dc.USE_DEFAULT, dc.UseDefaultTimeout))
    ch2 = dc.Channel.create(pool, 2)
    cset = dc.ChannelSet(pool, [ch2])
    cset.add(ch)
    members: List[dc.Channel] = cset.channels
    cset.event_mask = dc.EventType.POLLIN
    print(len(cset), len(members), cset.event_mask)
    try:
        cset.poll(timeout=0)
    except dc.ChannelSetTimeout:
        pass
    cset.remove(ch)
    cset.destroy()
    with dc.ChannelSet(pool, [ch2]):
        pass
    ch2.detach(serialize=True)
    dc.Channel.attach(ch2.serialize(), pool).destroy()
    ch.destroy()

    errors: List[type] = [
        dc.ChannelError, dc.ChannelFull, dc.ChannelEmpty, dc.ChannelTimeout,
        dc.ChannelSendTimeout, dc.ChannelRecvTimeout, dc.ChannelSendError,
        dc.ChannelRecvError, dc.ChannelHandleNotOpenError, dc.ChannelDestroyed,
        dc.MemoryPoolError, dc.ChannelValueError, dc.ChannelBarrierBroken,
        dc.ChannelBarrierReady, dc.ChannelSetError, dc.ChannelSetTimeout, dc.DragonException,
        dc.DragonMemoryError, dc.DragonMemoryTypeError, dc.DragonPoolError,
        dc.DragonPoolCreateFail, dc.DragonPoolAttachFail, dc.DragonPoolDetachFail,
        dc.DragonPoolAllocationNotAvailable, dc.DragonPoolAllocationTimeout,
        threading.BrokenBarrierError,
    ]
    code: dtypes.DragonError = dtypes.DragonError.SUCCESS
    print(len(errors), code, dc.PoolType.SHM, dtypes.DragonException("x").lib_err,
          managed_memory.DRAGON_MEMORY_DEFAULT_TIMEOUT)
    try:
        pool.alloc(1 << 30)
    except managed_memory.DragonMemoryError as e:
        print(e.lib_err)
    pool.destroy()


if __name__ == "__main__":
    main()
