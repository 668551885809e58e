"""Dragon's shared-memory channels and managed memory, without a Dragon runtime.

``dragon_channels`` holds every public name. Its submodules mirror Dragon's modules, so code
written for Dragon runs after changing only its import lines:

=================================  ===========================================
Dragon                             this package
=================================  ===========================================
``dragon.channels``                ``dragon_channels.channels``
``dragon.managed_memory``          ``dragon_channels.managed_memory``
``dragon.dtypes``                  ``dragon_channels.dtypes``
=================================  ===========================================

The classes are implemented in Rust (``dragon_channels._native``); the exceptions and
enumerations in ``dragon_channels._types``.
"""

from ._native import (
    ADAPTIVE_WAIT as ADAPTIVE_WAIT,
    DEFAULT_WAIT_MODE as DEFAULT_WAIT_MODE,
    IDLE_WAIT as IDLE_WAIT,
    SPIN_WAIT as SPIN_WAIT,
    USE_DEFAULT as USE_DEFAULT,
    WAIT_SLICE_SECONDS as WAIT_SLICE_SECONDS,
    Channel as Channel,
    ChannelRecvH as ChannelRecvH,
    ChannelSendH as ChannelSendH,
    ChannelSet as ChannelSet,
    EventType as EventType,
    MemoryAlloc as MemoryAlloc,
    MemoryAllocations as MemoryAllocations,
    MemoryPool as MemoryPool,
    Message as Message,
    OwnershipOnSend as OwnershipOnSend,
    PollResult as PollResult,
    UseDefaultTimeout as UseDefaultTimeout,
    WaitMode as WaitMode,
    copy_on_send as copy_on_send,
    transfer_ownership_on_send as transfer_ownership_on_send,
)
from ._types import (
    AllocType as AllocType,
    ChannelBarrierBroken as ChannelBarrierBroken,
    ChannelBarrierReady as ChannelBarrierReady,
    ChannelDestroyed as ChannelDestroyed,
    ChannelEmpty as ChannelEmpty,
    ChannelError as ChannelError,
    ChannelFlags as ChannelFlags,
    ChannelFull as ChannelFull,
    ChannelHandleNotOpenError as ChannelHandleNotOpenError,
    ChannelRecvError as ChannelRecvError,
    ChannelRecvTimeout as ChannelRecvTimeout,
    ChannelSendError as ChannelSendError,
    ChannelSendReturnWhen as ChannelSendReturnWhen,
    ChannelSendTimeout as ChannelSendTimeout,
    ChannelSetError as ChannelSetError,
    ChannelSetTimeout as ChannelSetTimeout,
    ChannelTimeout as ChannelTimeout,
    ChannelValueError as ChannelValueError,
    DragonError as DragonError,
    DragonException as DragonException,
    DragonMemoryError as DragonMemoryError,
    DragonMemoryTypeError as DragonMemoryTypeError,
    DragonPoolAllocationNotAvailable as DragonPoolAllocationNotAvailable,
    DragonPoolAllocationTimeout as DragonPoolAllocationTimeout,
    DragonPoolAttachFail as DragonPoolAttachFail,
    DragonPoolCreateFail as DragonPoolCreateFail,
    DragonPoolDetachFail as DragonPoolDetachFail,
    DragonPoolError as DragonPoolError,
    FlowControl as FlowControl,
    LockType as LockType,
    MemoryPoolError as MemoryPoolError,
    PoolType as PoolType,
)

POLLIN = EventType.POLLIN
"""``EventType.POLLIN`` (Dragon's module constant)."""
MASQUERADE_AS_REMOTE = ChannelFlags.MASQUERADE_AS_REMOTE
"""``ChannelFlags.MASQUERADE_AS_REMOTE`` (refused by ``Channel``: there is no gateway)."""

from . import channels as channels, dtypes as dtypes, managed_memory as managed_memory  # noqa: E402
