"""What the MPI check scripts share: the communicator and the bitwise and
fault checks (imported by check_distributed.py and agreement.py)."""

import numpy as np
from mpi4py import MPI

COMM = MPI.COMM_WORLD
W, RANK = COMM.Get_size(), COMM.Get_rank()


def same_float(a, b):
    return a == b or (a is not None and b is not None and np.isnan(a) and np.isnan(b))


def same_everywhere(params, comm=COMM):
    blob = b"".join(np.ascontiguousarray(p).tobytes() for p in params.values())
    return len(set(comm.allgather(blob))) == 1


def assert_bitwise(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: differs"


def check_params(got, want, what):
    for name in want:
        assert_bitwise(np.ascontiguousarray(got[name]), np.ascontiguousarray(want[name]),
                       f"{what} {name}")


def expect_error(kind, fn, needle):
    try:
        fn()
    except kind as exc:
        assert needle in str(exc), f"{kind.__name__} without {needle!r}: {exc}"
        return
    raise AssertionError(f"no {kind.__name__} ({needle})")


def mean_of(gs, world):
    """The rank-ordered mean of gradient dicts ``gs`` (rank 0's first), as
    the docs define it: summed in rank order, divided by ``world``."""
    out = {}
    for name in gs[0]:
        acc = gs[0][name].copy()
        for g in gs[1:]:
            acc = acc + g[name]
        out[name] = acc / acc.dtype.type(world)
    return out
