"""Peers of the Adam and AdamW rows beyond ``torch.optim``, measured when
named (``bench --backend ...,deepspeed,bitsandbytes,torchao``).

- ``deepspeed``: DeepSpeed's ``DeepSpeedCPUAdam``, the CPU Adam and AdamW of
  its ZeRO-Offload (float32 state): a C++ step with AVX2 or AVX-512
  intrinsics, parallel with OpenMP inside each tensor, one call per tensor.
  It is built at its first use by PyTorch's C++ extension loader (a C++
  compiler and ninja: about a minute on two cores the first time, then
  loaded from ``~/.cache/torch_extensions``).  It computes Adam as
  ``torch.optim.Adam`` does up to rounding (fused multiply-adds, another
  order); ``adamw_mode`` gives AdamW's decoupled decay.
- ``bitsandbytes``, ``torchao``: their 8-bit blockwise Adam
  (``bitsandbytes.optim.Adam8bit`` / ``AdamW8bit``, ``torchao.optim.AdamW8bit``;
  blocks of 256, tensors under 4096 elements kept in 32 bits), the peers of
  the ``--state int8`` rows.  On the CPU both dequantize whole tensors, run
  tensor operations and quantize again; torchao compiles its step with
  ``torch.compile`` at the first call (tens of seconds).

All come with the ``compare`` extra, for the benchmark and the parity tests
only (never a dependency of fusedoptim).  Their OpenMP is PyTorch's, so
``torch.set_num_threads`` sets their threads, as for the torch rows.  None
has AMSGrad or ``maximize``; float32 parameters only.
``tests/test_peers.py`` checks that DeepSpeed computes our update.
"""

import contextlib
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from .counterparts import torch_params

__all__ = ["PEERS", "Peer", "unmeasurable", "load", "make_step", "build_lock"]


@dataclass(frozen=True)
class Peer:
    """A peer implementation: its ``--backend`` name, how messages name it,
    the state it keeps for float32 parameters (the bench rows it steps), its
    loader (returns what ``build`` needs; ``ImportError`` when not
    installed; it takes ``say``, which prints a line while the loader's output
    is captured) and ``build(loaded, case, tensors)``, the optimizer."""
    name: str
    what: str
    state: str
    loader: Callable[[Callable[[str], None]], Any]
    build: Callable[[Any, Any, list], Any]
    #: whether it steps Adam's L2 weight decay (else Adam rows need 0)
    l2: bool = False


