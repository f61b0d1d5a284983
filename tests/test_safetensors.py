"""Safetensors checkpoints: opt.save / opt.load resume bit for bit on every
backend; a tampered file raises naming the key and changes nothing."""

import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import _safetensors as S
from helpers import assert_bitwise

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

#: Hyperparameters that switch every state slot on.
KWARGS = {"SGD": dict(momentum=0.9, nesterov=True, weight_decay=0.01),
          "RMSProp": dict(centered=True, momentum=0.5, eps_inside_sqrt=False),
          "Adam": dict(amsgrad=True), "Adagrad": dict(lr_decay=0.01)}


def _model(dtype, rng):
    return {"W1": rng.standard_normal((7, 5)).astype(dtype),
            "b1": np.zeros((7, 1), dtype),
            "WF": np.asfortranarray(rng.standard_normal((4, 6))).astype(dtype, order="F"),
            "s": np.array(0.5, dtype), "e": np.zeros((0, 3), dtype)}


def _grads(params, rng):
    return {"d" + k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}


def _make(cls_name, params, **kw):
    kwargs = dict(KWARGS.get(cls_name, {}), **kw)
    kwargs.setdefault("lr", 0.01)
    return fo.OPTIMIZERS[cls_name](params, max_grad_norm=5.0, **kwargs)


