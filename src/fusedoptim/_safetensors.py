"""Optimizer checkpoints in the safetensors format (no pickle anywhere).

A file holds what :meth:`~fusedoptim.Optimizer.state_dict` holds, whatever
that is: its arrays as tensors under their state_dict keys
(``"state/exp_avg/W1"``), every other entry (``"optimizer"``, ``"t"``,
``"skipped_steps"``, ``"lr"``, ``"hp/..."``) as a metadata string under its
key, JSON-encoded so that its type comes back (``int``, ``float``, ``bool``,
``str``, ``None``, lists of those; an array of text, which safetensors has
no dtype for, comes back as that array).  Optionally the parameters too, as
tensors ``"parameters/<name>"``.  Two metadata entries describe the file:
``"__fusedoptim__"`` (the format version, ``"2"``) and ``"__crc32__"`` (a
CRC-32 of every other metadata entry, key and text, and of every tensor's
name, dtype, shape and bytes, so that a corrupted file is refused, not
loaded).  A file of format ``"1"``, whose checksum covered the tensors
only, is refused naming its format.

The ``safetensors`` package is optional (``pip install
'fusedoptim[safetensors]'``): only saving and loading import it.
"""

import errno
import json
import os
import stat
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint"]

# "2": the checksum covers the metadata too (format "1" checked the tensors only).
FORMAT = "2"
_FORMAT_KEY = "__fusedoptim__"
_CRC_KEY = "__crc32__"
_PARAM = "parameters/"
_TEXT = "__text_array__"


def _safetensors():
    try:
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise ImportError(f"saving and loading safetensors checkpoints needs the safetensors "
                          f"package: pip install 'fusedoptim[safetensors]' ({exc})") from None
    return save_file, safe_open, SafetensorError


def _plain(value: Any, key: str) -> Any:
    """A state_dict scalar as a JSON-able Python object (exact floats)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, which a "
                    f"safetensors checkpoint cannot hold")


def _c_order(a: np.ndarray) -> np.ndarray:
    """``a`` in C order (0-d kept 0-d, unlike ``np.ascontiguousarray``):
    safetensors' NumPy writer copies raw memory as if it were C order."""
    return a if a.flags.c_contiguous else np.array(a, order="C")


def _crc(tensors: Mapping, metadata: Mapping) -> str:
    """CRC-32 of a file's content, as 8 hex digits: the metadata entries but
    the checksum's own, then every tensor's name, dtype, shape and bytes,
    each in sorted key order.  Names and texts go in as JSON, so that two
    different contents never give the same input (a key may hold any text)."""
    entries = sorted((k, v) for k, v in metadata.items() if k != _CRC_KEY)
    crc = zlib.crc32(json.dumps(entries).encode())
    for key in sorted(tensors):
        a = tensors[key]
        crc = zlib.crc32(json.dumps([key, a.dtype.str, list(a.shape)]).encode(), crc)
        if a.size:
            crc = zlib.crc32(_c_order(a).reshape(-1).data.cast("B"), crc)
    return f"{crc:08x}"


def save_checkpoint(optimizer: Any, path: str | os.PathLike, parameters: bool = False) -> None:
    """Write ``optimizer.state_dict()`` (and its parameters, with
    ``parameters=True``) to ``path`` in the safetensors format.

    ``opt.save(path, parameters)`` is the same call.  The file is written
    beside ``path`` and then renamed over it, so an interrupted save leaves
    the previous file intact.  Other tools read it as any safetensors file
    (``safetensors.numpy.load_file``); see the module docstring for the
    layout.

    Parameters
    ----------
    optimizer : fusedoptim.Optimizer
        The optimizer to save.
    path : str or os.PathLike
        The file to write (replaced if it exists).
    parameters : bool
        Also store the parameters, as ``"parameters/<name>"``.
    """
    if getattr(optimizer, "_collective_checkpoints", False):
        optimizer.save(path, parameters)  # a distributed wrapper: its collective save
        return
    save_file, _open, _err = _safetensors()
    parameters = bool(parameters)
    sd = optimizer.state_dict()
    tensors, metadata = {}, {_FORMAT_KEY: FORMAT}
    for key, value in sd.items():
        if key in (_FORMAT_KEY, _CRC_KEY) or key.startswith(_PARAM):
            raise ValueError(f"state_dict key {key!r} is reserved by the checkpoint format")
        if isinstance(value, np.ndarray) and value.dtype.kind in "US":
            # Text arrays (np.savez's form of a list of names): no safetensors dtype.
            metadata[key] = json.dumps({_TEXT: value.tolist(), "dtype": value.dtype.str})
        elif isinstance(value, np.ndarray):
            tensors[key] = _c_order(value)
        else:
            metadata[key] = json.dumps(_plain(value, key), allow_nan=True)
    if parameters:
        for name, p in optimizer.parameters.items():
            tensors[_PARAM + name] = _c_order(p)
    metadata[_CRC_KEY] = _crc(tensors, metadata)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):  # else safetensors' error names its temporary file
        raise FileNotFoundError(errno.ENOENT, "No such directory for the checkpoint", folder)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except _err as exc:  # safetensors' I/O errors carry no errno
            raise OSError(f"cannot write {path}: {exc}") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _decode(key: str, text: str) -> Any:
    try:
        value = json.loads(text)
        if isinstance(value, dict) and _TEXT in value:
            value = np.array(value[_TEXT], dtype=np.dtype(value["dtype"]))
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"checkpoint metadata {key!r} is not valid JSON: {text[:40]!r}") from None
    return value


