"""Plain data parallelism over MPI: every rank holds the whole optimizer."""

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._checkpoint import _entries
from . import _comm
from ._base import Distributed

__all__ = ["DataParallelOptimizer"]


class DataParallelOptimizer(Distributed):
    """Data-parallel training without sharding, for comparison with
    :class:`ShardedOptimizer` (same signature and results).

    A step averages the gradients (the rank-ordered mean, see
    :class:`ShardedOptimizer`: an ordered reduce-scatter followed by an
    all-gather of the mean, i.e. an allreduce whose sum order is fixed) and
    then runs the ordinary ``optimizer_class`` over all the parameters on
    every rank: every rank holds and updates the full state.

    Parameters
    ----------
    optimizer_class : type
        A fusedoptim optimizer class, e.g. ``fusedoptim.Adam``.  Any
        registered class works, ``LAMB`` included (the inner optimizer sees
        whole tensors).
    params : dict of str to ndarray
        The parameters, the same names, order, shapes, dtypes and values
        on every rank (checked collectively, the values by a 64-bit digest
        of their bytes: a mismatch raises ``ValueError`` on every rank,
        naming the first parameter that differs; initialize every rank
        from the same seed, or broadcast rank 0's values before).
    comm : mpi4py.MPI.Comm, optional
        Defaults to ``MPI.COMM_WORLD``.
    **hyperparameters
        Passed to ``optimizer_class`` (``lr``, ``betas``, ``max_grad_norm``,
        ``skip_nonfinite``, ...), identical on every rank.
    """

    _kind = "DataParallelOptimizer"

    def _build(self, optimizer_class, hyperparameters):
        for g in self._groups:
            g.full = np.empty(g.n, g.dtype)
        return optimizer_class(self._params, **hyperparameters)

    def step(self, grads: dict[str, np.ndarray]) -> bool:
        """One step with this rank's local gradients (collective).

        Parameters
        ----------
        grads : dict of str to ndarray
            Full-size local gradients, keyed as for the optimizer.

        Returns
        -------
        bool
            ``False`` when the step was skipped (``skip_nonfinite``).
        """
        rs, lr = self._reduce_scatter(grads)
        t0 = time.perf_counter()
        mean = {}
        for g in self._groups:
            g.full[g.lo:g.hi] = g.mean
            _comm.allgather_flat(self.comm, g, g.full)
            for k, name in enumerate(g.names):
                p = self._params[name]
                mean[name] = g.full[g.starts[k]:g.starts[k + 1]].reshape(p.shape,
                                                                           order=g.orders[k])
        t1 = time.perf_counter()
        with self._agreed_lr(lr):
            applied = self.inner.step(mean)
        self.last_times = {"reduce_scatter": rs, "all_gather": t1 - t0,
                           "update": time.perf_counter() - t1}
        return applied

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of communication buffers held by this rank."""
        return super().buffer_nbytes + sum(g.full.nbytes for g in self._groups)

    def state_dict(self) -> dict:
        """The optimizer's checkpoint.  Local: no communication.

        Returns
        -------
        dict
            The inner optimizer's ``state_dict``, the same on every rank:
            the single-process optimizer's.
        """
        return self.inner.state_dict()

    def _whole_on_root(self, root: int) -> "dict | None":
        return self.inner.state_dict() if self.rank == root else None

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a full checkpoint (collective: every rank passes it).

        Parameters
        ----------
        state_dict : mapping
            A single-process optimizer's ``state_dict`` (a dict or an
            ``NpzFile``), :meth:`state_dict`, or a
            :meth:`ShardedOptimizer.full_state_dict`.  A failure on any
            rank raises on every rank and changes nothing (``lr``, a
            schedule too, stays as it was); after loading, the ranks must
            agree on ``t``, ``skipped_steps`` and the hyperparameters
            (``lr`` from the checkpoint included), else every rank is put
            back and raises ``ValueError``.  The ranks also compare a digest
            of every entry they were given: ranks given different
            checkpoints raise ``ValueError`` naming the first differing key.
        """
        error, sd = None, None
        try:
            sd = _entries(state_dict)  # each entry read once (an NpzFile reads on access)
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        _comm.agree(self.comm, error, op="load_state_dict")
        self._load_agreed(sd, sd)
