# Type stub of the compiled thread pool's hooks (re-exported by _step).
from types import EllipsisType
from typing import Any

def _set_spin_ns(ns: int) -> int: ...
def _pool_workers() -> tuple[int, int]: ...
def _pool_policy(
    adaptive: bool | None = None,
    force: bool | None | EllipsisType = ...,
    worker_delay_ns: int | None = None,
    reset: bool = False,
    descheduled: bool | None | EllipsisType = ...,
) -> dict[str, Any]: ...
def _pool_judge(
    parallel_ns: float, serial_ns: float, parallel_n: int, serial_n: int,
    descheduled_recent: int,
) -> bool: ...
def _set_ftz_daz(on: bool) -> bool: ...
