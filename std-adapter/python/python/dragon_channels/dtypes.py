"""The parts of Dragon's ``dragon.dtypes`` that channel and managed-memory code uses: return
codes (:class:`DragonError`), the base exception, and wait modes."""

from ._native import (
    ADAPTIVE_WAIT as ADAPTIVE_WAIT,
    DEFAULT_WAIT_MODE as DEFAULT_WAIT_MODE,
    IDLE_WAIT as IDLE_WAIT,
    SPIN_WAIT as SPIN_WAIT,
    WaitMode as WaitMode,
)
from ._types import DragonError as DragonError, DragonException as DragonException
