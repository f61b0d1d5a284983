"""Adam and AdamW with reduced-precision moments: the reference (the spec).

Two state formats, chosen by ``state_dtype`` on :class:`~fusedoptim.Adam` and
:class:`~fusedoptim.AdamW` (float32 parameters only):

``"bfloat16"`` (the ``adam_bf16`` step)
    ``m`` and ``v`` are stored as 16-bit words, the upper half of the float32
    bit pattern.  Per element: decode (``word << 16``), Adam's update in
    float32, encode.
    Encoding rounds to nearest even, or stochastically (below).
``"int8"`` (the ``adam_q8`` step)
    Blocks of ``QBLOCK = 256`` elements, counted from each tensor's element 0
    in memory order, one float32 scale per block per moment, one byte per
    element per moment.  ``m`` is coded relative to the block's largest
    ``|m|``, ``v`` through its square root ``s = sqrt(v)`` relative to the
    block's largest ``s``: both codes are tiny floating-point formats read
    and written by bit manipulation of the float32 pattern of ``y = |x| /
    scale`` in ``[0, 1]`` (no table, no search):

    * m: sign bit + 7 bits: 4 exponent and 3 mantissa bits, ``code 127 =
      1.0``, ``code c`` in 1..127 is the float with bit pattern ``(c + 889)
      << 20``, ``code 0 = 0`` (range 2^-16 .. 1, relative step <= 1/8).
    * v: 8 bits of ``s / scale``: 4 exponent and 4 mantissa bits, ``code c``
      is the float with bit pattern ``(c + 1777) << 19`` (``255 = 1.0``).
      Code 0 decodes to ``1.0625 * 2^-16``, **not 0**: a second moment that
      decodes to zero next to a non-zero first moment would give a step of
      ``lr * m / eps``.
    * encoding adds rounding bits below the kept mantissa and shifts:
      ``(bits(y) + r) >> 20`` (m) or ``>> 19`` (v), then clamps to the code
      range.  ``r`` is ``0x7FFFF + lsb`` (``0x3FFFF + lsb``: nearest even) or
      20 (19) random bits (stochastic).
    * the block's scale is its largest ``|m|`` (largest ``s``), found as
      the largest float32 bit pattern (a NaN wins: it then poisons its block,
      as it would poison a float32 state; a NaN ``m`` or ``s`` is first
      replaced by the positive quiet NaN, so a NaN block's scale is
      ``0x7FC00000``, a NaN ``m`` codes as 127 with sign 0 and a NaN ``s``
      as 255, and a NaN bfloat16 moment is the word ``0x7FC0``: a NaN's
      sign is an accident of operand order); the code uses ``y = |x| * inv``
      with ``inv = 1 / scale`` (0 for a zero scale) rounded once to float32.

    The parameter update uses the float32 moments before they are encoded;
    with ``dm``, ``ds`` the decoded codes (before the scale) and ``ms``,
    ``vs`` the block's old scales::

        m = dm * (b1*ms) + (1-b1)*g;  v = (ds*ds) * ((b2*vs)*vs) + (1-b2)*(g*g)
        s = sqrt(v);  p = p - (alr * m) / (s + es)

    with ``alr = f32(lr * sqrt(c2) / c1)`` and ``es = f32(eps * sqrt(c2))``
    computed in double, ``b1*ms`` and ``(b2*vs)*vs`` in float32 once per
    block, and ``ds*ds`` exact (a code has 5 significant bits).  This is
    Adam's update ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``, ``p =
    p - (lr/c1) * m / (sqrt(v/c2) + eps)`` with the decoded ``m = dm*ms``,
    ``v = (ds*vs)^2``, the block's scale folded into the decay factors and
    the bias corrections into the step size and epsilon (Kingma and Ba's
    "more efficient" order), written with one square root and one division
    per element: the loops are bound by their arithmetic at high memory
    bandwidth, so each multiplication per element counts; the square root
    that the code of ``v`` needs is the denominator's.  bfloat16 states take
    ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*(g*g)`` and the same
    ``s`` and ``p``.  Tensors under
    ``QMIN_ELEMENTS`` elements keep float32 moments and take Adam's float32
    update (:func:`fusedoptim.families.adam.adam_tensor` in the course's order,
    ``torch_order=False``, bit for bit).

Stochastic rounding
    The rounding bits of element ``i`` (its index in the concatenation of
    every tensor of the step, in parameter order) at step ``t`` are
    ``h = mix(key ^ (i mod 2^32))``, ``key = step_key(seed, t)``, with
    ``mix`` the ``lowbias32`` integer hash; bfloat16 takes ``h & 0xFFFF``
    for m and ``h >> 16`` for v.  int8 (:func:`q8_rounding_bits`) takes a
    cheaper hash, multiplicative: ``h = (key + i) * 0x9E3779B1 mod 2^32``,
    the top 20 bits ``h >> 12`` for m and the top 19 bits of ``h *
    0x85EBCA6B mod 2^32`` for v.  Each is uniform over steps because
    ``key`` is; within a step the top bits of consecutive elements are
    spread by the golden-ratio stride (Fibonacci hashing), and the compiled
    loops get them by one addition per vector of elements (``h`` grows by
    ``0x9E3779B1`` per element).  Why not ``lowbias32`` there: at high
    memory bandwidth the 8-bit step is bound by its vector instructions,
    and the full hash was a fifth of them.
    Nothing depends on the backend, the thread count or the split: the same
    bits everywhere.  The keyword ``index_base`` (default 0) is added to
    every ``i``: a sharded optimizer's rank steps the slice of the step
    that starts there.
    Why: with round-to-nearest, a second moment whose per-step change
    ``(1 - b2)(g^2 - v)`` is below half a code step never moves
    (stagnation); rounding up with probability equal to the remainder makes
    every store unbiased.
"""

