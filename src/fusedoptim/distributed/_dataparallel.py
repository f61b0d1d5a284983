"""Plain data parallelism over MPI: every rank holds the whole optimizer."""

import time

import numpy as np

from . import _comm
from ._base import _CHECKED, Distributed

__all__ = ["DataParallelOptimizer"]


class DataParallelOptimizer(Distributed):
    """Data-parallel training without sharding, for comparison with
    :class:`ShardedOptimizer` (same signature and results).

    A step averages the gradients (the rank-ordered mean, see
    :class:`ShardedOptimizer`: an ordered reduce-scatter followed by an
    all-gather of the mean, i.e. an allreduce whose sum order is fixed) and
    then runs the ordinary ``optimizer_class`` over all the parameters on
    every rank: every rank holds and updates the full state.
    """

    def _build(self, optimizer_class, hyperparameters):
        for g in self._groups:
            g.full = np.empty(g.n, g.dtype)
        return optimizer_class(self._params, **hyperparameters)

    def step(self, grads: dict) -> bool:
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
        rs = self._reduce_scatter(grads)
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
        applied = self.inner.step(mean)
        self.last_times = {"reduce_scatter": rs, "all_gather": t1 - t0,
                           "update": time.perf_counter() - t1}
        return applied

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of communication buffers held by this rank."""
        return super().buffer_nbytes + sum(g.full.nbytes for g in self._groups)

    def state_dict(self) -> dict:
        """The optimizer's ``state_dict`` (the same on every rank)."""
        return self.inner.state_dict()

    def load_state_dict(self, state_dict) -> None:
        """Load a full checkpoint (collective; every rank passes it).  A
        failure on any rank raises on every rank and changes nothing."""
        backup = self.inner.state_dict()
        error = None
        try:
            self.inner.load_state_dict(state_dict)
        except _CHECKED as exc:
            error = exc
        try:
            _comm.agree(self.comm, error)
        except _CHECKED + (_comm.DistributedError,):
            if error is None:
                self.inner.load_state_dict(backup)
            raise
