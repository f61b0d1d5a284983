"""Reduced-precision state for the one-state families: the reference (the spec).

``state_dtype="bfloat16"`` or ``"int8"`` on the classes of four families
(float32 parameters), each storing one state slot in
the codec of :mod:`fusedoptim.families.adam_lowp`:

=========  =====================================  ===========  =============
family     classes (settings)                     slot         codec
=========  =====================================  ===========  =============
``sgd``    Momentum; SGD with ``momentum > 0``    ``buf``      signed
``rmsprop`` RMSProp, ``centered=False``,          ``sq``       sqrt
           ``momentum=0``
``adagrad`` Adagrad                               ``sum``      sqrt
``lion``   Lion                                   ``m``        signed
=========  =====================================  ===========  =============

A family's low-precision form is its :class:`LowpDecl` (which slot, which
codec, the loop's float32 scalars and flags, the settings it refuses) plus
its element loop in ``_ext/lowp_onestate.h`` and ``_numba/lowp_onestate.py``.
The update itself is the family's own float32 update, unchanged: per tensor,

1. decode the slot to float32 ``x`` (bfloat16: ``word << 16``; int8:
   ``q8m_decode(c) * scale`` for the signed codec, ``s * s`` with ``s =
   q8v_decode(c) * scale`` for the sqrt codec);
2. run the family's float32 update (e.g. :func:`~fusedoptim.families.sgd.
   sgd_tensor`) on the parameter and ``x``: the parameter takes the new
   state before it is encoded;
3. encode the new ``x``: bfloat16 words of ``x`` (both codecs); int8 codes
   of ``x`` (signed) or of ``sqrt(x)`` (sqrt) relative to the block's
   largest magnitude (``block_absmax``), one float32 scale per block of
   ``QBLOCK`` elements.

Rounding on store is nearest even or stochastic with the bits of
``adam_lowp``, for element ``i`` of the step (index in the concatenation of
the tensors, in parameter order) at step ``t`` under ``key = step_key(seed,
t)``: a signed slot takes Adam's ``m`` bits, a sqrt slot Adam's ``v`` bits.
bfloat16: ``h = mix32(key ^ (i mod 2^32))``, ``h & 0xFFFF`` (signed) or
``h >> 16`` (sqrt); int8: ``q8_rounding_bits(key, i)``, i.e. ``h = (key +
i) * 0x9E3779B1 mod 2^32``, ``h >> 12`` (signed) or ``(h * 0x85EBCA6B mod
2^32) >> 13`` (sqrt).  Tensors under
``QMIN_ELEMENTS`` elements keep a float32 slot in int8 mode and take the
family's float32 update bit for bit.  A NaN state is stored as the positive
quiet NaN (bfloat16 word ``0x7FC0``; int8 sign bit 0): a NaN's sign bit is
an accident of operand order, not part of the spec.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import adam_lowp as _c
from ._spec import Family
from . import adagrad, lion, rmsprop, sgd

__all__ = ["LowpDecl", "DECLS", "refusal", "decode", "encode", "onestate_step"]

_U32 = np.uint32


@dataclass(frozen=True)
class LowpDecl:
    """The low-precision form of one family."""

    #: Index of the family's loops in the compiled tables (``lowp_onestate.h``).
    index: int
    #: The family (``fusedoptim.families.<name>.FAMILY``).
    family: Family
    #: The slot stored in low precision.
    slot: str
    #: ``"signed"`` (first-moment code) or ``"sqrt"`` (second-moment code).
    codec: str
    #: The loop's scalars from the step's keywords, in double (every backend
    #: rounds each once to float32), and its flags.
    scalars: Callable[[dict], tuple]
    flags: Callable[[dict], tuple]
    #: Why the step's keywords are not supported (a message), or ``None``.
    refuse: Callable[[dict], "str | None"]
    #: Whether ``weight_decay`` is the gradient prelude's L2 term (Lion's is
    #: its own decoupled decay, a scalar of its loop).
    l2: bool = True
    #: The default rounding of bfloat16 state (int8's is stochastic).  An
    #: accumulator that only grows (Adagrad's sum) stops growing under round
    #: to nearest once ``g*g`` is below half a bfloat16 step of the sum,
    #: i.e. after a few hundred steps of steady gradients (measured: median
    #: ``sqrt(sum)`` 21% low after 3000 steps; stochastic: 0.05%).
    bf16_rounding: str = "nearest"


def _sgd_refuse(kw):
    return None if kw["has_buf"] else "a momentum buffer (momentum > 0)"


def _rms_refuse(kw):
    if kw["centered"]:
        return "centered=False"
    return "momentum=0" if kw["has_buf"] else None


DECLS = {
    "sgd": LowpDecl(
        0, sgd.FAMILY, "buf", "signed",
        lambda kw: (kw["lr"], kw["momentum"], 1.0 - kw["dampening"]),
        lambda kw: (bool(kw["nesterov"]), bool(kw["first"])), _sgd_refuse),
    "rmsprop": LowpDecl(
        1, rmsprop.FAMILY, "sq", "sqrt",
        lambda kw: (kw["lr"], kw["alpha"], 1.0 - kw["alpha"], kw["eps"]),
        lambda kw: (bool(kw["eps_inside"]),), _rms_refuse),
    "adagrad": LowpDecl(
        2, adagrad.FAMILY, "sum", "sqrt",
        lambda kw: (kw["lr"], kw["eps"]), lambda kw: (), lambda kw: None,
        bf16_rounding="stochastic"),
    "lion": LowpDecl(
        3, lion.FAMILY, "m", "signed",
        lambda kw: (kw["lr"], kw["beta1"], 1.0 - kw["beta1"], kw["beta2"],
                    1.0 - kw["beta2"], kw["weight_decay"]),
        lambda kw: (kw["weight_decay"] != 0.0,), lambda kw: None, l2=False),
}


def refusal(decl: LowpDecl, kw: dict) -> "str | None":
    """The error message for step keywords ``kw`` that ``decl`` does not
    support, or ``None``."""
    why = decl.refuse(kw)
    return None if why is None else f"state_dtype with the {decl.family.name} family needs {why}"


def _blocks(n):
    return np.arange(n) // _c.QBLOCK


def decode(decl: LowpDecl, state: np.ndarray, scale: "np.ndarray | None") -> np.ndarray:
    """The float32 values of a slot: bfloat16 words, int8 codes with their
    block scales, or a float32 slot (copied)."""
    if state.dtype == np.uint16:
        return _c.bf16_decode(state)
    if state.dtype == np.float32:
        return state.copy()
    assert scale is not None, "int8 codes come with their block scales"
    blk = _blocks(state.size)
    if decl.codec == "signed":
        return _c.q8m_decode(state) * scale[blk]
    s = _c.q8v_decode(state) * scale[blk]
    return s * s


def _rounding(decl, stochastic, key, idx0, n, q8):
    if not stochastic:
        return None
    idx = np.arange(idx0, idx0 + n, dtype=np.int64)
    if q8:
        rm, rv = _c.q8_rounding_bits(key, idx)
        return rm if decl.codec == "signed" else rv
    h = _c.mix32(_U32(key) ^ idx.astype(np.uint32))
    return h & _U32(0xFFFF) if decl.codec == "signed" else h >> _U32(16)


def encode(decl: LowpDecl, x: np.ndarray, state: np.ndarray, scale: "np.ndarray | None",
           stochastic: bool = False, key: int = 0, idx0: int = 0) -> None:
    """Store float32 values ``x`` into a slot (``state`` and ``scale``, in
    place) in its format; ``idx0``: the index of its element 0 in the step."""
    n = x.size
    if state.dtype == np.float32:
        state[...] = x
        return
    q8 = state.dtype == np.uint8
    r = _rounding(decl, stochastic, key, idx0, n, q8)
    # A NaN is stored as the positive quiet NaN: the sign of a NaN depends on
    # the operand order the compiler chose (x86 keeps the first NaN operand's),
    # which is not part of the spec; the codes must not depend on it.
    x = np.where(x != x, np.float32(np.nan), x)
    if not q8:
        state[...] = _c.bf16_encode(x, r)
        return
    assert scale is not None, "int8 codes come with their block scales"
    y = x if decl.codec == "signed" else np.sqrt(x)
    nb = scale.size
    pad = np.zeros(nb * _c.QBLOCK - n, np.float32)
    new_scale, inv = _c.block_absmax(np.concatenate([y, pad]).reshape(nb, _c.QBLOCK))
    blk = _blocks(n)
    if decl.codec == "signed":
        state[...] = _c.q8m_encode(y, inv[blk], r)
    else:
        state[...] = _c.q8v_encode(y, inv[blk], r)
    scale[...] = new_scale


def _family_kw(kw):
    return {k: v for k, v in kw.items() if k not in ("stochastic", "key", "index_base")}


def onestate_step(decl: LowpDecl, tensors: list, kw: dict) -> None:
    """Reference step over ``(p, g, state, scale)`` tuples (p float32,
    dense; g in p's layout; ``scale`` ``None`` for bfloat16 words or a
    float32 slot); ``kw``: the family's step keywords with ``gscale``,
    ``stochastic`` and ``key``.  Computed into copies first, written only
    when every tensor is done; ``kw["index_base"]`` (default 0): the index
    of the first tensor's element 0 in the step (``adam_lowp.LOWP_FLAGS``)."""
    fam = decl.family
    fkw = _family_kw(kw)
    out, idx = [], kw.get("index_base", 0)
    for p, g, state, scale in tensors:
        pf = p.ravel(order="K").copy()
        x = decode(decl, state, scale)
        slots = [x if s == decl.slot else None for s in fam.slots]
        fam.update(pf, g.ravel(order="K"), *slots, **fkw)
        st = state.copy()
        sc = None if scale is None else scale.copy()
        encode(decl, x, st, sc, kw["stochastic"], kw["key"], idx)
        out.append((pf, st, sc))
        idx += p.size
    for (p, _g, state, scale), (pf, st, sc) in zip(tensors, out):
        p.ravel(order="K")[...] = pf
        state[...] = st
        if scale is not None:
            scale[...] = sc
