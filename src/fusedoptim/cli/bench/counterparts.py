"""PyTorch's counterpart of each optimizer class, for the ``torch`` rows,
derived from the registry (each class's ``torch`` declaration,
:class:`fusedoptim.families.Torch`).

``COUNTERPARTS[class name](optim, tensors, hp)`` builds the ``torch.optim``
optimizer over ``tensors`` (their ``.grad`` set) with the bench
hyperparameters ``hp`` of the fusedoptim class (``workloads.hyperparameters``)
and PyTorch's fastest CPU path: ``fused=True`` where PyTorch has a fused CPU
kernel (SGD, Adam, AdamW, Adagrad), ``foreach=True`` otherwise (RMSprop,
Adamax, NAdam, RAdam, Adadelta).
``optim`` is the ``torch.optim`` module (torch is imported only when a torch
row runs).  A class missing here gets no torch row.

The steps move the same arrays as fusedoptim's and compute the same update
(up to rounding) but where :func:`difference` names how they differ (a
detail that costs nothing measurable).
"""

from typing import Any, Callable

from ...families import OPTIMIZERS, Torch

__all__ = ["COUNTERPARTS", "difference", "torch_params"]


def _builder(spec: Torch) -> Callable[[Any, list, dict], Any]:
    # No fused CPU kernel in PyTorch 2.13 for the others; foreach is its fastest.
    fastest = {"fused": True} if spec.fused else {"foreach": True}

    def build(optim: Any, ps: list, hp: dict) -> Any:
        return getattr(optim, spec.name)(ps, **spec.kwargs(hp), **fastest)
    build.__name__ = f"_{spec.name.lower()}"
    return build


#: fusedoptim class name -> builder of the torch optimizer.
COUNTERPARTS = {name: _builder(cls.torch) for name, cls in OPTIMIZERS.items()
                if cls.torch is not None}


def difference(name: str, hp: dict) -> str:
    """How PyTorch's counterpart of class ``name`` steps differently from it
    under hyperparameters ``hp``; empty when the steps are the same."""
    spec = OPTIMIZERS[name].torch
    if spec is None:
        raise KeyError(f"{name} has no torch counterpart")
    return spec.difference(hp)


def torch_params(params: dict, grads: dict, threads: int) -> list:
    """Torch tensors sharing the memory of ``params`` (a dict of NumPy
    arrays), each with ``.grad`` the matching array of ``grads``, after
    ``torch.set_num_threads(threads)``: what a torch-based peer steps."""
    import torch

    torch.set_num_threads(threads)
    ps = []
    for name, a in params.items():
        p = torch.from_numpy(a)
        p.grad = torch.from_numpy(grads[name])
        ps.append(p)
    return ps
