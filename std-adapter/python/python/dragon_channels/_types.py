"""Exceptions and enumerations of ``dragon_channels``: Dragon's names (``dragon.channels``,
``dragon.managed_memory``, ``dragon.dtypes``), defined once here and raised by the native
module ``dragon_channels._native``.

Exception hierarchy::

    Exception
    +-- ChannelError                       channel, message and handle failures
    |   +-- ChannelFull, ChannelEmpty      try-once send / receive (also TimeoutError)
    |   +-- ChannelTimeout                 (also TimeoutError)
    |   |   +-- ChannelSendTimeout, ChannelRecvTimeout
    |   +-- ChannelSendError, ChannelRecvError, ChannelHandleNotOpenError, ChannelDestroyed
    |   +-- ChannelValueError (also ValueError), ChannelBarrierBroken
    |   |   (also threading.BrokenBarrierError), ChannelBarrierReady
    |   +-- ChannelSetError
    |   |   +-- ChannelSetTimeout (also TimeoutError)
    |   +-- MemoryPoolError
    |       +-- DragonPoolError (also a DragonMemoryError)
    +-- DragonException                    carries ``lib_err``, a DragonError
        +-- DragonMemoryError              allocation failures
            +-- DragonMemoryTypeError (also TypeError)
            +-- DragonPoolError
                +-- DragonPoolCreateFail, DragonPoolAttachFail, DragonPoolDetachFail
                +-- DragonPoolAllocationNotAvailable   a try-once allocation found no block
                +-- DragonPoolAllocationTimeout        (also TimeoutError)
"""

from __future__ import annotations

import enum
import threading
from typing import Optional

__all__ = [
    "DragonError", "DragonException", "ChannelError", "ChannelFull", "ChannelEmpty",
    "ChannelTimeout", "ChannelSendTimeout", "ChannelRecvTimeout", "ChannelSendError",
    "ChannelRecvError", "ChannelHandleNotOpenError", "ChannelDestroyed", "MemoryPoolError",
    "ChannelValueError", "ChannelBarrierBroken", "ChannelBarrierReady", "ChannelSetError",
    "ChannelSetTimeout", "DragonMemoryError", "DragonMemoryTypeError", "DragonPoolError",
    "DragonPoolCreateFail", "DragonPoolAttachFail", "DragonPoolDetachFail",
    "DragonPoolAllocationNotAvailable", "DragonPoolAllocationTimeout", "LockType",
    "FlowControl", "ChannelFlags", "ChannelSendReturnWhen", "AllocType", "PoolType",
]


class DragonError(enum.IntEnum):
    """Dragon's return codes (``dragon.dtypes.DragonError``): the names are Dragon's; the
    numbers past ``SUCCESS = 0`` are this module's, so compare members, not numbers."""

    SUCCESS = 0
    INVALID_ARGUMENT = 1
    INVALID_OPERATION = 2
    INVALID_VALUE = 3
    TIMEOUT = 4
    FAILURE = 5
    NOT_FOUND = 6
    NOT_IMPLEMENTED = 7
    OUT_OF_SPACE = 8
    OBJECT_DESTROYED = 9
    CHANNEL_FULL = 10
    CHANNEL_EMPTY = 11
    CHANNEL_BLOCKSIZE_BELOW_REQUIRED_MINIMUM = 12
    CHANNEL_CAPACITY_BELOW_REQUIRED_MINIMUM = 13
    CHANNEL_SEND_NOT_OPENED = 14
    CHANNEL_RECV_NOT_OPENED = 15
    BARRIER_BROKEN = 16
    BARRIER_READY_TO_RELEASE = 17
    DYNHEAP_REQUESTED_SIZE_NOT_AVAILABLE = 18
    DYNHEAP_REQUESTED_SIZE_TOO_LARGE = 19
    MEMORY_OPERATION_ATTEMPT_ON_NONLOCAL_POOL = 20
    INTERNAL_MALLOC_FAIL = 21


class DragonException(Exception):
    """Base of Dragon's library exceptions: ``lib_err`` is the :class:`DragonError` code."""

    def __init__(self, msg: str = "", lib_err: Optional[DragonError] = None) -> None:
        super().__init__(msg)
        self.lib_err = DragonError.FAILURE if lib_err is None else lib_err

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} (DRAGON_{self.lib_err.name})"


class ChannelError(Exception):
    """A channel, message or pool operation failed."""


class ChannelFull(ChannelError, TimeoutError):
    """A try-once send found the channel full, with no receiver asleep on it to hand over to."""


class ChannelEmpty(ChannelError, TimeoutError):
    """A try-once receive found the channel empty."""


class ChannelTimeout(ChannelError, TimeoutError):
    """A blocking send, receive or poll timed out."""


class ChannelSendTimeout(ChannelTimeout):
    """A blocking send timed out (the channel stayed full)."""


