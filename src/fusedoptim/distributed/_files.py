"""Checkpoint files of the distributed optimizers: one safetensors file, the
single-process optimizer's, written by rank 0 and read by every rank, with
every failure agreed across the ranks before any collective."""

import os
from typing import Any

import numpy as np

from . import _comm, _digest

__all__ = ["CollectiveFiles"]


class _Whole:
    """What :func:`fusedoptim.save_checkpoint` reads of an optimizer: the
    whole checkpoint gathered on rank 0 and the full parameters."""

    def __init__(self, sd: Any, parameters: dict) -> None:
        self._sd, self.parameters = sd, parameters

    def state_dict(self) -> dict:
        return self._sd


class CollectiveFiles:
    """``save`` and ``load`` of :class:`Distributed` (whose constructor sets
    the attributes declared here)."""

    #: Tells fusedoptim.save_checkpoint / load_checkpoint to call save / load.
    _collective_checkpoints = True
    comm: Any
    rank: int
    _params: dict

    def _whole_on_root(self, root: int) -> "dict | None":  # pragma: no cover - abstract
        raise NotImplementedError

    def load_state_dict(self, state_dict: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path: "str | os.PathLike[str]", parameters: bool = False) -> None:
        """Write the whole checkpoint to one safetensors file (collective).

        Rank 0 writes the single-process optimizer's checkpoint (a
        :class:`ShardedOptimizer` gathers it there first, so rank 0 holds
        the whole state for the length of the save): it loads with
        :meth:`load` at any world size, into either wrapper, and with
        :func:`fusedoptim.load_checkpoint` into a plain optimizer.  Every
        rank returns once the file is complete; a failure on any rank
        raises on every rank.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write, the same on every rank (checked).
        parameters : bool
            Also store the parameters, as ``"parameters/<name>"`` (the same
            on every rank).
        """
        from .._safetensors import _safetensors, save_checkpoint
        error, args = None, None
        try:
            _safetensors()  # the package missing: every rank raises
            args = (os.fspath(path), bool(parameters))
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        got = _comm.agree(self.comm, error, args, op="save")
        for i, label in enumerate(("path", "parameters")):
            for r, x in enumerate(got):
                if x[i] != got[0][i]:
                    raise ValueError(f"{label} is {x[i]!r} on rank {r} but {got[0][i]!r} on "
                                     f"rank 0")
        sd = self._whole_on_root(0)
        error = None
        if self.rank == 0:
            try:
                save_checkpoint(_Whole(sd, self._params), path, parameters)
            except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
                error = exc
        _comm.agree(self.comm, error, op="save")  # also: no rank goes on before the file is written

    def load(self, path: "str | os.PathLike[str]", parameters: bool = True) -> None:
        """Restore a checkpoint file (collective): every rank reads ``path``.

        A rank that cannot read it (a missing file, a node-local disk, a
        corrupt file) makes every rank raise before anything is exchanged;
        then the checks and the agreement of :meth:`load_state_dict` (a
        :class:`ShardedOptimizer` rank takes its part of the whole state,
        which it holds for the length of the load).  With ``parameters``,
        the saved parameters are checked on every rank first, compared
        across the ranks, and copied into the parameters once the state has
        loaded everywhere.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save` or
            :func:`fusedoptim.save_checkpoint` (of a single-process
            optimizer of the same class); the same file on every rank.
        parameters : bool
            Copy the saved parameters into the parameter arrays, when the
            file holds them (the same on every rank).
        """
        from .._safetensors import _check_parameters, read_checkpoint
        error, sd, pairs, mine = None, None, [], None
        try:
            sd, saved = read_checkpoint(path)
            parameters = bool(parameters)
            if saved and parameters:
                pairs = _check_parameters(self, saved)
            mine = (parameters, [(f"'parameters/{n}'", _digest.array_digest(a))
                                 for n, a in saved.items()] if parameters else [])
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        got = _comm.agree(self.comm, error, mine, op="load")
        for r, (flag, _d) in enumerate(got):
            if flag != got[0][0]:
                raise ValueError(f"parameters is {flag} on rank {r} but {got[0][0]} on rank 0")
        problem = _digest.first_difference([d for _f, d in got])
        if problem is not None:
            raise ValueError(f"the ranks read different checkpoints: {problem}")
        self.load_state_dict(sd)  # collective; raises on every rank, or loads on every rank
        for live, a in pairs:
            np.copyto(live, a)
