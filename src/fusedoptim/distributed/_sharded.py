"""ZeRO stage 1: optimizer state sharded over the ranks of an MPI communicator."""

import time
from typing import Any
from collections.abc import Iterable, Mapping

import numpy as np

from .._checkpoint import _check_class
from .._lowp import _SCALE
from ..families.adam_lowp import QBLOCK
from .._norm import CLIP_EPS as _CLIP_EPS
from . import _comm, _shards
from ._base import Distributed

__all__ = ["ShardedOptimizer"]


class ShardedOptimizer(Distributed):
    """A fusedoptim optimizer whose state is sharded over MPI ranks (ZeRO-1).

    Every rank holds the full parameters and computes gradients on its own
    share of the batch.  The parameters of each dtype, flattened in dict
    order (each tensor in its memory order), are cut into one contiguous
    slice per rank (tensors may straddle ranks; cuts fall on a tensor
    boundary or a multiple of 4096 elements into a tensor, so slices are
    balanced to 2048 elements).  A rank keeps the optimizer state of its
    slice only: the inner ``optimizer_class`` is built over flat 1-D views
    of the pieces of the parameters in the slice, so any elementwise update
    works.  Reduced-precision state (``state_dtype``, float32 parameters:
    one flat space) is told where its slice lies: stochastic rounding counts
    each element at its index in the whole step, int8 keeps float32 state
    by the whole tensor's size, and a piece's int8 blocks are the tensor's
    (pieces start at multiples of 4096 elements, 16 blocks).

    A step (:meth:`step`): the rank-ordered mean of the gradients, each
    rank receiving its slice (a reduce-scatter); the fused update of the
    slice; the updated slices all-gathered into every rank's parameters.

    Parameters
    ----------
    optimizer_class : type
        A fusedoptim optimizer class, e.g. ``fusedoptim.Adam``, whose update
        is elementwise: every registered class except ``LAMB``.  LAMB's
        trust ratio is a per-tensor norm, which needs whole tensors, so
        ``ShardedOptimizer(fusedoptim.LAMB, ...)`` raises ``TypeError`` on
        every rank; use :class:`DataParallelOptimizer` for it.
    params : dict of str to ndarray
        The parameters, the same names, order, shapes, dtypes and values
        on every rank (checked collectively, the values by a 64-bit digest
        of their bytes: a mismatch raises ``ValueError`` on every rank,
        naming the first parameter that differs; initialize every rank
        from the same seed, or broadcast rank 0's values before).
        :func:`flat_parameters` lays them out so that no staging copy is
        needed.
    comm : mpi4py.MPI.Comm, optional
        Defaults to ``MPI.COMM_WORLD``.
    **hyperparameters
        Passed to ``optimizer_class`` (``lr``, ``betas``, ``max_grad_norm``,
        ``skip_nonfinite``, ...), identical on every rank.

    Notes
    -----
    Rank-ordered mean, for rank ``r``'s gradient ``g_r`` and ``W`` ranks,
    elementwise in the gradient's dtype::

        mean = ((((g_0 + g_1) + g_2) + ... ) + g_{W-1}) / W

    Plain text: add the ranks' gradients one at a time in rank order,
    then divide by the number of ranks.  The parameters after any number
    of steps are bitwise those of ``optimizer_class(params, ...)`` on one
    process stepped with that mean, on every rank and for every ``W``;
    ``max_grad_norm`` and ``skip_nonfinite`` use the global norm of the
    mean, bitwise the single-process norm, and decide alike on every rank.

    :meth:`step`, :meth:`full_state_dict`, :meth:`load_state_dict`,
    :meth:`save` and :meth:`load` are collective: every rank calls them, in
    the same order, from one thread.  Mixing the two wrappers across ranks
    raises ``ValueError`` on every rank at construction.
    """

    _slices_tensors = True
    _kind = "ShardedOptimizer"

    def _build(self, optimizer_class, hyperparameters):
        local = {}
        self._local = []  # (parameter index, name, group, a, b, offset in the slice)
        for g in self._groups:
            for k, a, b in g.pieces:
                name = g.names[k]
                local[name] = g.views[k][a:b]
                self._local.append((g.index[k], name, g, a, b, g.starts[k] + a - g.lo))
        order = {n: i for i, n in enumerate(self._names)}
        self._local.sort(key=lambda e: e[0])
        local = {n: local[n] for n in sorted(local, key=order.__getitem__)}
        if not local:
            # This rank owns no element: an empty piece keeps one code path.
            g = self._groups[0]
            local = {g.names[0]: g.views[0][0:0]}
        inner = optimizer_class(local, **hyperparameters)
        if inner._lowp is not None:
            # Reduced-precision state: float32 parameters only, so one group,
            # whose flat space is the single-process step's concatenation.
            # (A rank holding no piece of a non-float32 tensor would not see it.)
            bad = [n for n, p in self._params.items() if p.dtype != np.float32]
            if bad:
                raise TypeError(f"state_dtype needs float32 parameters; "
                                f"parameters[{bad[0]!r}] is {self._params[bad[0]].dtype}")
            # whole: its checkpoints record (and loads check) the model's
            # names, shapes and orders, not this rank's pieces.
            inner._lowp.as_shard(inner, self._groups[0].lo,
                                 {n: self._params[n].size for n in local}, whole=self._params)
        return inner

    def step(self, grads: dict[str, np.ndarray]) -> bool:
        """One step with this rank's local gradients (collective: every rank
        calls it).

        Parameters
        ----------
        grads : dict of str to ndarray
            ``grads[name]`` or ``grads["d" + name]``, full-size, as for the
            single-process optimizer.  A rank whose gradients fail the checks
            makes every rank raise (naming that rank), with nothing changed.

        Returns
        -------
        bool
            ``False`` when the step was skipped (``skip_nonfinite`` and a
            non-finite mean gradient), on every rank alike.
        """
        rs, lr = self._reduce_scatter(grads)
        t0 = time.perf_counter()
        inner = self.inner
        mine = {name: g.mean[o:o + b - a] for _i, name, g, a, b, o in self._local}
        if not mine:  # the empty piece of _build
            mine = {n: p[0:0].copy() for n, p in inner.parameters.items()}
        gscale, norm = 1.0, None
        max_norm = inner.max_grad_norm
        if max_norm is not None or inner.skip_nonfinite:
            pieces = [(i, mine[name]) for i, name, *_rest in self._local]
            norm, finite, scale = _comm.clip_decision(self.comm, len(self._names), pieces,
                                                      max_norm, _CLIP_EPS)
            if not finite and inner.skip_nonfinite:
                with self._agreed_lr(lr):
                    inner.step_scaled(mine, 1.0, norm, skip=True)
                self.last_times = {"reduce_scatter": rs, "update": time.perf_counter() - t0,
                                   "all_gather": 0.0}
                return False
            if scale is not None and not scale >= 1.0:  # NaN too, as on one process
                gscale = scale
        with self._agreed_lr(lr):
            inner.step_scaled(mine, gscale, norm)
        t1 = time.perf_counter()
        self._all_gather()
        self.last_times = {"reduce_scatter": rs, "update": t1 - t0,
                           "all_gather": time.perf_counter() - t1}
        return True

    def _all_gather(self):
        for g in self._groups:
            if g.flat is not None:
                _comm.allgather_flat(self.comm, g, g.flat)
                continue
            flat = g.send  # a staging buffer of the group's size
            for k, a, b in g.pieces:
                s = g.starts[k]
                flat[s + a:s + b] = g.views[k][a:b]
            _comm.allgather_flat(self.comm, g, flat)
            for k, v in enumerate(g.views):
                v[...] = flat[g.starts[k]:g.starts[k] + v.size]

    # --- checkpoints ---------------------------------------------------------

    def state_dict(self) -> dict:
        """This rank's shard of the checkpoint.  Local: no communication.

        Returns
        -------
        dict
            The inner optimizer's ``state_dict`` (its
            ``"state/<slot>/<name>"`` arrays are the 1-D pieces of this
            rank; int8 scales: the blocks of the piece) plus
            ``"shard/format"`` (2), ``"shard/rank"``,
            ``"shard/world_size"``, for every parameter
            ``"shard/shape/<name>"`` (its shape, an int64 array) and
            ``"shard/order/<name>"`` (its memory order, ``"C"`` or ``"F"``),
            and per piece ``"shard/offset/<name>"`` (where the piece starts
            in the tensor, counted in memory order).  The list of every
            rank's shard loads into any world size
            (:meth:`load_state_dict`), which checks the model's shapes
            against the recorded ones.
        """
        sd = self.inner.state_dict()
        sd.update(_shards.describe(self._params, self.rank, self.world_size))
        for _i, name, _g, a, _b, _o in self._local:
            sd[f"shard/offset/{name}"] = a
        if not self._local:
            for name in self.inner.parameters:
                sd[f"shard/offset/{name}"] = 0
        return sd

    def full_state_dict(self, root: int = 0) -> dict[str, Any] | None:
        """The whole optimizer's checkpoint gathered on rank ``root``
        (collective); ``None`` on the other ranks.

        It is exactly the ``state_dict()`` of the single-process optimizer
        (same keys; full-precision state arrays in each parameter's shape
        and layout, reduced-precision ones flat as the single-process
        optimizer keeps them): it loads into a plain ``optimizer_class``, or
        into a ShardedOptimizer of any world size.  A failure raises on
        every rank.

        Parameters
        ----------
        root : int, optional
            The rank that receives the checkpoint, in ``[0, world_size)``
            and the same on every rank (checked collectively first: a bad or
            differing ``root`` raises on every rank).

        Returns
        -------
        dict or None
            The single-process ``state_dict`` on rank ``root``, ``None`` on
            the others.
        """
        root = self._agreed_root(root)
        inner = self.inner
        inner_sd = inner.state_dict()
        sd = {k: v for k, v in inner_sd.items() if not k.startswith("state/")}
        if inner._lowp is not None:
            return self._full_lowp(sd, root)
        # The slots of the inner state_dict (every rank's inner has a parameter, an empty
        # piece if need be): with those a setting switched on since the last step.
        first = next(iter(inner.parameters))
        for label in [x for x in inner.state_names if f"state/{x}/{first}" in inner_sd]:
            for g in self._groups:
                parts = [inner_sd[f"state/{label}/{name}"]
                         for _i, name, gg, *_r in self._local if gg is g]
                local = np.concatenate(parts) if parts else np.empty(0, g.dtype)
                full: Any = np.empty(g.n, g.dtype) if self.rank == root else None
                if self.world_size == 1:
                    full[...] = local
                else:
                    recv = [full, g.counts, g.cuts[:-1], _comm.mpi_type(g.dtype)] \
                        if self.rank == root else None
                    self.comm.Gatherv(local, recv, root=root)
                if self.rank != root:
                    continue
                for k, name in enumerate(g.names):
                    p = self._params[name]
                    piece = full[g.starts[k]:g.starts[k + 1]]
                    sd[f"state/{label}/{name}"] = piece.reshape(p.shape, order=g.orders[k]).copy(
                        order=g.orders[k])
        return sd if self.rank == root else None

    def _whole_on_root(self, root: int) -> "dict | None":
        return self.full_state_dict(root)

    def _full_lowp(self, sd: dict, root: int) -> "dict | None":
        """``full_state_dict`` of reduced-precision state: every array is
        flat (codes or words per element, int8 scales per block), and one
        label mixes dtypes (int8 codes, float32 slots of small tensors), so
        each rank's pieces travel as bytes, described by a gathered list."""
        rows, chunks, error = [], [], None
        try:
            for label, d in self.inner.state.items():
                for _i, name, _g, a, _b, _o in self._local:
                    if name in d:  # int8: a small tensor's slot has no scale
                        arr = np.ascontiguousarray(d[name])
                        rows.append((label, name, a, arr.dtype.str, arr.size))
                        chunks.append(arr.view(np.uint8).reshape(-1))
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        metas = _comm.agree(self.comm, error, rows, op="full_state_dict")
        local = np.concatenate(chunks) if chunks else np.empty(0, np.uint8)
        counts = [sum(np.dtype(dt).itemsize * n for *_r, dt, n in m) for m in metas]
        full: Any = np.empty(sum(counts), np.uint8) if self.rank == root else None
        if self.world_size == 1:
            full[...] = local
        else:
            displs = [int(x) for x in np.cumsum([0] + counts[:-1])]
            recv = [full, counts, displs, _comm.mpi_type(np.dtype(np.uint8))] \
                if self.rank == root else None
            self.comm.Gatherv(local, recv, root=root)
        error = None
        if self.rank == root:
            try:
                sd.update(self._assemble_lowp(metas, full))
            except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
                error = exc
        _comm.agree(self.comm, error, op="full_state_dict")
        return sd if self.rank == root else None

    def _assemble_lowp(self, metas: list, full: Any) -> dict:
        """The whole state arrays from every rank's ``(label, name, start,
        dtype, size)`` rows and their bytes ``full``, in the single-process
        optimizer's key order."""
        pieces: dict = {}
        pos = 0
        for rows in metas:
            for label, name, a, dt, n in rows:
                nbytes = np.dtype(dt).itemsize * n
                pieces.setdefault((label, name), []).append(
                    (a, full[pos:pos + nbytes].view(dt)))
                pos += nbytes
        out = {}
        empty = np.uint16 if self.inner._lowp.dtype == "bfloat16" else np.float32
        for label in self.inner.state:
            for name, p in self._params.items():
                key = f"state/{label}/{name}"
                got = sorted(pieces.get((label, name), []), key=lambda e: e[0])
                if not got:
                    if p.size == 0 and not self._is_scale(label):
                        out[key] = np.empty(0, empty)  # no rank holds an empty tensor
                    continue
                unit = QBLOCK if self._is_scale(label) else 1
                nxt = 0
                for a, x in got:
                    if a // unit != nxt:
                        break
                    nxt += x.size
                if nxt != -(-p.size // unit):
                    raise ValueError(f"the ranks' pieces do not cover {key!r}")
                out[key] = np.concatenate([x for _a, x in got])
        return out

    def _is_scale(self, label):
        """Whether state ``label`` holds int8 block scales (one per QBLOCK
        elements) rather than one entry per element."""
        lowp = self.inner._lowp
        return lowp is not None and lowp.dtype == "int8" and label.endswith(_SCALE)

    def load_state_dict(self,
                        state_dict: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> None:
        """Load a checkpoint (collective: every rank passes it).

        Each rank takes the part of its slice.  Checked on every rank first;
        any failure raises on every rank and changes nothing anywhere
        (``lr``, a schedule too, stays as it was).

        Parameters
        ----------
        state_dict : mapping or sequence of mappings
            A full checkpoint (:meth:`full_state_dict`, or a single-process
            optimizer's ``state_dict``; a dict or an ``NpzFile``), or the
            sequence of every rank's :meth:`state_dict` shard saved at any
            world size (in any order; the shards' recorded shapes are
            checked against the parameters', with the single-process
            optimizer's messages, and every shard's keys too).  After
            loading, the ranks must agree on ``t``, ``skipped_steps``, the
            hyperparameters (``lr`` from the checkpoint included) and a
            digest of every entry they were given: ranks given different
            checkpoints raise ``ValueError`` naming the first differing
            entry, and every rank is put back.
        """
        error, local, source = None, None, None
        try:
            local, source = self._local_state_dict(state_dict)
        except Exception as exc:  # noqa: BLE001 - any failure: the others must not wait
            error = exc
        _comm.agree(self.comm, error, op="load_state_dict")
        self._load_agreed(local, source)

    def _local_state_dict(self, state_dict):
        """The inner optimizer's state dict for this rank's pieces, after
        the checks of the checkpoint against the model (every rank runs them
        all: a mismatch raises the same error everywhere), and the
        checkpoint as the ranks compare it (the list of shards, or the
        mapping)."""
        inner = self.inner
        shards = None
        if isinstance(state_dict, Mapping) and "shard/world_size" in state_dict:
            state_dict = [state_dict]  # one shard: a whole checkpoint only at world size 1
        if isinstance(state_dict, (str, bytes)) or not isinstance(state_dict, (Mapping, Iterable)):
            raise TypeError(f"state_dict must be a mapping or a sequence of shard mappings, "
                            f"got {type(state_dict).__name__}")
        if not isinstance(state_dict, Mapping):
            shards = list(state_dict)
            if not shards or not all(isinstance(s, Mapping) for s in shards):
                raise TypeError("state_dict must be a mapping or a sequence of shard mappings")
            _shards.check_set(shards)
            base = shards[0]
        else:
            base = state_dict
        _check_class(inner, base)  # before its state keys look unexpected
        # The state format before the state arrays, whose dtypes would only
        # hint at it (the single-process optimizer's order and message).
        inner._check_state_format(base)
        lowp = inner._lowp is not None
        if lowp:
            slots = list(inner.state)
        else:
            # As the single-process load (_state_copies): a slot the checkpoint holds is
            # taken, kept or not; one it lacks that the settings leave off is dropped.
            held, on = set(inner.state), inner._slots_on()
            saved = {k.split("/", 2)[1] for k in base
                     if isinstance(k, str) and k.startswith("state/") and k.count("/") >= 2}
            slots = [x for x in inner.state_names if x in saved or (x in held and x in on)]
        if shards is not None:
            _shards.check_model(shards, self._params, slots, lowp)
        out = {}
        for key in base:
            if not isinstance(key, str):
                raise TypeError(f"state_dict keys must be str, got {key!r}")
            if key.startswith("shard/"):
                continue
            parts = key.split("/", 2)
            if parts[0] == "state" and len(parts) == 3 and parts[1] in slots \
                    and parts[2] in self._params:
                continue
            out[key] = base[key]  # an unexpected key: the inner optimizer names it
        for label in slots:
            unit = QBLOCK if self._is_scale(label) else 1
            # (a full-precision slot the inner optimizer lacks: its pieces are the parameters')
            for name, piece in inner.state.get(label, inner.parameters).items():
                key = f"state/{label}/{name}"
                g, a, b = self._where(name, inner.parameters[name].size)
                if lowp:
                    # Flat arrays as the optimizer keeps them (no layout to
                    # convert); int8 scales count blocks, and pieces start
                    # on block boundaries.
                    a, b = a // unit, -(-b // unit)
                    if shards is None:
                        full = _shards.array_of(base, key, piece.dtype)
                        n = -(-self._params[name].size // unit)
                        if full.shape != (n,):
                            raise ValueError(f"state_dict[{key!r}] has shape {full.shape}, "
                                             f"not ({n},)")
                        out[key] = full[a:b]
                    else:
                        out[key] = _shards.assemble(shards, key, name, a, b, piece.dtype,
                                                    None, None, unit)
                elif shards is None:
                    full = _shards.array_of(base, key, piece.dtype)
                    p = self._params[name]
                    if full.shape != p.shape:
                        raise ValueError(f"state_dict[{key!r}] has shape {full.shape} but this "
                                         f"optimizer's state array has shape {p.shape}")
                    out[key] = np.ravel(full, order=g.orders[g.names.index(name)])[a:b]
                else:
                    order = g.orders[g.names.index(name)] if self._local else "C"
                    out[key] = _shards.assemble(shards, key, name, a, b, piece.dtype,
                                                self._params[name].shape, order)
        return out, (base if shards is None else shards)

    def _where(self, name, size):
        for _i, n, g, a, b, _o in self._local:
            if n == name:
                return g, a, b
        return self._groups[0], 0, size  # the empty piece of _build
