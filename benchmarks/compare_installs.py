"""Adam's step time in two installations of fusedoptim, side by side.

Times ``update_parameters_with_adam`` (float32, the library's default
threads) at the ``course``, ``mlp`` and ``big`` sizes in fresh processes of
two Python interpreters, alternating old and new, and prints the median of
the per-process medians and their ratio.  How a refactoring is shown to leave
the speed unchanged: install the previous commit in a second environment
(``python -m venv --system-site-packages old && old/bin/pip install --no-deps
--no-build-isolation <checkout of that commit>``), then::

    python benchmarks/compare_installs.py old/bin/python python --pairs 10

``--api class`` times ``fusedoptim.Adam.step`` instead (the classes' loop,
PyTorch's rounding order, rather than the course function's).
"""

import argparse
import json
import statistics
import subprocess
import tempfile

_ONE = r"""
import json, time
import numpy as np
import fusedoptim as fo

SIZES = {"course": [(5, 2), (5, 1), (2, 5), (2, 1), (1, 2), (1, 1)],
         "mlp": [(256, 256), (256,)] * 50, "big": [(1 << 24,)]}
REPS = {"course": (2000, 15), "mlp": (20, 15), "big": (3, 15)}
out = {}
rng = np.random.default_rng(0)
for size, shapes in SIZES.items():
    p = {f"W{i}": rng.standard_normal(s, dtype=np.float32) for i, s in enumerate(shapes)}
    g = {f"dW{i}": rng.standard_normal(s, dtype=np.float32) for i, s in enumerate(shapes)}
    v, s = fo.initialize_adam(p)
    if API == "class":
        opt = fo.Adam(p, lr=1e-4)
        gn = {k[1:]: a for k, a in g.items()}
        step = lambda t: opt.step(gn)
    else:
        step = lambda t: fo.update_parameters_with_adam(p, g, v, s, t, 1e-4)
    inner, batches = REPS[size]
    t = 1
    for _ in range(inner):
        step(t)
        t += 1
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(inner):
            step(t)
            t += 1
        times.append((time.perf_counter() - t0) / inner)
    out[size] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""


def _one(python, api):
    # From a temporary directory, so that neither run imports a source tree.
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([python, "-c", f"API = {api!r}\n" + _ONE], cwd=tmp, capture_output=True, text=True,
                             check=True, timeout=600)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="Python of the installation to compare against")
    ap.add_argument("new", help="Python of the installation under test")
    ap.add_argument("--pairs", type=int, default=6, help="old/new process pairs")
    ap.add_argument("--api", choices=("course", "class"), default="course",
                    help="time update_parameters_with_adam or fusedoptim.Adam.step")
    args = ap.parse_args()
    runs = {"old": [], "new": []}
    for _ in range(args.pairs):
        runs["old"].append(_one(args.old, args.api))
        runs["new"].append(_one(args.new, args.api))
    print(f"{'size':7s} {'old median':>12s} {'new median':>12s} {'new/old':>8s}  ranges")
    for size in ("course", "mlp", "big"):
        o = [r[size] for r in runs["old"]]
        n = [r[size] for r in runs["new"]]
        mo, mn = statistics.median(o), statistics.median(n)
        print(f"{size:7s} {mo * 1e3:10.4f}ms {mn * 1e3:10.4f}ms {mn / mo:8.3f}  "
              f"old {min(o) * 1e3:.4f}-{max(o) * 1e3:.4f}, new {min(n) * 1e3:.4f}-{max(n) * 1e3:.4f} ms")


if __name__ == "__main__":
    main()
