"""The coroutine that runs an asynchronous send or receive inside the task that awaits it.

``recvh.recv_async()`` and its siblings return ``drive(op)``. The operation is tried (and a
message taken) only while this coroutine runs, and the coroutine returns the result in the
same step: a cancellation (``task.cancel()``, an ``asyncio.wait_for`` or ``asyncio.timeout``
that expires) can land only at ``await ready``, where nothing has been taken or sent. A
future resolved by a loop callback instead would lose its result on CPython 3.12 and later,
whose ``wait_for`` cancels the awaiting task even when the result arrived in the same loop
pass as the timeout.
"""

from typing import Any


async def drive(op: Any) -> Any:
    """Tries ``op`` (a ``_native._AsyncOp``) until it completes; between tries, awaits the
    readiness future that its waker resolves when the channel changes."""
    try:
        while True:
            done, value = op._try()
            if done:
                return value
            await value
    finally:
        # Done, failed or cancelled: the op leaves the waiter's table (idempotent).
        op._close()
