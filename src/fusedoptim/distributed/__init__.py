"""Data-parallel training over MPI, exact on every rank.

:class:`ShardedOptimizer` shards the optimizer state over the ranks (ZeRO
stage 1); :class:`DataParallelOptimizer` replicates it (plain data
parallelism).  Both average the ranks' gradients in a fixed order, the
*rank-ordered mean* ``(((g_0 + g_1) + g_2) + ... + g_{W-1}) / W``
(elementwise, in the gradient dtype), so the parameters are bitwise the
same on every rank and bitwise those of the single-process optimizer stepped
with that mean, whatever MPI's reduction algorithm and the world size.

Needs ``mpi4py`` and an MPI library (``pip install 'fusedoptim[mpi]'``
installs both, MPICH included); run under ``mpiexec -n N python script.py``.
See ``docs/distributed.md``.
"""

from ._comm import DistributedError
from ._dataparallel import DataParallelOptimizer
from ._launch import find_mpiexec
from ._layout import balanced_cuts, flat_parameters
from ._sharded import ShardedOptimizer

__all__ = ["DataParallelOptimizer", "DistributedError", "ShardedOptimizer",
           "balanced_cuts", "find_mpiexec", "flat_parameters"]
