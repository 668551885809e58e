"""The seed page's example, verbatim apart from the imports and the pool size."""

import os
import subprocess
import sys
import textwrap


def test_seed_example_prints_hello():
    name = f"example_pool-{os.getpid()}"
    code = textwrap.dedent(
        """
        from dragon_channels import MemoryPool
        from dragon_channels import Channel, ChannelRecvH, ChannelSendH, Message

        # Create a pool
        # The seed asks for 32678 bytes, but a channel with Dragon's default attributes
        # (100 slots of 1024 bytes) needs a 128 KiB block of the pool, so the pool is 1 MiB
        # (as in examples/quickstart.rs); the pid keeps the name unique.
        mpool = MemoryPool(1 << 20, "NAME", 0, None)
        # Create a channel
        ch = Channel(mpool, 1)

        # Open a send handle
        sendh = ch.sendh()
        sendh.open()

        # Open a receive handle
        recvh = ch.recvh()
        recvh.open()

        # Explicitly allocate a message and populate its payload
        msg = Message.create_alloc(mpool, 512)
        msg_view = msg.bytes_memview()
        msg_view[0:5] = b"Hello"

        # Send the message
        sendh.send(msg)

        # Receive a message
        recv_msg = recvh.recv()
        recv_msgview = recv_msg.bytes_memview()

        # Prints "Hello -- Hello"
        print(f"{msg_view[0:5]} -- {recv_msgview[0:5]}")
        print(bytes(msg_view[0:5]).decode(), "--", bytes(recv_msgview[0:5]).decode())

        # Clean up (not in the seed): unlink /dev/shm/NAME.
        mpool.destroy()
        """
    ).replace("NAME", name)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    finally:
        path = f"/dev/shm/{name}"
        if os.path.exists(path):
            os.unlink(path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("<memory at ") and " -- <memory at " in lines[0]
    assert lines[1] == "Hello -- Hello"
