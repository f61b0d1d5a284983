"""fusedoptim: fused, in-place optimizer steps over dicts of NumPy arrays.

Gradient descent, Momentum, RMSProp and Adam as one compiled multi-tensor
call per step (Cython, with a Numba and a plain-NumPy backend giving
bit-for-bit the same results), behind the course-notes API::

    from fusedoptim import initialize_adam, update_parameters_with_adam
    v, s = initialize_adam(parameters)
    parameters, v, s, _, _ = update_parameters_with_adam(parameters, grads, v, s, t=1)

and, for training loops, optimizer objects with PyTorch's semantics, schedules,
clipping and checkpoints::

    opt = fusedoptim.AdamW(parameters, lr=fusedoptim.CosineDecay(1e-3, 1000),
                           max_grad_norm=1.0)
    opt.step(grads)
"""

from typing import TYPE_CHECKING

from .backend import (
    BACKENDS,
    BackendUnavailable,
    FusedOptimWarning,
    available_backends,
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    use_backend,
)
from .clipping import clip_grad_norm_, clip_grad_value_, global_norm
from .data import random_mini_batches
from .functional import (
    BiasCorrected,
    initialize_adam,
    initialize_rmsprop,
    initialize_velocity,
    update_parameters_with_adam,
    update_parameters_with_gd,
    update_parameters_with_momentum,
    update_parameters_with_rmsprop,
)
from .families import OPTIMIZERS
from ._groups import exclude_from_weight_decay
from .optimizer import Optimizer
from . import stateless as stateless  # every optimizer as a function: fusedoptim.stateless.adamw
from ._safetensors import load_checkpoint, save_checkpoint
from .lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    MultiplicativeLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from .schedules import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    PiecewiseConstantDecay,
    PolynomialDecay,
    schedule_lr_decay,
    update_lr,
)

# Every registered optimizer class (fusedoptim.families) is a top-level name.
globals().update(OPTIMIZERS)

if TYPE_CHECKING:
    # The same names, spelled out for type checkers (which cannot follow the
    # registry); tests/test_typing.py checks this list against OPTIMIZERS.
    # ``X as X`` marks each as a re-export: type checkers cannot read the
    # ``*OPTIMIZERS`` of ``__all__``, and under ``mypy --strict``
    # (no_implicit_reexport) or pyright a plain import is private, so
    # ``fusedoptim.Adam`` would be an error.
    from .families.adadelta import Adadelta as Adadelta
    from .families.adagrad import Adagrad as Adagrad
    from .families.adam import Adam as Adam, AdamW as AdamW
    from .families.adamax import Adamax as Adamax
    from .families.lamb import LAMB as LAMB
    from .families.lion import Lion as Lion
    from .families.nadam import NAdam as NAdam
    from .families.radam import RAdam as RAdam
    from .families.rmsprop import RMSProp as RMSProp
    from .families.sgd import GD as GD, SGD as SGD, Momentum as Momentum

__version__: str = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "BiasCorrected",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "ExponentialLR",
    "InverseTimeDecay",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OPTIMIZERS",
    "OneCycleLR",
    "Optimizer",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "FusedOptimWarning",
    "available_backends",
    "clip_grad_norm_",
    "clip_grad_value_",
    "exclude_from_weight_decay",
    "get_backend",
    "get_num_threads",
    "global_norm",
    "initialize_adam",
    "initialize_rmsprop",
    "initialize_velocity",
    "load_checkpoint",
    "random_mini_batches",
    "save_checkpoint",
    "schedule_lr_decay",
    "set_backend",
    "set_num_threads",
    "stateless",
    "update_lr",
    "update_parameters_with_adam",
    "update_parameters_with_gd",
    "update_parameters_with_momentum",
    "update_parameters_with_rmsprop",
    "use_backend",
    *OPTIMIZERS,
]

# threadpoolctl (optional) can then limit fusedoptim's threads.
from ._threads import register_threadpoolctl as _register_threadpoolctl  # noqa: E402

_register_threadpoolctl()
del _register_threadpoolctl
