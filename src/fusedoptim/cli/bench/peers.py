"""DeepSpeed's CPU Adam as a bench implementation (``--backend deepspeed``).

DeepSpeed (``pip install deepspeed``; in the ``compare`` extra, for the
benchmark and the parity tests only, never a dependency of fusedoptim)
ships ``deepspeed.ops.adam.DeepSpeedCPUAdam``, the CPU Adam and AdamW of
its ZeRO-Offload: a C++ step with AVX2 or AVX-512 intrinsics, parallel with
OpenMP inside each tensor, one call per tensor.  It is built at its first
use by PyTorch's C++ extension loader (a C++ compiler and ninja: about a
minute on two cores the first time, then loaded from
``~/.cache/torch_extensions``).  The extension links PyTorch's OpenMP
runtime, so ``torch.set_num_threads`` sets its threads, as for the torch
rows.

It computes Adam as ``torch.optim.Adam`` does (the bias-corrected square
root plus eps; ``adamw_mode`` for AdamW's decoupled decay) up to rounding:
fused multiply-adds and another order of operations
(``tests/test_peers.py`` checks it against fusedoptim's classes).  It has
no AMSGrad and no ``maximize``; its float32 rows are the ones measured.
"""

import contextlib
import logging
import os
import tempfile

from .counterparts import torch_params

__all__ = ["ADAMW_MODE", "unmeasurable", "load", "make_step"]

#: fusedoptim class name -> DeepSpeedCPUAdam's ``adamw_mode`` (decoupled
#: weight decay) for the classes it steps.
ADAMW_MODE = {"Adam": False, "AdamW": True}


def unmeasurable(case) -> "str | None":
    """Why DeepSpeed's CPU Adam has no step for ``case``, or ``None``."""
    name = case.cls.__name__
    if name not in ADAMW_MODE:
        return f"DeepSpeed's CPU optimizer is Adam or AdamW, not {name}"
    if case.state != "float32":
        return f"DeepSpeed's CPU Adam has no {case.state} state for float32 parameters"
    if case.dtype != "float32":
        return f"DeepSpeed's CPU Adam has no {case.dtype} step"
    hp = case.hyperparameters
    for flag in ("amsgrad", "maximize"):
        if hp.get(flag):
            return f"DeepSpeed's CPU Adam has no {flag}"
    return None


@contextlib.contextmanager
def _captured_output():
    """Send the process's stdout and stderr (file descriptors 1 and 2: the
    compiler and ninja write there, and DeepSpeed prints from C++) to a
    temporary file; yields a function that returns its text."""
    with tempfile.TemporaryFile(mode="w+b") as f:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)

            def text():
                f.seek(0)
                return f.read().decode(errors="replace")
            yield text
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def load():
    """``DeepSpeedCPUAdam``, imported and its C++ kernel built and loaded,
    with DeepSpeed's console messages silenced.  Raises ``ImportError``
    when DeepSpeed is not installed, ``RuntimeError`` with the end of the
    build's output when the kernel does not build."""
    # Without it DeepSpeed probes for GPUs and other accelerators at import.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with _captured_output() as output:
        try:
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            from deepspeed.ops.op_builder import CPUAdamBuilder
            from deepspeed.utils import logger

            # Below WARNING, each optimizer built prints a line to stdout.
            logger.setLevel(logging.WARNING)
            CPUAdamBuilder().load()
        except ImportError:
            raise
        except Exception as exc:
            tail = output().strip().splitlines()[-5:]
            raise RuntimeError(f"DeepSpeed's CPU Adam did not build ({type(exc).__name__}: "
                               f"{exc}){': ' if tail else ''}{' / '.join(tail)}") from None
    return DeepSpeedCPUAdam


def make_step(case, params, grads, threads):
    """``DeepSpeedCPUAdam(...).step`` over torch tensors sharing the memory
    of ``params`` and ``grads`` (dicts of float32 NumPy arrays), with the
    case's hyperparameters, on ``threads`` threads."""
    cls = load()
    ps = torch_params(params, grads, threads)
    hp = case.hyperparameters
    opt = cls(ps, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
              weight_decay=hp["weight_decay"], bias_correction=True, amsgrad=False,
              adamw_mode=ADAMW_MODE[case.cls.__name__])
    return opt.step