import numpy as np

__all__ = ["QBLOCK", "QMIN_ELEMENTS", "mix32", "step_key", "q8_rounding_bits", "bf16_encode",
           "bf16_decode", "q8m_encode", "q8m_decode", "q8v_encode", "q8v_decode",
           "block_absmax", "adam_bf16_tensor", "adam_q8_tensor", "adam_bf16", "adam_q8",
           "LOWP_SCALARS", "LOWP_FLAGS"]

#: Elements per quantization block (bitsandbytes' and torchao's choice; a
#: multiple of it divides ``_tuning.BLOCK_ELEMENTS``, so blocks never
#: straddle the compiled backend's thread blocks).
QBLOCK = 256
#: Tensors with fewer elements keep float32 moments in ``"int8"`` mode
#: (bitsandbytes' threshold): their state is negligible memory, and biases
#: and norms are the parameters most sensitive to coarse moments.
QMIN_ELEMENTS = 4096

#: The keywords of both steps (every backend: ``adam_bf16(params, grads,
#: states, mode, **kw)``).  ``index_base`` (optional, default 0) is the
#: index of the first tensor's element 0 in the step: a ZeRO shard's inner
#: optimizer steps a slice of the whole step and must round its elements as
#: the whole step does.
LOWP_SCALARS = ("lr", "beta1", "beta2", "eps", "bc1", "bc2", "weight_decay", "gscale")
LOWP_FLAGS = ("decoupled", "maximize", "stochastic", "key", "index_base")

_M32 = 0xFFFFFFFF
_U32 = np.uint32


def mix32(x: "int | np.ndarray") -> np.ndarray:
    """``lowbias32`` (C. Wellons' integer hash) of uint32 ``x`` (int or array)."""
    x = np.asarray(x, dtype=np.uint32)
    with np.errstate(over="ignore"):  # wrapping uint32 products are the point
        x = x ^ (x >> _U32(16))
        x = x * _U32(0x7FEB352D)
        x = x ^ (x >> _U32(15))
        x = x * _U32(0x846CA68B)
        x = x ^ (x >> _U32(16))
    return x  # type: ignore[return-value]


def step_key(seed: int, t: int) -> int:
    """The 32-bit key of step ``t`` (from 1) for stochastic rounding under
    ``seed`` (an int, used mod 2^32): ``k = mix(seed ^ 0x243F6A88)``, then
    ``k = mix(k ^ (t mod 2^32))``, then ``k = mix(k ^ (t >> 32))``; for one
    seed, distinct steps below 2^32 get distinct keys (``mix`` is a
    bijection)."""
    k = int(mix32((seed & _M32) ^ 0x243F6A88))
    k = int(mix32(k ^ (t & _M32)))
    return int(mix32(k ^ ((t >> 32) & _M32)))


def _hash(key, idx):
    return mix32(_U32(key) ^ idx.astype(np.uint32))


