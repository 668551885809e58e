"""Dragon's ``dragon.managed_memory``: pools, allocations and their exceptions.

``MemoryPoolAttr`` is not provided as a class of its own: Dragon's attribute object is
replaced by ``MemoryPool``'s keyword arguments (``min_block_size=``, ``max_allocations=``);
the name is an alias of ``MemoryPool`` so that imports of it keep working.
"""

from ._native import (
    MemoryAlloc as MemoryAlloc,
    MemoryAllocations as MemoryAllocations,
    MemoryPool as MemoryPool,
)
from ._types import (
    AllocType as AllocType,
    DragonMemoryError as DragonMemoryError,
    DragonMemoryTypeError as DragonMemoryTypeError,
    DragonPoolAllocationNotAvailable as DragonPoolAllocationNotAvailable,
    DragonPoolAllocationTimeout as DragonPoolAllocationTimeout,
    DragonPoolAttachFail as DragonPoolAttachFail,
    DragonPoolCreateFail as DragonPoolCreateFail,
    DragonPoolDetachFail as DragonPoolDetachFail,
    DragonPoolError as DragonPoolError,
    PoolType as PoolType,
)

MemoryPoolAttr = MemoryPool
"""Alias of :class:`MemoryPool` (see the module docs)."""

DRAGON_MEMORY_DEFAULT_TIMEOUT = 300
"""Dragon's default timeout of blocking allocations, in seconds."""
