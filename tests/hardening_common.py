"""What the hardening tests share: a call's outcome on a backend (raising
calls checked to change nothing) and its comparison with the numpy reference."""

import numpy as np
import numpy.ma  # noqa: F401 - registers the subclasses NumPy ships
import numpy.rec  # noqa: F401
import numpy.char  # noqa: F401

from fusedoptim.backend import use_backend
from helpers import snapshot


def outcome(backend, call, *dicts):
    """Run ``call()`` on ``backend``: ``("ok", bytes of every array of
    dicts)`` or ``("raise", type, message)``, checking that a raising call
    changed none of ``dicts``.  Works on copies made by the caller."""
    before = snapshot(*[dict(d.items()) for d in dicts])
    try:
        with use_backend(backend.split("-")[0]):
            call()
    except Exception as exc:  # noqa: BLE001 - comparing whatever each raises
        for snap, d in zip(before, dicts):
            assert set(dict.keys(d)) == set(snap), "a failing call changed a dict's keys"
            for k, a in snap.items():
                assert a.tobytes() == np.asarray(dict.__getitem__(d, k)).tobytes(), k
        return ("raise", type(exc), str(exc))
    return ("ok", [[np.asarray(dict.__getitem__(d, k)).tobytes() for k in sorted(dict.keys(d))]
                   for d in dicts])


def same_everywhere(make, backend):
    """``make()`` gives ``(call, dicts)`` on fresh data; the outcome on
    ``backend`` equals the numpy reference's."""
    call, dicts = make()
    got = outcome(backend, call, *dicts)
    call, dicts = make()
    want = outcome("numpy", call, *dicts)
    assert got == want
    return got