def q8_rounding_bits(key: int, idx: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """Stochastic rounding bits of the 8-bit codes of elements ``idx``
    (their indices in the step) under step key ``key``: 20 bits for m, 19
    for v (``h = (key + idx) * 0x9E3779B1``; ``h >> 12``, ``(h *
    0x85EBCA6B) >> 13``, uint32 arithmetic mod 2^32)."""
    with np.errstate(over="ignore"):  # wrapping uint32 arithmetic is the point
        h = (_U32(key) + np.asarray(idx).astype(np.uint32)) * _U32(0x9E3779B1)
        return h >> _U32(12), (h * _U32(0x85EBCA6B)) >> _U32(13)


def _bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def _float(b):
    return np.ascontiguousarray(b, dtype=np.uint32).view(np.float32)


# --- bfloat16 ---------------------------------------------------------------------


def bf16_decode(w: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 words (exact)."""
    return _float(w.astype(np.uint32) << _U32(16))


def bf16_encode(x: np.ndarray, r: "np.ndarray | None" = None) -> np.ndarray:
    """bfloat16 words of float32 ``x``: nearest even (``r is None``) or
    ``(bits + r) >> 16`` with 16 random bits ``r``; a NaN is stored as the
    positive quiet NaN ``0x7FC0`` (its sign and payload are accidents of
    operand order)."""
    b = _bits(x)
    if r is None:
        r = _U32(0x7FFF) + ((b >> _U32(16)) & _U32(1))
    w = (b + r) >> _U32(16)
    w = np.where(x != x, _U32(0x7FC0), w)
    return w.astype(np.uint16)


# --- 8-bit codes ------------------------------------------------------------------


def q8m_decode(c: np.ndarray) -> np.ndarray:
    """Signed code of m -> float32 in [-1, 1] (times the block's scale)."""
    c = c.astype(np.uint32)
    mag = c & _U32(127)
    b = np.where(mag == 0, _U32(0), (mag + _U32(889)) << _U32(20))
    return _float(b | ((c >> _U32(7)) << _U32(31)))


def q8m_encode(m: np.ndarray, inv: "np.ndarray | np.float32",
               r: "np.ndarray | None" = None) -> np.ndarray:
    """Codes of float32 ``m`` at reciprocal scale ``inv`` (float32)."""
    y = np.abs(m) * np.float32(inv) if np.ndim(inv) == 0 else np.abs(m) * inv
    b = _bits(y)
    if r is None:
        r = _U32(0x7FFFF) + ((b >> _U32(20)) & _U32(1))
    c = np.minimum(np.maximum((b + r) >> _U32(20), _U32(889)), _U32(1016)) - _U32(889)
    return (c | ((_bits(m) >> _U32(31)) << _U32(7))).astype(np.uint8)


def q8v_decode(c: np.ndarray) -> np.ndarray:
    """Code of s = sqrt(v) -> float32 in (0, 1] (times the block's scale)."""
    return _float((c.astype(np.uint32) + _U32(1777)) << _U32(19))


def q8v_encode(s: np.ndarray, inv: "np.ndarray | np.float32",
               r: "np.ndarray | None" = None) -> np.ndarray:
    """Codes of float32 ``s >= 0`` at reciprocal scale ``inv``."""
    b = _bits(s * inv)
    if r is None:
        r = _U32(0x3FFFF) + ((b >> _U32(19)) & _U32(1))
    c = np.minimum(np.maximum((b + r) >> _U32(19), _U32(1777)), _U32(2032)) - _U32(1777)
    return c.astype(np.uint8)


def block_absmax(x: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """Per row of ``x`` (float32, blocks as rows): the largest ``|x|`` as
    the largest float32 bit pattern of ``|x|`` (NaN wins), and its
    reciprocal rounded once to float32 (0 where the scale is 0)."""
    b = _bits(np.abs(x)).reshape(x.shape)
    scale = _float(b.max(axis=1)) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    # 1 / a subnormal scale may overflow to inf: that is the reciprocal's value
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.where(scale == 0, np.float32(0), np.float32(1) / scale).astype(np.float32)
    return scale, inv


# --- the per-tensor updates -------------------------------------------------------


def _alr_es(kw):
    """``lr * sqrt(bc2) / bc1`` and ``eps * sqrt(bc2)`` in double, each
    rounded once to float32."""
    r = np.sqrt(np.float64(kw["bc2"]))
    return np.float32(kw["lr"] * r / kw["bc1"]), np.float32(kw["eps"] * r)


def _prelude(p, g, kw):
    """The gradient prelude and AdamW's decay of Adam (families.adam)."""
    f = np.float32
    if kw["gscale"] != 1.0:
        g = g * f(kw["gscale"])
    if kw["maximize"]:
        g = -g
    wd = kw["weight_decay"]
    if wd != 0.0:
        if kw["decoupled"]:
            p = p * f(1.0 - kw["lr"] * wd)
        else:
            g = g + f(wd) * p
    return p, g


def adam_bf16_tensor(p: np.ndarray, g: np.ndarray, mw: np.ndarray, vw: np.ndarray,
                     idx0: int, **kw) -> None:
    """One Adam step on float32 tensor ``p`` (memory order, flat) with
    bfloat16 moments ``mw``, ``vw`` (uint16, flat), in place; ``idx0`` is
    the tensor's first element's index in the step (stochastic rounding)."""
    f = np.float32
    m = bf16_decode(mw)
    v = bf16_decode(vw)
    p1, g = _prelude(p, g, kw)
    m = f(kw["beta1"]) * m + f(1.0 - kw["beta1"]) * g
    v = f(kw["beta2"]) * v + f(1.0 - kw["beta2"]) * (g * g)
    alr, es = _alr_es(kw)
    p[...] = p1 - (alr * m) / (np.sqrt(v) + es)
    rm = rv = None
    if kw["stochastic"]:
        h = _hash(kw["key"], np.arange(idx0, idx0 + p.size, dtype=np.int64))
        rm, rv = h & _U32(0xFFFF), h >> _U32(16)
    mw[...] = bf16_encode(m, rm)
    vw[...] = bf16_encode(v, rv)


def adam_q8_tensor(p: np.ndarray, g: np.ndarray, mc: np.ndarray, vc: np.ndarray,
                   ms: np.ndarray, vs: np.ndarray, idx0: int, **kw) -> None:
    """One Adam step on float32 tensor ``p`` (flat) with 8-bit moments
    (codes ``mc``, ``vc``: uint8, flat; scales ``ms``, ``vs``: float32, one
    per block), in place."""
    f = np.float32
    n = p.size
    nb = ms.size
    blk = np.arange(n) // QBLOCK
    p1, g = _prelude(p, g, kw)
    b1ms = f(kw["beta1"]) * ms  # float32, once per block
    b2vs = (f(kw["beta2"]) * vs) * vs
    ds = q8v_decode(vc)
    m = q8m_decode(mc) * b1ms[blk] + f(1.0 - kw["beta1"]) * g
    v = (ds * ds) * b2vs[blk] + f(1.0 - kw["beta2"]) * (g * g)
    s = np.sqrt(v)
    alr, es = _alr_es(kw)
    p[...] = p1 - (alr * m) / (s + es)
    # A NaN moment is stored as the positive quiet NaN (as bf16_encode and
    # lowp_onestate.encode do): a NaN's sign and payload depend on the
    # operand order the compiler chose, which is not part of the spec.
    m = np.where(m != m, f(np.nan), m)
    s = np.where(s != s, f(np.nan), s)
    pad = nb * QBLOCK - n
    new_ms, inv_m = block_absmax(np.concatenate([m, np.zeros(pad, f)]).reshape(nb, QBLOCK))
    new_vs, inv_v = block_absmax(np.concatenate([s, np.zeros(pad, f)]).reshape(nb, QBLOCK))
    rm = rv = None
    if kw["stochastic"]:
        rm, rv = q8_rounding_bits(kw["key"], np.arange(idx0, idx0 + n, dtype=np.int64))
    mc[...] = q8m_encode(m, inv_m[blk], rm)
    vc[...] = q8v_encode(s, inv_v[blk], rv)
    ms[...] = new_ms
    vs[...] = new_vs


# --- multi-tensor reference steps -------------------------------------------------


def _flat(a):
    """A dense array as a flat view in memory order."""
    return a.ravel(order="K")


def adam_bf16(tensors: list, kw: dict) -> None:
    """Reference step over ``tensors``: ``(p, g, m_words, v_words)`` tuples
    (p float32, dense; g in p's layout), computed into copies first and
    written only when every tensor is done."""
    out, idx = [], kw.get("index_base", 0)
    for p, g, mw, vw in tensors:
        pf, mf, vf = _flat(p).copy(), mw.copy(), vw.copy()
        adam_bf16_tensor(pf, _flat(g), mf, vf, idx, **kw)
        out.append((pf, mf, vf))
        idx += p.size
    for (p, _g, mw, vw), (pf, mf, vf) in zip(tensors, out):
        _flat(p)[...] = pf
        mw[...] = mf
        vw[...] = vf


def adam_q8(tensors: list, kw: dict) -> None:
    """Reference step over ``(p, g, m, v, m_scale, v_scale)`` tuples; a
    tensor whose ``m_scale`` is ``None`` has float32 moments (under
    ``QMIN_ELEMENTS``) and takes Adam's float32 update."""
    from .adam import adam_tensor
    out, idx = [], kw.get("index_base", 0)
    for p, g, m, v, ms, vs in tensors:
        new = [_flat(p).copy(), m.copy(), v.copy()]
        if ms is None:
            adam_tensor(new[0], _flat(g), new[1], new[2], None, lr=kw["lr"],
                        beta1=kw["beta1"], beta2=kw["beta2"], eps=kw["eps"],
                        bc1=kw["bc1"], bc2=kw["bc2"], weight_decay=kw["weight_decay"],
                        decoupled=kw["decoupled"], maximize=kw["maximize"],
                        amsgrad=False, torch_order=False, gscale=kw["gscale"])
        else:
            new += [ms.copy(), vs.copy()]
            adam_q8_tensor(new[0], _flat(g), new[1], new[2], new[3], new[4], idx, **kw)
        out.append(new)
        idx += p.size
    for arrays, new in zip(tensors, out):
        _flat(arrays[0])[...] = new[0]
        for a, b in zip(arrays[2:], new[1:]):
            a[...] = b
