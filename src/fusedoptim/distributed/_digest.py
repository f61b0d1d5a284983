"""Digests that let the ranks compare what they hold without sending it:
64-bit hashes of arrays and of checkpoint entries, compared with one small
``allgather``."""

import hashlib
from collections.abc import Mapping

import numpy as np

from .._checkpoint import _as_python
from ._layout import flat_view

__all__ = ["array_digest", "checkpoint_digests", "combined", "first_difference",
           "parameter_digest"]


def _hash(*parts: bytes | memoryview) -> int:
    # 64 bits: a differing rank slips through with odds of 2**-64 per entry,
    # where a CRC-32 would miss one in 4 billion.
    h = hashlib.sha1(usedforsecurity=False)
    for part in parts:
        h.update(part)
    return int.from_bytes(h.digest()[:8], "little")


def array_digest(a: np.ndarray) -> int:
    """Hash of an array's dtype, shape and values (its elements in C order,
    so that a C- and a Fortran-ordered copy of the same values agree)."""
    head = f"{a.dtype.str}{a.shape}".encode()
    if a.size == 0:
        return _hash(head)
    return _hash(head, np.ascontiguousarray(a).reshape(-1).data.cast("B"))


def parameter_digest(p: np.ndarray) -> int:
    """Hash of a parameter's bytes in memory order (the ranks have already
    agreed on its shape, dtype and memory order)."""
    if p.size == 0:
        return _hash(b"")
    return _hash(flat_view(p).data.cast("B"))


def _entry_digest(key: str, value) -> int:
    # A scalar from np.load (a 0-d array) and the same Python scalar agree;
    # a state array stays an array even when 0-d (a 0-d parameter's).
    if isinstance(value, np.ndarray) and (value.ndim or key.startswith("state/")):
        return array_digest(value)
    return _hash(repr(_as_python(value)).encode())


def checkpoint_digests(source) -> list:
    """``(label, digest)`` of every entry of a checkpoint: a mapping, or a
    sequence of shard mappings (labelled by their ``shard/rank``, in rank
    order, so that the same shards in another order agree)."""
    if isinstance(source, Mapping):
        parts = [("", source)]
    else:
        # Checked shards: each has an int shard/rank, no two alike.
        ranked = sorted(((int(np.asarray(s["shard/rank"])), s) for s in source),
                        key=lambda e: e[0])
        parts = [(f"shard {r}'s ", s) for r, s in ranked]
    out = []
    for prefix, sd in parts:
        for key in sorted(sd, key=str):
            out.append((f"{prefix}{key!r}", _entry_digest(str(key), sd[key])))
    return out


def combined(digests: list) -> int:
    """One digest of a list of ``(label, digest)``."""
    return _hash(repr(digests).encode())


def first_difference(tables: list) -> "str | None":
    """The first entry whose digest differs between a rank and rank 0, as
    ``"<label> differs between ranks 0 and r"`` (or is on one rank only);
    ``None`` when every rank holds rank 0's."""
    first = dict(tables[0])
    for r, rows in enumerate(tables[1:], 1):
        mine = dict(rows)
        for label, d in tables[0]:
            if label not in mine:
                return f"{label} is on rank 0 but not on rank {r}"
            if mine[label] != d:
                return f"{label} differs between ranks 0 and {r}"
        for label, _d in rows:
            if label not in first:
                return f"{label} is on rank {r} but not on rank 0"
    return None