def _check_regular_file(path: str) -> None:
    """Raise unless ``path`` names a regular file (symbolic links followed).

    Checked before safetensors opens it: it reports a directory as
    ``OSError: No such device (os error 19)`` (its memory map's error,
    without the path) and would wait forever for a writer on a FIFO.
    ``os.stat``'s own errors (``FileNotFoundError``, ``PermissionError``,
    ...) carry the errno and the path.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory, not a checkpoint file", path)
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file, so not a checkpoint")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(state_dict, parameters)`` read from a checkpoint file and checked
    against its format marker and checksum; nothing else is validated."""
    _save, safe_open, SafetensorError = _safetensors()
    path = os.fspath(path)
    _check_regular_file(path)
    try:
        with safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a readable safetensors file "
                         f"(truncated or corrupt?): {exc}") from None
    except OSError as exc:
        # safetensors' OS errors carry no errno and seldom the path.
        if path in str(exc):
            raise
        raise type(exc)(f"cannot read {path}: {exc}") from None
    fmt = metadata.get(_FORMAT_KEY)
    if fmt is None:
        raise ValueError(f"{path} is not a fusedoptim checkpoint (no {_FORMAT_KEY!r} "
                         f"metadata)")
    if fmt != FORMAT:
        raise ValueError(f"{path} is a fusedoptim checkpoint of format {fmt!r}; this "
                         f"version of fusedoptim reads format {FORMAT!r} only")
    if _CRC_KEY not in metadata:
        raise ValueError(f"{path} has no {_CRC_KEY!r} metadata")
    if metadata[_CRC_KEY] != _crc(tensors, metadata):
        raise ValueError(f"{path} is corrupt: its metadata and tensors do not match "
                         f"their checksum")
    sd, params = {}, {}
    for key, value in metadata.items():
        if key not in (_FORMAT_KEY, _CRC_KEY):
            sd[key] = _decode(key, value)
    for key, a in tensors.items():
        if key.startswith(_PARAM):
            params[key[len(_PARAM):]] = a
        elif key in sd:
            raise ValueError(f"checkpoint key {key!r} is both a tensor and metadata")
        else:
            sd[key] = a
    return sd, params


def _check_parameters(optimizer: Any, params: dict) -> list:
    """Pairs ``(live, saved)`` of every parameter, all checked."""
    live = optimizer.parameters
    for name in params:
        if name not in live:
            raise ValueError(f"checkpoint has parameter {name!r}, which this optimizer "
                             f"does not have")
    pairs = []
    for name, p in live.items():
        key = _PARAM + name
        if name not in params:
            raise KeyError(f"checkpoint has no {key!r}")
        a = params[name]
        if a.dtype != p.dtype:
            raise TypeError(f"checkpoint[{key!r}] has dtype {a.dtype} but the parameter "
                            f"has {p.dtype}")
        if a.shape != p.shape:
            raise ValueError(f"checkpoint[{key!r}] has shape {a.shape} but the parameter "
                             f"has shape {p.shape}")
        if not p.flags.writeable:
            raise ValueError(f"parameters[{name!r}] is read-only")
        pairs.append((p, a))
    return pairs


def load_checkpoint(optimizer: Any, path: str | os.PathLike, parameters: bool = True) -> None:
    """Restore a :func:`save_checkpoint` file into ``optimizer``.

    ``opt.load(path)`` is the same call.  Everything is checked first: the
    file itself (an ``OSError`` naming the path when it cannot be read:
    ``FileNotFoundError``, ``IsADirectoryError``, ...), its format and its
    checksum over metadata and tensors (``ValueError`` for a truncated or
    corrupt file), then every key, dtype, shape and hyperparameter, as
    :meth:`~fusedoptim.Optimizer.load_state_dict` does, and the parameters
    when the file holds them; on any mismatch it raises (``KeyError``,
    ``TypeError`` or ``ValueError``) naming the key, with nothing changed.
    Then the state, ``t``, ``skipped_steps`` and a float ``lr`` are
    restored, as by ``load_state_dict``; a run resumed this way continues
    bit for bit as the uninterrupted one.

    Parameters
    ----------
    optimizer : fusedoptim.Optimizer
        The optimizer to restore, built over parameters of the same names,
        shapes and dtypes and with the same hyperparameters.
    path : str or os.PathLike
        A file written by :func:`save_checkpoint`.
    parameters : bool
        Copy the saved parameters into the optimizer's parameter arrays (in
        place) when the file holds them.
    """
    if getattr(optimizer, "_collective_checkpoints", False):
        optimizer.load(path, parameters)  # a distributed wrapper: its collective load
        return
    sd, params = read_checkpoint(path)
    pairs = _check_parameters(optimizer, params) if params and parameters else []
    optimizer.load_state_dict(sd)  # checks everything before writing the state
    for live, saved in pairs:
        np.copyto(live, saved)