@contextlib.contextmanager
def _captured_output():
    """Send the process's stdout and stderr (file descriptors 1 and 2: the
    compiler and ninja write there, and DeepSpeed and torchao print from C++
    and at import) to a temporary file; yields ``(text, say)``: ``text()``
    returns what was captured, ``say(line)`` writes a line to the real
    stderr meanwhile."""
    with tempfile.TemporaryFile(mode="w+b") as f:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)

            def text():
                f.seek(0)
                return f.read().decode(errors="replace")

            def say(line):
                # On a terminal, over the progress display's live line.
                erase = "\r\x1b[K" if os.isatty(saved[1]) else ""
                os.write(saved[1], f"{erase}{line}\n".encode())
            yield text, say
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def build_lock(name: str) -> "str | None":
    """The lock file of torch's C++ extension build ``name`` if it exists.

    Torch's loader creates it for the build and deletes it after; a build
    that was killed leaves it behind, and the next load waits for it to go
    away, for ever.  The directory is torch's own (``TORCH_EXTENSIONS_DIR``
    or ``~/.cache/torch_extensions/<python>_<accelerator>``, then ``name``);
    asking torch creates it, as the build would next.  ``None`` also when
    this torch has no such function (the check is only advice)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory
        lock = os.path.join(_get_build_directory(name, verbose=False), "lock")
    except (ImportError, AttributeError, TypeError, OSError):
        return None
    return lock if os.path.exists(lock) else None


def _load_deepspeed(say):
    # Without it DeepSpeed probes for GPUs and other accelerators at import.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    from deepspeed.ops.op_builder import CPUAdamBuilder
    from deepspeed.utils import logger

    # Below WARNING, each optimizer built prints a line to stdout.
    logger.setLevel(logging.WARNING)
    builder = CPUAdamBuilder()
    lock = build_lock(builder.name)
    if lock is not None:  # the build waits on it without a word (its output is captured)
        say(f"note: {PEERS['deepspeed'].what}: waiting for the lock file {lock}; if no other "
            f"build is running (an earlier one was killed), delete it")
    builder.load()
    return DeepSpeedCPUAdam


def _adam_kwargs(case) -> dict:
    """The Adam hyperparameters every peer's constructor takes, from the
    case's (the bench row's) hyperparameters."""
    hp = case.hyperparameters
    return {"lr": hp["lr"], "betas": tuple(hp["betas"]), "eps": hp["eps"],
            "weight_decay": hp["weight_decay"]}


def _build_deepspeed(cls, case, ps):
    return cls(ps, bias_correction=True, amsgrad=False,
               adamw_mode=case.cls.__name__ == "AdamW", **_adam_kwargs(case))


def _load_bitsandbytes(say):
    import bitsandbytes

    return bitsandbytes.optim


def _build_bitsandbytes(optim, case, ps):
    cls = optim.AdamW8bit if case.cls.__name__ == "AdamW" else optim.Adam8bit
    return cls(ps, **_adam_kwargs(case))


def _load_torchao(say):
    from torchao.optim import AdamW8bit

    return AdamW8bit


def _build_torchao(cls, case, ps):
    return cls(ps, **_adam_kwargs(case))


#: --backend name -> peer, in column order.
PEERS = {p.name: p for p in (
    Peer("deepspeed", "DeepSpeed's CPU Adam", "float32", _load_deepspeed, _build_deepspeed,
         l2=True),
    Peer("bitsandbytes", "bitsandbytes' 8-bit Adam", "int8", _load_bitsandbytes,
         _build_bitsandbytes),
    Peer("torchao", "torchao's AdamW8bit", "int8", _load_torchao, _build_torchao),
)}

_loaded: dict = {}


def unmeasurable(name: str, case) -> "str | None":
    """Why peer ``name`` has no step for ``case``, or ``None``."""
    peer = PEERS[name]
    cls = case.cls.__name__
    if cls not in ("Adam", "AdamW"):
        return f"{peer.what} is Adam or AdamW, not {cls}"
    if case.dtype != "float32":
        return f"{peer.what} has no {case.dtype} step"
    if case.state != peer.state:
        return (f"{peer.what} keeps {peer.state} state for float32 parameters, not "
                f"{case.state} (--state {peer.state})")
    hp = case.hyperparameters
    for flag in ("amsgrad", "maximize"):
        if hp.get(flag):
            return f"{peer.what} has no {flag}"
    if cls == "Adam" and hp["weight_decay"] and not peer.l2:
        return f"{peer.what} has no L2 weight decay (Adam's weight_decay)"
    return None


def load(name: str) -> Any:
    """Import peer ``name`` (and build DeepSpeed's kernel), once, with its
    console messages silenced.  Raises ``ImportError`` when it is not
    installed, ``RuntimeError`` with the end of its output when it fails
    otherwise (a kernel that does not build)."""
    if name not in _loaded:
        # (their imports warn about their own use of deprecated torch APIs)
        with _captured_output() as (output, say), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                _loaded[name] = PEERS[name].loader(say)
            except ImportError:
                raise
            except Exception as exc:
                tail = output().strip().splitlines()[-5:]
                raise RuntimeError(f"{PEERS[name].what} failed to load ({type(exc).__name__}: "
                                   f"{exc}){': ' if tail else ''}{' / '.join(tail)}") from None
    return _loaded[name]


def make_step(name: str, case, params: dict, grads: dict, threads: int) -> Callable[[], Any]:
    """The ``step`` of peer ``name``'s optimizer over torch tensors sharing
    the memory of ``params`` and ``grads`` (dicts of float32 NumPy arrays),
    with the case's hyperparameters, on ``threads`` threads."""
    loaded = load(name)
    return PEERS[name].build(loaded, case, torch_params(params, grads, threads)).step
