"""What the sharded and the data-parallel optimizer share: the collective
checks of the construction and of each step, and the ordered reduce-scatter
of the gradients."""

import numbers
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .. import _validate as _v
from .._groups import _check_disjoint
from ..optimizer import Optimizer, _check_parameters
from . import _comm, _digest
from ._attrs import InnerAttributes
from ._files import CollectiveFiles
from ._layout import Group, _contiguous_run, order_of

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = ["Distributed"]

_CHECKED = (KeyError, TypeError, ValueError)


class _Schedule(str):
    """A schedule as the ranks compare it: by its type's name (its repr may
    hold an address that differs per process; its values are compared at
    each step)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{self}>"


def _settings(inner):
    """``(label, value, value)`` rows of every setting of the inner
    optimizer: its group's hyperparameters (``lr`` included), its options
    and its state format, as it normalized them (floats, tuples), so that
    ``0.01`` and ``np.float64(0.01)``, or a list and a tuple, are alike."""
    rows = []
    for items in (inner.param_groups[0].items(), inner._opts.items(),
                  inner._state_format().items()):
        for k, v in items:
            if k != "params":
                if callable(v):
                    v = _Schedule(type(v).__name__)
                rows.append((f"hyperparameter {k!r}", v, v))
    return rows


def _difference(tables):
    """The first difference between a rank's ``(label, key, shown)`` rows
    and rank 0's (keys compared, ``repr(shown)`` in the message); ``None``
    when every rank has rank 0's."""
    first = {label: (key, shown) for label, key, shown in tables[0]}
    for r, rows in enumerate(tables[1:], 1):
        mine = {label: (key, shown) for label, key, shown in rows}
        for label in list(first) + [k for k in mine if k not in first]:
            a, b = first.get(label), mine.get(label)
            if a is None or b is None or a[0] != b[0]:
                return (f"{label} is {'unset' if b is None else repr(b[1])} on rank {r} but "
                        f"{'unset' if a is None else repr(a[1])} on rank 0")
    return None


def _signature(kind, optimizer_class, params):
    # The values' digests last: compared once the layouts agree.
    return (kind, optimizer_class.__name__,
            [(name, tuple(p.shape), np.dtype(p.dtype).str, order_of(p))
             for name, p in params.items()],
            [_digest.parameter_digest(p) for p in params.values()])


def _mismatch(sigs):
    """The first difference between a rank's signature and rank 0's."""
    kind0, cls0, params0, _values0 = sigs[0]
    for r, (kind, cls, params, _values) in enumerate(sigs[1:], 1):
        if kind != kind0:
            # The two wrappers exchange different buffers: mixed, MPI would
            # abort or the ranks would silently diverge.
            return f"the wrapper is {kind} on rank {r} but {kind0} on rank 0"
        if cls != cls0:
            return f"optimizer class is {cls} on rank {r} but {cls0} on rank 0"
        names0, names = [n for n, *_ in params0], [n for n, *_ in params]
        for n in names0:
            if n not in names:
                return f"parameter {n!r} is on rank 0 but not on rank {r}"
        for n in names:
            if n not in names0:
                return f"parameter {n!r} is on rank {r} but not on rank 0"
        if names != names0:
            return f"parameters are in a different order on rank {r} than on rank 0"
        for (n, shape0, dt0, o0), (_n, shape, dt, o) in zip(params0, params):
            if shape != shape0:
                return f"parameter {n!r} has shape {shape} on rank {r} but {shape0} on rank 0"
            if dt != dt0:
                return (f"parameter {n!r} has dtype {np.dtype(dt)} on rank {r} but "
                        f"{np.dtype(dt0)} on rank 0")
            if o != o0:  # the flat spaces would list the elements in different orders
                return (f"parameter {n!r} is {o}-ordered on rank {r} but {o0}-ordered "
                        f"on rank 0")
    for r, (_k, _c, _p, values) in enumerate(sigs[1:], 1):
        for (n, *_rest), v0, v in zip(sigs[0][2], sigs[0][3], values):
            if v != v0:
                # Every step keeps a difference: data-parallel ranks would
                # differ for ever, sharded ones agree on a patchwork.
                return (f"parameter {n!r} differs between ranks 0 and {r}: initialize every "
                        f"rank from the same seed, or broadcast rank 0's values")
    return None


def _communicator(MPI, comm):
    """``comm`` checked (``MPI.COMM_WORLD`` for ``None``)."""
    if comm is None:
        return MPI.COMM_WORLD
    if isinstance(comm, MPI.Comm):
        if comm == MPI.COMM_NULL:
            raise ValueError("comm is MPI.COMM_NULL: this rank is not in that communicator")
        return comm
    if not (hasattr(comm, "Get_size") and hasattr(comm, "Get_rank")):
        hint = (" (pass hyperparameters by keyword: lr=...)"
                if isinstance(comm, numbers.Number) or callable(comm) else "")
        raise TypeError(f"comm must be an mpi4py communicator, got "
                        f"{type(comm).__name__}{hint}")
    return comm


