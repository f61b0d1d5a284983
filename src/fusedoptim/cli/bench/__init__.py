"""``fusedoptim bench``: the benchmark workloads and the command that reports them.

Measuring and reporting are apart:

* :mod:`.workloads` -- the cases (rows derived from the optimizer registry,
  model sizes, dtypes), the step of each implementation, ``interleave`` (the
  implementations of a case timed round by round) and ``measure``;
  shared with the pytest-benchmark suite in ``benchmarks/``;
* :mod:`.shapes` -- the parameter shapes of real models (GPT-2 small,
  ResNet-50) and of the many-tiny-tensors case;
* :mod:`.counterparts` -- PyTorch's optimizer for each class;
* :mod:`.runner` -- which implementations load, warm-ups, timing every case
  side by side, the derived columns; :mod:`.machine` -- the machine;
* :mod:`.report` (the table), :mod:`.plot` (the chart) and :mod:`.command`
  (the options, JSON).

The workloads' names are re-exported here: ``from fusedoptim.cli import
bench; bench.make_step(bench.Case("adam", "big", "float32"), "cython")``.
"""

from .workloads import (
    BACKENDS,
    BASELINE,
    DTYPES,
    IMPLS,
    LIMIT,
    LR,
    MODEL_SIZES,
    OPTIMIZERS,
    PER_TENSOR_SIZES,
    ROWS,
    SIZES,
    STATEFUL,
    Case,
    NotMeasurable,
    cases,
    hyperparameters,
    interleave,
    make_model,
    make_step,
    measure,
    round_ratios,
    size_elements,
)

__all__ = ["BACKENDS", "BASELINE", "DTYPES", "IMPLS", "LIMIT", "LR", "MODEL_SIZES", "OPTIMIZERS",
           "PER_TENSOR_SIZES", "ROWS", "SIZES", "STATEFUL", "Case", "NotMeasurable", "cases",
           "hyperparameters", "interleave", "make_model", "make_step", "measure", "round_ratios",
           "size_elements"]
