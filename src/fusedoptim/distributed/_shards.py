"""The shards of a :class:`ShardedOptimizer` checkpoint: the keys each shard
records beside the inner optimizer's state dict, and the checks of a list
of shards against the model before any rank loads one."""

from typing import Any

import numpy as np

from .._checkpoint import _entry
from ._layout import order_of

__all__ = ["FORMAT", "describe", "check_set", "check_model", "assemble", "array_of"]

#: The shard format: 2 records every parameter's shape and memory order in
#: every shard (format 1, without ``shard/format``, recorded the offsets
#: only, so a reshaped or removed parameter went unnoticed).
FORMAT = 2

_SCALARS = ("shard/format", "shard/rank", "shard/world_size")
_PER_NAME = ("shard/offset/", "shard/order/", "shard/shape/")


def _int(sd, key):
    return int(np.asarray(_entry(sd, key)))


def array_of(sd, key, dtype):
    """``sd[key]``, a NumPy array of ``dtype`` (checked before any rank loads)."""
    a = _entry(sd, key)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"state_dict[{key!r}] must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"state_dict[{key!r}] has dtype {a.dtype} but this optimizer's "
                        f"state array has {dtype}")
    return a


def describe(params: dict, rank: int, world: int) -> dict:
    """The keys every shard holds: its format, rank and world size, and each
    parameter's shape and memory order (the whole model, in every shard)."""
    sd: dict = {"shard/format": FORMAT, "shard/rank": rank, "shard/world_size": world}
    for name, p in params.items():
        sd[f"shard/shape/{name}"] = np.array(p.shape, np.int64)
        sd[f"shard/order/{name}"] = order_of(p)
    return sd


def check_set(shards: list) -> None:
    """Raise unless ``shards`` are every rank's shard of one checkpoint, of
    this format."""
    for s in shards:
        if "shard/format" not in s:
            raise ValueError("state_dict holds shards of format 1, which record no parameter "
                             "shapes; this version loads format 2: load them with the version "
                             "that saved them and save its full_state_dict()")
        fmt = _int(s, "shard/format")
        if fmt != FORMAT:
            raise ValueError(f"state_dict holds shards of format {fmt}; this version of "
                             f"fusedoptim loads format {FORMAT}")
    ranks = sorted(_int(s, "shard/rank") for s in shards)
    sizes = {_int(s, "shard/world_size") for s in shards}
    if sizes != {len(shards)} or ranks != list(range(len(shards))):
        raise ValueError(f"state_dict holds shards of ranks {ranks}, not every rank of one "
                         f"checkpoint: pass the list of every rank's state_dict()")
    base = shards[0]
    for i, shard in enumerate(shards[1:], 1):
        for key in sorted(set(base) | set(shard), key=str):
            if not isinstance(key, str):
                raise TypeError(f"state_dict keys must be str, got {key!r}")
            if key.startswith(("state/", "shard/offset/")) or key == "shard/rank":
                continue  # this shard's own
            if key not in base or key not in shard or \
                    str(np.asarray(base[key])) != str(np.asarray(shard[key])):
                raise ValueError(f"shard {i} and shard 0 differ in {key!r}")


def _shape(sd, key):
    a = np.asarray(sd[key])
    if a.ndim != 1 or a.dtype.kind not in "iu" or (a < 0).any():
        raise ValueError(f"state_dict[{key!r}] is not a shape")
    return tuple(int(x) for x in a)


def check_model(shards: list, params: dict, slots: list, flat: bool) -> None:
    """Raise unless the shards (checked by :func:`check_set`) hold state for
    exactly ``params`` with their shapes (``flat``: reduced-precision state,
    kept flat, where only the number of elements matters), with the
    single-process optimizer's messages; then unless every key of every
    shard is one a shard of this model holds."""
    saved = {key[len("shard/shape/"):]: _shape(shards[0], key)
             for key in shards[0] if isinstance(key, str) and key.startswith("shard/shape/")}
    # Without state (SGD without momentum) nothing would load into a wrong
    # place: the single-process optimizer takes such a checkpoint too.
    first = slots[0] if slots else None  # a slot every parameter has (not an int8 scale)
    for name in saved if first else ():
        if name not in params:
            raise ValueError(f"state_dict has an unexpected key 'state/{first}/{name}'")
    for name, p in params.items() if first else ():
        key = f"state/{first}/{name}"
        if name not in saved:
            raise KeyError(f"state_dict has no {key!r}")
        shape = saved[name]
        if flat:
            n, size = int(np.prod(shape)), p.size
            if n != size:
                raise ValueError(f"state_dict[{key!r}] has shape ({n},), not ({size},)")
        elif shape != p.shape:
            raise ValueError(f"state_dict[{key!r}] has shape {shape} but this optimizer's "
                             f"state array has shape {p.shape}")
    for s in shards:
        for key in s:
            if key in _SCALARS:
                continue
            if key.startswith("state/"):
                parts = key.split("/", 2)
                if len(parts) == 3 and parts[1] in slots and parts[2] in saved:
                    continue
            elif key.startswith(_PER_NAME) and key.split("/", 2)[2] in saved:
                continue
            elif not key.startswith("shard/"):
                continue  # settings: the same in every shard, checked by the optimizer
            raise ValueError(f"state_dict has an unexpected key {key!r} "
                             f"(shard {_int(s, 'shard/rank')})")


def assemble(shards: list, key: str, name: str, a: int, b: int, dtype: Any, shape: Any,
             order: Any, unit: int = 1) -> np.ndarray:
    """Entries ``[a, b)`` (in ``order``; ``None``: as stored) of state
    ``key`` from the shards, one entry per ``unit`` elements."""
    saved = {str(np.asarray(s[f"shard/order/{name}"])) for s in shards
             if f"shard/order/{name}" in s}
    # saved in another memory order: through the whole tensor
    if order is not None and saved - {order}:
        other: Any = saved.pop()  # "C" or "F"
        n = int(np.prod(shape))
        whole = assemble(shards, key, name, 0, n, dtype, shape, other)
        return np.ravel(whole.reshape(shape, order=other), order=order)[a:b]
    out = np.empty(b - a, dtype)
    covered = 0
    for s in shards:
        if f"shard/offset/{name}" not in s:
            continue
        off = _int(s, f"shard/offset/{name}") // unit
        if key not in s and unit > 1:
            continue  # int8: the piece of a tensor without scales (empty)
        piece = array_of(s, key, dtype)
        lo, hi = max(a, off), min(b, off + piece.size)
        if lo < hi:
            out[lo - a:hi - a] = piece[lo - off:hi - off]
            covered += hi - lo
    if covered != b - a:
        raise ValueError(f"the shards do not cover {key!r} (elements {a} to {b})")
    return out