class Distributed(InnerAttributes, CollectiveFiles):
    """Base of :class:`ShardedOptimizer` and :class:`DataParallelOptimizer`."""

    #: Whether the inner optimizer sees slices of the tensors (ZeRO-1).
    _slices_tensors = False
    #: The wrapper's name in the ranks' comparison (a subclass keeps its base's).
    _kind = "Distributed"
    #: The communicator the ranks step over.
    comm: "MPI.Comm"

    def __init__(self, optimizer_class: type[Optimizer], params: dict[str, np.ndarray],
                 comm: "MPI.Comm | None" = None, **hyperparameters: Any) -> None:
        MPI = _comm.mpi()
        self.comm = _communicator(MPI, comm)
        self.world_size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        error, sig = None, None
        try:
            if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)
                    and optimizer_class.family is not None):
                raise TypeError(f"optimizer_class must be a fusedoptim optimizer class, "
                                f"got {optimizer_class!r}")
            if self._slices_tensors and optimizer_class.family.second_pass:
                # A per-tensor norm (LAMB's trust ratio) over a slice of a
                # tensor would not be the single-process update.
                raise TypeError(f"{optimizer_class.__name__} needs whole tensors (a per-tensor "
                                f"norm) and cannot be sharded; use DataParallelOptimizer")
            if isinstance(params, (list, tuple)):
                raise TypeError("params must be a dict of arrays: parameter groups are not "
                                "supported by the distributed optimizers")
            _check_disjoint(_check_parameters(params))
            sig = _signature(self._kind, optimizer_class, params)
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        # Every rank learns every rank's signature: a mismatch raises the same
        # error everywhere before any buffer is exchanged.
        problem = _mismatch(_comm.agree(self.comm, error, sig, op="__init__"))
        if problem is not None:
            raise ValueError(problem)
        self.optimizer_class: type[Optimizer] = optimizer_class
        self._params = params
        self._names = list(params)
        by_dtype: dict = {}
        for i, (name, p) in enumerate(params.items()):
            by_dtype.setdefault(np.dtype(p.dtype), []).append((i, name, p))
        self._groups = [Group(dt, [i for i, _n, _p in items], [n for _i, n, _p in items],
                              [p for _i, _n, p in items], self.world_size, self.rank)
                        for dt, items in by_dtype.items()]
        for g in self._groups:
            L = g.counts[self.rank]
            g.mean = np.empty(L, g.dtype)                       # this rank's mean slice
            g.recv = np.empty((self.world_size - 1) * L, g.dtype)  # the others' pieces
            g.send = None if len(g.sizes) == 1 else np.empty(g.n, g.dtype)
        self.last_times: Optional[dict] = None
        self.inner: Any = None
        error, rows = None, None
        try:
            self.inner = self._build(optimizer_class, hyperparameters)
            rows = _settings(self.inner)
        except Exception as exc:  # noqa: BLE001 - bad hyperparameters, or any failure
            error = exc
        # The settings as the inner optimizer normalized them: 0.01 and
        # np.float64(0.01), a list and a tuple, an omitted default and the
        # default given, are alike.
        problem = _difference(_comm.agree(self.comm, error, rows, op="__init__"))
        if problem is not None:
            raise ValueError(problem)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # pickle, copy.copy and copy.deepcopy all come here.  A copy would
        # be one rank's shard of the state (or a replica), stepping without
        # the other ranks: the whole state is a collective checkpoint.
        raise TypeError(f"{type(self).__name__} objects cannot be copied or pickled (each "
                        f"rank holds a part of one optimizer); save a checkpoint with "
                        f"opt.save(path)")

    @property
    def state_nbytes(self) -> int:
        """Bytes of optimizer state held by this rank."""
        return sum(a.nbytes for d in self.inner.state.values() for a in d.values())

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of communication buffers held by this rank."""
        return sum(g.mean.nbytes + g.recv.nbytes + (0 if g.send is None else g.send.nbytes)
                   + (0 if g.pad is None else g.pad.nbytes)
                   for g in self._groups)

    # --- the step's collective part --------------------------------------------

    def _check_step(self, grads):
        """Each rank's gradients checked and the coming step's settings
        taken (a schedule's value included), then both exchanged: an error
        or a difference raises on every rank before any buffer moves.
        Returns the gradients in the parameters' order and layouts, and the
        schedule's value (``None`` for a float ``lr``)."""
        error, pairs, rows, lr = None, None, None, None
        try:
            pairs = _v.gather(self._params, grads, (), _v.NAMED)
            rows, lr = self._step_rows()
        except Exception as exc:  # noqa: BLE001 - a schedule's own error too
            error = exc
        problem = _difference(_comm.agree(self.comm, error, rows, op="step"))
        if problem is not None:
            raise ValueError(problem)
        return [g for _p, g in pairs], lr

    def _step_rows(self):
        """What every rank must agree on before a step: ``t``, the settings
        and the value a schedule gives ``lr`` for this step (checked as the
        step checks it); and that value."""
        inner = self.inner
        t = inner.t
        rows = [("t", t, t), *_settings(inner)]
        lr = None
        if callable(inner.lr):
            lr = inner.current_lrs[0]  # what the step would compute
            rows.append((f"lr schedule value at step {t}", float(lr).hex(), lr))  # bitwise
        return rows, lr

    @contextmanager
    def _agreed_lr(self, lr):
        """The inner optimizer steps with ``lr``, the schedule's value the
        ranks agreed on, in place of its schedule: calling it again could
        raise on one rank only (leaving the others in a collective) or, for
        a schedule that is not a function of ``t`` alone, give another value
        than the single-process step's one call."""
        if lr is None:
            yield
            return
        group = self.inner.param_groups[0]
        schedule = group["lr"]
        # As ParamGroup stores a checked value, without a second check that
        # could round it (-0.0): the very value the schedule gave.
        dict.__setitem__(group, "lr", lr)
        self.inner._groups_changed()
        try:
            yield
        finally:
            dict.__setitem__(group, "lr", schedule)
            self.inner._groups_changed()

    def _load_agreed(self, local, source) -> None:
        """``inner.load_state_dict(local)`` on every rank or on none: the
        ranks then agree on ``t``, ``skipped_steps`` and the settings
        (``lr`` included), and on a digest of the checkpoint ``source`` each
        was given (``local`` is what this rank takes of it); an error or a
        difference anywhere puts back what every rank had (its ``lr``
        schedule too) and raises on every rank."""
        inner = self.inner
        backup = (inner.state_dict(), inner.lr, inner._last_grad_norm, inner._last_lrs)
        error, rows, digests = None, None, None
        try:
            digests = _digest.checkpoint_digests(source)
            inner.load_state_dict(local)
            rows = [("t", inner.t, inner.t),
                    ("skipped_steps", inner.skipped_steps, inner.skipped_steps),
                    *_settings(inner)]
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        try:
            got = _comm.agree(self.comm, error, (rows, _digest.combined(digests or [])),
                              op="load_state_dict")
            problem = _difference([r for r, _d in got])
            if problem is None and any(d != got[0][1] for _r, d in got):
                # Every rank sees the difference, so every rank joins this
                # second exchange, of the entries' digests.
                problem = _digest.first_difference(self.comm.allgather(digests))
            if problem is not None:
                raise ValueError(f"the ranks loaded different checkpoints: {problem}")
        except _CHECKED + (_comm.DistributedError,):
            if error is None:  # this rank loaded: put it back
                sd, lr, norm, lrs = backup
                inner.load_state_dict(sd)
                inner.lr = lr  # a schedule is not in a state_dict
                inner._last_grad_norm, inner._last_lrs = norm, lrs
            raise

    def _agreed_root(self, root) -> int:
        """``root`` checked on every rank and the same on every rank."""
        error = None
        try:
            if isinstance(root, (bool, np.bool_)) or not isinstance(root, numbers.Integral):
                raise TypeError(f"root must be an int, got {type(root).__name__}")
            root = int(root)
            if not 0 <= root < self.world_size:
                raise ValueError(f"root must be in [0, {self.world_size}), got {root}")
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        roots = _comm.agree(self.comm, error, root, op="full_state_dict")
        for r, x in enumerate(roots):
            if x != roots[0]:
                raise ValueError(f"root is {x} on rank {r} but {roots[0]} on rank 0")
        return root

    def _reduce_scatter(self, grads):
        """The rank-ordered mean of every rank's ``grads`` (full size), this
        rank's slice of it in each group's ``mean``; returns the seconds it
        took and the step's agreed schedule value (see :meth:`_check_step`)."""
        gs, lr = self._check_step(grads)
        t0 = time.perf_counter()
        for g in self._groups:
            views = [np.ravel(gs[i], order=o) for i, o in zip(g.index, g.orders)]
            send = _contiguous_run(views)
            if send is None:
                send = g.send
                for v, s in zip(views, g.starts):
                    send[s:s + v.size] = v
            _comm.ordered_mean_slice(self.comm, g, send, g.recv, g.mean)
        return time.perf_counter() - t0, lr