@pytest.mark.parametrize("cls_name", sorted(fo.OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_is_bit_identical(backend, cls_name, dtype, tmp_path):
    rng = np.random.default_rng(0)
    grads = [_grads(_model(dtype, rng), rng) for _ in range(12)]
    schedule = fo.CosineDecay(0.02, 12, 0.1)
    straight = _model(dtype, np.random.default_rng(1))
    a = _make(cls_name, straight, lr=schedule)
    for g in grads:
        a.step(g)

    first = _model(dtype, np.random.default_rng(1))
    b = _make(cls_name, first, lr=schedule)
    for g in grads[:5]:
        b.step(g)
    b.save(tmp_path / "ck.safetensors", parameters=True)
    fresh = {k: np.zeros_like(p) for k, p in first.items()}   # same layouts
    c = _make(cls_name, fresh, lr=schedule)
    c.load(tmp_path / "ck.safetensors")
    assert c.t == 5 and fresh["WF"].flags.f_contiguous
    for g in grads[5:]:
        c.step(g)
    for k in straight:
        assert_bitwise(fresh[k], straight[k])
    for slot, d in a.state.items():
        for k in d:
            assert_bitwise(c.state[slot][k], d[k])
    assert c.t == a.t and c.skipped_steps == a.skipped_steps


def test_float_lr_and_counts_restored(tmp_path):
    p = {"w": np.ones(3)}
    opt = fo.Adam(p, lr=0.125, skip_nonfinite=True)
    opt.step({"w": np.ones(3)})
    opt.step({"w": np.array([np.nan, 0, 0])})
    fo.save_checkpoint(opt, str(tmp_path / "a.st"))
    other = fo.Adam({"w": np.ones(3)}, lr=0.5, skip_nonfinite=True)
    fo.load_checkpoint(other, tmp_path / "a.st")
    assert (other.lr, other.t, other.skipped_steps) == (0.125, 1, 1)
    assert other.parameters["w"].tolist() == [1.0, 1.0, 1.0]  # no parameters in the file
    with safe_open(tmp_path / "a.st", framework="np") as f:
        meta = f.metadata()
        assert not any(k.startswith("parameters/") for k in f.keys())
    assert json.loads(meta["lr"]) == 0.125 and json.loads(meta["optimizer"]) == "Adam"


def test_load_parameters_false_keeps_them(tmp_path):
    p = {"w": np.full(2, 3.0)}
    opt = fo.SGD(p, lr=0.1)
    opt.step({"w": np.ones(2)})
    opt.save(tmp_path / "a.st", parameters=True)
    q = {"w": np.zeros(2)}
    fo.SGD(q, lr=0.1).load(tmp_path / "a.st", parameters=False)
    assert q["w"].tolist() == [0.0, 0.0]
    fo.SGD(q, lr=0.1).load(tmp_path / "a.st")
    assert q["w"].tolist() == [2.9, 2.9]


# --- tampered files -------------------------------------------------------------

def _rewrite(path, tensors=None, metadata=None, crc=True):
    with safe_open(path, framework="np") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        m = dict(f.metadata())
    t = tensors(t) if tensors else t
    m = metadata(m) if metadata else m
    if crc:
        m["__crc32__"] = S._crc(t, m)
    save_file(t, path, metadata=m)


def _set(d, key, value):
    d = dict(d)
    d[key] = value
    return d


def _drop(d, key):
    return {k: v for k, v in d.items() if k != key}


TAMPER = [
    ("wrong shape", dict(tensors=lambda t: _set(t, "state/exp_avg/W1", np.zeros((5, 7)))),
     ValueError, r"state_dict\['state/exp_avg/W1'\] has shape \(5, 7\)"),
    ("wrong dtype", dict(tensors=lambda t: _set(t, "state/exp_avg_sq/b1",
                                                t["state/exp_avg_sq/b1"].astype(np.float32))),
     TypeError, r"state_dict\['state/exp_avg_sq/b1'\] has dtype float32"),
    ("missing state", dict(tensors=lambda t: _drop(t, "state/exp_avg/s")),
     KeyError, "state_dict has no 'state/exp_avg/s'"),
    ("extra tensor", dict(tensors=lambda t: _set(t, "state/foo/W1", np.zeros(2))),
     ValueError, "unexpected key 'state/foo/W1'"),
    ("param shape", dict(tensors=lambda t: _set(t, "parameters/W1", np.zeros(3))),
     ValueError, r"checkpoint\['parameters/W1'\] has shape \(3,\)"),
    ("param dtype", dict(tensors=lambda t: _set(t, "parameters/WF",
                                                t["parameters/WF"].astype(np.float32))),
     TypeError, r"checkpoint\['parameters/WF'\] has dtype float32"),
    ("missing param", dict(tensors=lambda t: _drop(t, "parameters/b1")),
     KeyError, "checkpoint has no 'parameters/b1'"),
    ("unknown param", dict(tensors=lambda t: _set(t, "parameters/zz", np.zeros(2))),
     ValueError, "parameter 'zz', which this optimizer does not have"),
    ("missing t", dict(metadata=lambda m: _drop(m, "t")), KeyError, "state_dict has no 't'"),
    ("negative t", dict(metadata=lambda m: _set(m, "t", "-3")), ValueError,
     r"state_dict\['t'\] must be >= 0"),
    ("float t", dict(metadata=lambda m: _set(m, "t", "3.5")), TypeError,
     r"state_dict\['t'\] must be an integer"),
    ("bad json", dict(metadata=lambda m: _set(m, "skipped_steps", "{x")), ValueError,
     "metadata 'skipped_steps' is not valid JSON"),
    ("bad lr", dict(metadata=lambda m: _set(m, "lr", "-1.0")), ValueError, "lr"),
    ("other optimizer", dict(metadata=lambda m: _set(m, "optimizer", '"SGD"')), ValueError,
     "state_dict is from 'SGD', not 'Adam'"),
    ("other hyperparameter", dict(metadata=lambda m: _set(m, "hp/beta2", "0.99")),
     ValueError, "beta2 is 0.99 in state_dict but 0.999 here"),
    ("not ours", dict(metadata=lambda m: _drop(m, "__fusedoptim__")), ValueError,
     "is not a fusedoptim checkpoint"),
    ("other format", dict(metadata=lambda m: _set(m, "__fusedoptim__", "3")), ValueError,
     "is a fusedoptim checkpoint of format '3'; this version of fusedoptim reads "
     "format '2' only"),
    ("bad checksum", dict(tensors=lambda t: _set(t, "state/exp_avg/W1",
                                                 t["state/exp_avg/W1"] + 1.0), crc=False),
     ValueError, "is corrupt"),
    ("metadata changed", dict(metadata=lambda m: _set(m, "t", "7"), crc=False),
     ValueError, "is corrupt"),
]


def _victim(tmp_path):
    rng = np.random.default_rng(3)
    params = _model(np.float64, rng)
    opt = fo.Adam(params, lr=0.01)
    for _ in range(3):
        opt.step(_grads(params, rng))
    path = tmp_path / "ck.safetensors"
    opt.save(path, parameters=True)
    # The optimizer to load into: different values everywhere, to see that
    # nothing is written.
    target = fo.Adam(_model(np.float64, np.random.default_rng(9)), lr=0.02)
    target.step(_grads(target.parameters, rng))
    return path, target


def _snapshot(opt):
    return ({k: p.copy() for k, p in opt.parameters.items()},
            {s: {k: a.copy() for k, a in d.items()} for s, d in opt.state.items()},
            opt.t, opt.skipped_steps, opt.lr)


def _assert_same(before, opt):
    params, state, t, skipped, lr = before
    for k, p in params.items():
        assert_bitwise(opt.parameters[k], p)
    for s, d in state.items():
        for k, a in d.items():
            assert_bitwise(opt.state[s][k], a)
    assert (opt.t, opt.skipped_steps, opt.lr) == (t, skipped, lr)


@pytest.mark.parametrize("what, how, exc, match", TAMPER, ids=[t[0] for t in TAMPER])
def test_tampered_file_changes_nothing(tmp_path, what, how, exc, match):
    path, target = _victim(tmp_path)
    _rewrite(path, **how)
    before = _snapshot(target)
    with pytest.raises(exc, match=match):
        target.load(path)
    _assert_same(before, target)


@pytest.mark.parametrize("keep", [5, 100, -1, -9])
def test_truncated_or_damaged_file(tmp_path, keep):
    path, target = _victim(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep > 0 else data[:keep] + b"\0" * (-keep - 1))
    before = _snapshot(target)
    with pytest.raises(ValueError, match="truncated or corrupt|is corrupt"):
        target.load(path)
    _assert_same(before, target)


def _header(path):
    """``(header length, header dict, the bytes after it)`` of a safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def _with_header(path, header, data):
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)


def _changed(text):
    """``text`` with one bit of one character flipped: of its first digit,
    to another digit (a plausible number: "3" -> "7"), else of its last
    character."""
    for i, c in enumerate(text):
        if c.isdigit():
            return text[:i] + chr(ord(c) ^ (4 if c < "6" else 1)) + text[i + 1:]
    return text[:-1] + chr(ord(text[-1]) ^ 1)


def _metadata_edits(meta):
    """Every kind of edit of the metadata: each value changed by one bit,
    each key dropped and renamed, a key added."""
    for key, value in meta.items():
        if key == "__crc32__":
            continue
        yield f"{key} value", _set(meta, key, _changed(value))
        yield f"{key} dropped", _drop(meta, key)
        yield f"{key} renamed", {(_changed(k) if k == key else k): v for k, v in meta.items()}
    yield "key added", _set(meta, "hp/extra", "1.0")


def test_any_metadata_change_is_refused(tmp_path):
    """The checksum covers the metadata (t, lr, skipped_steps, the
    hyperparameters, the format), not only the tensors: a changed header
    is refused as corrupt, naming the file, before anything changes."""
    path, target = _victim(tmp_path)
    _, header, data = _header(path)
    assert {"t", "lr", "skipped_steps", "optimizer", "hp/beta1", "hp/eps",
            "__fusedoptim__"} <= header["__metadata__"].keys()
    before = _snapshot(target)
    edits = list(_metadata_edits(header["__metadata__"]))
    assert len(edits) > 30
    for what, meta in edits:
        _with_header(path, dict(header, __metadata__=meta), data)
        with pytest.raises(ValueError, match=re.escape(str(path))) as info:
            target.load(path)
        msg = str(info.value)
        if what.startswith("__fusedoptim__"):
            assert "fusedoptim checkpoint" in msg, what  # its format, named
        else:
            assert msg == (f"{path} is corrupt: its metadata and tensors do not match "
                           f"their checksum"), what
        _assert_same(before, target)
    # The unchanged header still loads.
    _with_header(path, header, data)
    target.load(path)
    assert target.t == 3


def test_a_bit_flip_anywhere_in_the_header_is_refused(tmp_path):
    """One flipped bit in any byte of the header (its length, tensor
    offsets, names, dtypes, metadata) is refused, with nothing changed:
    every bit of the bytes of t's value, one bit (in turn) of the others."""
    path, target = _victim(tmp_path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    t_at = raw.index(b'"t":"3"') + 5
    before = _snapshot(target)
    flipped = tmp_path / "flipped.safetensors"
    for i in range(8 + n):
        for bit in range(8) if i == t_at else [i % 8]:
            flipped.write_bytes(raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1:])
            try:
                target.load(flipped)
            except ValueError:
                continue
            raise AssertionError(f"byte {i} bit {bit} ({raw[i:i + 1]!r}) loaded")
    _assert_same(before, target)


def test_format_1_file_is_refused_naming_its_format(tmp_path):
    """Format 1 (checksum over the tensors only) is not read."""
    path, target = _victim(tmp_path)
    with safe_open(path, framework="np") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        m = dict(f.metadata())
    crc = 0  # format 1's checksum, as it was computed
    for key in sorted(t):
        a = t[key]
        crc = zlib.crc32(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode(), crc)
        if a.size:
            crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    save_file(t, path, metadata=dict(m, __fusedoptim__="1", __crc32__=f"{crc:08x}"))
    before = _snapshot(target)
    with pytest.raises(ValueError, match=re.escape(
            f"{path} is a fusedoptim checkpoint of format '1'; this version of fusedoptim "
            f"reads format '2' only")):
        target.load(path)
    _assert_same(before, target)


def test_unreadable_paths_are_named(tmp_path, monkeypatch):
    path, target = _victim(tmp_path)
    before = _snapshot(target)
    with pytest.raises(IsADirectoryError, match="Is a directory") as info:
        target.load(tmp_path)
    assert info.value.filename == str(tmp_path)
    missing = tmp_path / "nope" / "x.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        target.load(missing)
    assert info.value.filename == str(missing)
    if hasattr(os, "mkfifo"):  # opening a FIFO would wait for a writer
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(ValueError, match=re.escape(
                f"{tmp_path / 'fifo'} is not a regular file")):
            target.load(tmp_path / "fifo")
    # An OSError of safetensors' own (no errno, no path) gets the path.
    real = S._safetensors

    def failing():
        save_file, _open, error = real()

        def safe_open(p, framework):
            raise PermissionError("Permission denied (os error 13)")
        return save_file, safe_open, error
    monkeypatch.setattr(S, "_safetensors", failing)
    with pytest.raises(PermissionError, match=re.escape(
            f"cannot read {path}: Permission denied")):
        target.load(path)
    _assert_same(before, target)


def test_missing_file_and_saving_over(tmp_path):
    path, target = _victim(tmp_path)
    with pytest.raises(FileNotFoundError):
        target.load(tmp_path / "nope.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        target.load(tmp_path / "text.safetensors")
    (tmp_path / "text.safetensors").unlink()
    target.save(path)  # replaces the file, leaves no temporary behind
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]


def test_unwritable_paths_are_named(tmp_path, monkeypatch):
    path, target = _victim(tmp_path)
    folder = tmp_path / "no such folder"
    with pytest.raises(FileNotFoundError, match="No such directory") as info:
        target.save(folder / "x.safetensors")
    assert info.value.filename == str(folder)
    # safetensors' own write error (no errno) is an OSError naming the file.
    real = S._safetensors

    def failing():
        save_file, safe_open, error = real()

        def broken_save(tensors, filename, metadata=None):
            raise error("Error while serializing: I/O error: disk full")
        return broken_save, safe_open, error
    monkeypatch.setattr(S, "_safetensors", failing)
    with pytest.raises(OSError, match=re.escape(f"cannot write {path}: Error while")):
        target.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]


def test_import_without_safetensors(monkeypatch, tmp_path):
    out = subprocess.run([sys.executable, "-c",
                          "import sys, fusedoptim; print('safetensors' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "safetensors", None)
    opt = fo.GD({"w": np.zeros(2)}, lr=0.1)
    with pytest.raises(ImportError, match=r"fusedoptim\[safetensors\]"):
        opt.save(tmp_path / "x.st")
    with pytest.raises(ImportError, match=r"fusedoptim\[safetensors\]"):
        opt.load(tmp_path / "x.st")


class _Stub:
    """Whatever a state_dict may come to hold (per-group entries, lists)."""

    parameters = {"w": np.arange(6.0).reshape(2, 3)}

    def state_dict(self):
        return {"optimizer": "Stub", "t": 7, "lr": 0.1, "hp/flag": True, "hp/none": None,
                "hp/inf": float("inf"), "group/0/lr": 1e-3, "group/0/names": ["a", "b"],
                "names": np.array(["W1", "b1"]), "ints": np.arange(3, dtype=np.int64),
                "state/x/w": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                "state/x/s": np.full((), 2.5, np.float32)}


def test_carries_whatever_state_dict_carries(tmp_path):
    stub = _Stub()
    fo.save_checkpoint(stub, tmp_path / "s.st", parameters=True)
    sd, params = S.read_checkpoint(tmp_path / "s.st")
    want = stub.state_dict()
    assert sd.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, np.ndarray):
            assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, k
            np.testing.assert_array_equal(sd[k], v)
        else:
            assert type(sd[k]) is type(v) and sd[k] == v, k
    np.testing.assert_array_equal(params["w"], stub.parameters["w"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_group_resume_is_bit_identical(backend, dtype, tmp_path):
    """AdamW over exclude_from_weight_decay's two groups plus a third added
    mid-run (its own t0), per-group rates changed between steps: saved to
    safetensors and resumed, the run is bitwise the uninterrupted one."""
    rng = np.random.default_rng(0)
    grads = [_grads(_model(dtype, rng), rng) for _ in range(10)]

    def run(params, stop=None, resume=None):
        extra = {"s": params.pop("s")}
        opt = fo.AdamW(fo.exclude_from_weight_decay(params, var_names=[r"^b\d+$", "^e$"]),
                       lr=0.02, weight_decay=0.1,
                       max_grad_norm=5.0)
        opt.add_param_group({"params": extra, "lr": 0.005, "betas": (0.8, 0.99)})
        if resume is not None:
            opt.load(resume)
        for i in range(opt.t, len(grads) if stop is None else stop):
            if i == 3:
                opt.param_groups[0]["lr"] = 0.01
                opt.param_groups[1]["weight_decay"] = 0.0
            opt.step(grads[i])
        return opt

    straight = _model(dtype, np.random.default_rng(1))
    a = run(dict(straight))
    first = _model(dtype, np.random.default_rng(1))
    b = run(dict(first), stop=5)
    assert len(b.param_groups) == 3
    b.save(tmp_path / "groups.safetensors", parameters=True)
    fresh = {k: np.zeros_like(p) for k, p in first.items()}
    c = run(dict(fresh), resume=tmp_path / "groups.safetensors")
    assert c.t == a.t == 10
    assert [g["lr"] for g in c.param_groups] == [g["lr"] for g in a.param_groups]
    for k in straight:
        assert_bitwise(fresh[k], straight[k])
    for slot, d in a.state.items():
        for k in d:
            assert_bitwise(c.state[slot][k], d[k])