class ChannelRecvTimeout(ChannelTimeout):
    """A blocking receive timed out (the channel stayed empty)."""


class ChannelSendError(ChannelError):
    """The message cannot be sent as given."""


class ChannelRecvError(ChannelError):
    """The message cannot be received as asked (it stays queued)."""


class ChannelHandleNotOpenError(ChannelError):
    """The send or receive handle is not open."""


class ChannelDestroyed(ChannelError):
    """The channel was destroyed."""


class MemoryPoolError(ChannelError):
    """A memory pool could not be created, attached or used."""


class ChannelValueError(ChannelError, ValueError):
    """A value is out of range: a poll operation that does not exist, a V past a bounded
    semaphore's bound."""


class ChannelBarrierBroken(ChannelError, threading.BrokenBarrierError):
    """The barrier was aborted (or an arrival timed out): poll POLLRESET before using it
    again."""


class ChannelBarrierReady(ChannelError):
    """Not a failure: this party arrived last at the barrier and must now poll
    POLLBARRIER_RELEASE."""


class ChannelSetError(ChannelError):
    """A channel set could not be made or polled."""


class ChannelSetTimeout(ChannelSetError, TimeoutError):
    """A channel set poll found no event in time."""


class DragonMemoryError(DragonException):
    """A managed-memory operation failed (``dragon.managed_memory.DragonMemoryError``)."""


class DragonMemoryTypeError(DragonMemoryError, TypeError):
    """A managed-memory argument has the wrong type."""


class DragonPoolError(DragonMemoryError, MemoryPoolError):
    """A pool operation failed: a destroyed, detached or remote pool, bad arguments."""


class DragonPoolCreateFail(DragonPoolError):
    """The pool could not be created (size too small, bad or taken name, no space)."""


class DragonPoolAttachFail(DragonPoolError):
    """The pool could not be attached (destroyed, never created, bad descriptor)."""


class DragonPoolDetachFail(DragonPoolError):
    """The pool could not be detached."""


class DragonPoolAllocationNotAvailable(DragonPoolError):
    """A try-once allocation found no free block of that size now."""


class DragonPoolAllocationTimeout(DragonPoolError, TimeoutError):
    """A blocking allocation found no free block before its timeout."""


class LockType(enum.Enum):
    """Dragon's channel lock kinds. Accepted by ``Channel(lock_type=)``; this module's
    channels are lock-free, so the kind changes nothing."""

    FIFO = 0
    FIFOLITE = 1
    GREEDY = 2


class FlowControl(enum.Enum):
    """Dragon's channel flow-control kinds. Accepted by ``Channel(fc_type=)``; every kind
    means the same here: a send waits while the channel is full."""

    NO_FLOW_CONTROL = 0
    RESOURCES_FLOW_CONTROL = 1
    MEMORY_FLOW_CONTROL = 2
    MEMORY_RESOURCES_FLOW_CONTROL = 3


class ChannelFlags(enum.IntFlag):
    """Dragon's channel flags: ``MASQUERADE_AS_REMOTE`` makes Dragon route local operations
    through its gateway; there is no gateway here, so it is refused."""

    DRAGON_CHANNEL_FLAGS_NONE = 0
    MASQUERADE_AS_REMOTE = 1


class ChannelSendReturnWhen(enum.Enum):
    """When a send returns (``sendh(return_mode=)``). Every local send here returns when the
    message is in the channel, which is ``WHEN_DEPOSITED`` (and satisfies ``WHEN_BUFFERED``
    and ``WHEN_NONE``); ``WHEN_RECEIVED`` is refused."""

    WHEN_NONE = 0
    WHEN_BUFFERED = 1
    WHEN_DEPOSITED = 2
    WHEN_RECEIVED = 3


class AllocType(enum.Enum):
    """What an allocation is for (``MemoryPool.get_allocations().alloc_type(i)``)."""

    DATA = 0
    CHANNEL = 1
    CHANNEL_BUFFER = 2
    BOOTSTRAP = 3


class PoolType(enum.Enum):
    """Dragon's pool kinds; every pool here is ``SHM`` (a file in /dev/shm)."""

    SHM = 0
    FILE = 1
    PRIVATE = 2


for _c in [
    ChannelError, ChannelFull, ChannelEmpty, ChannelTimeout, ChannelSendTimeout,
    ChannelRecvTimeout, ChannelSendError, ChannelRecvError, ChannelHandleNotOpenError,
    ChannelDestroyed, MemoryPoolError, ChannelValueError, ChannelBarrierBroken,
    ChannelBarrierReady, ChannelSetError, ChannelSetTimeout, DragonException, DragonMemoryError,
    DragonMemoryTypeError, DragonPoolError, DragonPoolCreateFail, DragonPoolAttachFail,
    DragonPoolDetachFail, DragonPoolAllocationNotAvailable, DragonPoolAllocationTimeout,
]:
    _c.__module__ = "dragon_channels"
del _c
