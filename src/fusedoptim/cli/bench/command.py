"""The ``bench`` command: its options, and the run written out as a table,
JSON and a chart.

Rows are the registered optimizer classes (:data:`fusedoptim.OPTIMIZERS`,
see :mod:`.workloads`); :mod:`.runner` measures, :mod:`.report` and
:mod:`.plot` present.
"""

import json
import time

from ...backend import MAX_THREADS
from .. import CLIError, choice_list, positive_int, positive_int_list, unique
from .._output import Progress, check_plot_format, check_writable, require_matplotlib
from . import workloads as W
from .plot import plot
from .report import format_markdown, format_table
from .runner import (COMPARED, OPT_IN, QUICK_SLOW_CALL, SLOW_BUDGET_S, SLOW_MIN_REPEAT,
                     compiled_available, run)

__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "command"]

#: (untimed calls, rounds): the first untimed call is timed on its own and
#: reported (it holds a JIT compile or first-touch page faults); each round
#: times one batch of every implementation of the case in turn.
FULL = (3, 15)
QUICK = (1, 5)
#: --quick: a step whose first call takes longer than QUICK_SLOW_CALL joins
#: about this many of the rounds (every k-th), with one call per batch.
QUICK_SLOW_REPEAT = 3

DESCRIPTION = ("Time one optimizer step per backend against plain NumPy and the "
               "memory-bandwidth limit.")

EPILOG = """\
how to read the table:
  timing      interleaved: every implementation of a case is warmed up,
              then each of {full} rounds ({quick_rounds} under --quick) times one batch of
              each implementation in turn (copy, cython, numba, numpy,
              torch, then the peers; reversed in odd rounds), after one untimed call.  A
              batch runs the step enough times to last ~2 ms; a step
              slower than 20 ms runs once per batch and, when {full} rounds do
              not fit in ~{budget:.0f} s, joins every k-th round only (at least
              {slow_min}; about {quick_slow} under --quick), without the untimed call.
  time/step   median over its batches.  'spread' is (slowest - fastest
              batch) / median: above ~10% the machine was busy.
  ratios      'vs numpy', 'vs torch' and '% of limit' are medians of
              per-round ratios: the two times of a round are taken moments
              apart, so a swing of the machine's memory bandwidth between
              rounds cancels out (the JSON also has each per-round ratio and
              the ratio of the medians, 'of_medians').
  vs numpy    speedup: time of the plain-NumPy backend / this time.
  vs torch    time of PyTorch's counterpart / this time (above 1: faster).
  vs <peer>   with --backend ...,deepspeed (DeepSpeed's CPU Adam, float32
              state) or ...,bitsandbytes,torchao (8-bit state, on the
              --state int8 rows: bitsandbytes' Adam8bit on Adam rows and
              AdamW8bit on AdamW rows; torchao's AdamW8bit on both, with
              Adam's weight decay of 0 on Adam rows): the peer's time /
              this time, for the Adam and AdamW rows.  DeepSpeed compiles
              its kernel and torchao its step at their first use.
  GB/s        effective bandwidth: the bytes the step must move at the least
              (the parameter, the gradient and each state the class uses,
              at its --state size; Adam reads p, g, m, v and writes p, m, v:
              7 arrays; a two-pass family counts its second pass too: LAMB
              reads p, m, v once more, 10 arrays) / time.
  % of limit  time of 'copy' / this time.  'copy' is a compiled kernel that
              reads and writes the same arrays as the step and computes
              nothing, measured in the same run: the practical memory limit
              of this machine for this traffic.  100% means the update costs
              no more than moving its data; an optimizer step cannot go much
              faster than that, whatever the arithmetic.  For the --state
              bfloat16 and int8 rows 'copy' is the float32-state step's
              copy (and its GB/s counts float32 states), so above 100%
              means faster than any float32-state step can be.  For the tiny
              'course' size the times are call overheads, not memory
              traffic, so there the percentage compares overheads; it can
              exceed 100% within noise, or when a library moves the bytes
              better than the yardstick.
  per tensor  (the 'tiny' size, a line below the table) time / tensors, and
              (time - copy time) / tensors: what each tensor costs above
              moving its bytes (the copy kernel moves them as one array).

rows: every registered optimizer class (fusedoptim.OPTIMIZERS), named in
lower case, at its defaults but lr {lr:g}{stateful}, stepped with
opt.step(grads) on each fusedoptim backend; torch is PyTorch's counterpart
with the same hyperparameters (fused where PyTorch has a fused CPU kernel,
foreach for RMSprop, Adamax, NAdam, RAdam, Adadelta).
sizes: course = the 2-5-2-1 network ({course});
       mlp = an MLP of 50 layers of 256x256 ({mlp});
       big = {big};
       gpt2 = GPT-2 small's parameter shapes ({gpt2});
       resnet50 = torchvision ResNet-50's ({resnet50});
       tiny = many tiny vectors of 1 to 4096 elements ({tiny}):
              the report quotes its time per tensor.
       Shapes only, with random values: nothing is downloaded.  --quick
       leaves out {model_sizes} unless --size names them.
examples:
  python -m fusedoptim bench --quick
  python -m fusedoptim bench --size big --optimizer adam,gd --threads 1,2 --json out.json
  python -m fusedoptim bench --size gpt2,resnet50,tiny --optimizer adam
  python -m fusedoptim bench --size big,gpt2 --optimizer adam,adamw \
      --backend cython,torch,deepspeed
  python -m fusedoptim bench --size big --optimizer adamw --state int8 \
      --backend cython,bitsandbytes,torchao
"""


def _size_text(name):
    n = len(W.SIZES[name])
    return f"{n} tensor{'s' if n > 1 else ''}, {W.size_elements(name):,} elements"


EPILOG = EPILOG.format(
    lr=W.LR, stateful="".join(f" ({c}: {', '.join(f'{k} {v:g}' for k, v in kw.items())})"
                             for c, kw in W.STATEFUL.items()),
    slow_min=SLOW_MIN_REPEAT, full=FULL[1], budget=SLOW_BUDGET_S, quick_slow=QUICK_SLOW_REPEAT,
    quick_rounds=QUICK[1],
    model_sizes=" and ".join(W.MODEL_SIZES),
    **{name: _size_text(name) for name in W.SIZES})


def _thread_counts(text):
    # set_num_threads refuses more than MAX_THREADS: say so now, not after
    # the backends have loaded.
    return positive_int_list(text, most=MAX_THREADS)


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help=f"a first look: {QUICK[1]} rounds (about {QUICK_SLOW_REPEAT} for steps "
                        f"over {QUICK_SLOW_CALL * 1e3:.0f} ms) after {QUICK[0]} warm-up call, "
                        f"instead of {FULL[1]} after {FULL[0]}")
    p.add_argument("--optimizer", action="extend", type=choice_list(W.OPTIMIZERS, "optimizer"),
                   metavar="NAME[,NAME]", help=f"{', '.join(W.OPTIMIZERS)} (default: all)")
    p.add_argument("--size", action="extend", type=choice_list(tuple(W.SIZES), "size"),
                   metavar="NAME[,NAME]", help=f"{', '.join(W.SIZES)} (default: all; "
                                               f"--quick: all but {', '.join(W.MODEL_SIZES)})")
    p.add_argument("--dtype", action="extend", type=choice_list(tuple(W.DTYPES), "dtype"),
                   metavar="NAME[,NAME]", help="float32, float64 (default: float32)")
    p.add_argument("--state", action="extend", type=choice_list(W.STATES, "state"),
                   metavar="NAME[,NAME]",
                   help="optimizer state precision: float32 (the parameter's dtype), bfloat16, "
                        "int8 (8-bit blockwise); the reduced ones for the "
                        f"{', '.join(W.STATE_ROWS)} rows (default: float32)")
    p.add_argument("--threads", action="extend", type=_thread_counts, metavar="N[,N]",
                   help=f"thread counts to run each case with, at most {MAX_THREADS} "
                        f"(default: fusedoptim's, FUSEDOPTIM_NUM_THREADS or the usable CPUs)")
    p.add_argument("--backend", action="extend", type=choice_list(COMPARED, "backend"),
                   metavar="NAME[,NAME]",
                   help="implementations to compare: cython, numba, numpy, torch, and the "
                        "peers deepspeed, bitsandbytes, torchao (default: those available "
                        "here but the peers, which are measured only when named).  numpy "
                        "(the baseline) and copy (the limit) are always measured")
    p.add_argument("--repeat", type=positive_int, metavar="N",
                   help="rounds: timed batches of each implementation, interleaved "
                        "(overrides --quick)")
    p.add_argument("--warmup", type=positive_int, metavar="N",
                   help="untimed calls before timing, >= 1 (overrides --quick)")
    p.add_argument("--json", metavar="PATH", help="write every measurement and the machine "
                                                  "description to PATH")
    p.add_argument("--plot", metavar="PATH.png", help="draw speedups vs numpy and %% of the "
                                                      "limit (needs matplotlib)")
    p.add_argument("--markdown", action="store_true",
                   help="print the report as Markdown: the machine, the date and the load "
                        "average above a table (as quoted in the README)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def command(args):
    """Run ``fusedoptim bench``; returns the exit status (1 if a measurement
    failed)."""
    import fusedoptim

    started = time.perf_counter()
    if args.plot:
        require_matplotlib()
        check_plot_format(args.plot)
        check_writable(args.plot, "--plot")
    if args.json:
        check_writable(args.json, "--json")
    warmup, repeat = QUICK if args.quick else FULL
    slow_repeat = QUICK_SLOW_REPEAT if args.quick and not args.repeat else None
    # Asked-for counts are kept as asked.
    budget = None if args.quick or args.repeat or args.warmup else SLOW_BUDGET_S
    if args.warmup:
        warmup = args.warmup
    if args.repeat:
        repeat = args.repeat
    progress = Progress(enabled=not args.quiet)
    backends = unique(args.backend or [b for b in COMPARED if b not in OPT_IN])
    if args.quick and not args.backend and compiled_available():
        # numba is the fallback for installs without the compiled extension;
        # its JIT warm-up (about 3 s of CPU for every optimizer at one dtype,
        # far more wall time on a loaded machine) would dominate a quick run.
        backends = [b for b in backends if b != "numba"]
        progress.line("note: --quick leaves out the numba fallback backend (its JIT "
                      "warm-up takes seconds); ask for it with --backend", always=True)
    sizes = args.size
    if not sizes:
        sizes = [s for s in W.SIZES if not (args.quick and s in W.MODEL_SIZES)]
        if args.quick:
            progress.line(f"note: --quick leaves out the {' and '.join(W.MODEL_SIZES)} sizes "
                          f"(real models: up to gigabytes of arrays); ask for them with --size",
                          always=True)
    doc = run(optimizers=unique(args.optimizer or W.OPTIMIZERS),
              sizes=unique(sizes),
              dtypes=unique(args.dtype or ["float32"]),
              threads=unique(args.threads or [fusedoptim.get_num_threads()]),
              backends=backends,
              explicit=bool(args.backend), warmup=warmup, repeat=repeat, progress=progress,
              slow_repeat=slow_repeat, started=started, budget=budget,
              states=unique(args.state or ["float32"]))
    doc["settings"]["quick"] = bool(args.quick)
    doc["command"] = ["fusedoptim"] + list(args.argv)
    print(format_markdown(doc) if args.markdown else format_table(doc), flush=True)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
        except OSError as exc:
            raise CLIError(f"--json {args.json}: cannot write ({exc.strerror or exc})") from None
        progress.line(f"wrote {args.json}", always=True)
    if args.plot:
        plot(doc, args.plot)
        progress.line(f"wrote {args.plot}", always=True)
    return 1 if doc["failures"] else 0
