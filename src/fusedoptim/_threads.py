"""The default thread count, and fusedoptim's ``threadpoolctl`` controller.

Default threads: the CPUs this process may run on (its affinity mask), capped
by its cgroup's CPU quota or an ancestor cgroup's (``cpu.max`` of cgroup v2,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of v1), rounded up: a container
limited to 1.5 CPUs on a 64-core host gets 2 threads, not 64.

threadpoolctl: when it is installed (it is optional, never a dependency),
importing fusedoptim registers ``FusedOptimController`` so that
``threadpoolctl.threadpool_limits(1)`` (or ``user_api="fusedoptim"``) limits
fusedoptim's threads, and ``threadpool_info()`` lists them.  threadpoolctl
finds controllers through the shared libraries loaded in the process; this
one matches the compiled backend's ``_pool`` module (which exports the marker
symbol ``fusedoptim_thread_pool``), so it needs the compiled extension to be
built, and then applies to every backend: it calls ``fusedoptim
.set_num_threads``.
"""

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _quota_cpus(quota: str | None, period: str | None) -> int | None:
    """CPUs allowed by ``quota`` over ``period`` (None: no limit)."""
    try:
        q, p = int(quota), int(period)  # type: ignore[arg-type]  # None: TypeError
    except (TypeError, ValueError):
        return None
    if q <= 0 or p <= 0:
        return None
    return max(1, math.ceil(q / p))


def _ancestors(path: str) -> list[str]:
    """A cgroup's path (from ``/proc/self/cgroup``) and its parents' below
    the root; none for a path outside this cgroup namespace (``..``), which
    is not mounted here."""
    parts = [p for p in path.split("/") if p]
    if ".." in parts:
        return []
    return ["/" + "/".join(parts[:k]) for k in range(len(parts), 0, -1)]


def cgroup_cpu_limit(root: str = CGROUP_ROOT,
                     proc_cgroup: str = "/proc/self/cgroup") -> int | None:
    """CPUs the cgroup CPU quota allows this process (rounded up), or
    ``None`` without a quota.  Looks at the cgroup root, and at the
    process's own cgroup (from ``proc_cgroup``) and every ancestor of it (a
    quota on a parent, such as a systemd slice's, limits every cgroup below
    it), in the v2 layout (``<root>/<path>``) and the v1 one
    (``<root>/cpu/<path>``, ``<root>/cpu,cpuacct/<path>``); takes the
    smallest limit."""
    dirs = [root]
    own = _read(proc_cgroup) or ""
    for line in own.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2] in ("", "/"):
            continue
        path = parts[2]
        if parts[1] == "":  # v2: <root>/<path>, and its parents
            more = [root + a for a in _ancestors(path)]
        elif "cpu" in parts[1].split(","):  # v1: <root>/<controllers>/<path>, ...
            more = [root + c + a for a in _ancestors(path)
                    for c in ("", "/" + parts[1], "/cpu", "/cpu,cpuacct")]
        else:  # another v1 controller's cgroup
            more = [root + path]
        dirs += [d for d in more if d not in dirs]
    limits = []
    for d in dirs:
        v2 = _read(os.path.join(d, "cpu.max"))
        if v2:
            fields = v2.split()
            if len(fields) == 2 and fields[0] != "max":
                limits.append(_quota_cpus(fields[0], fields[1]))
        for v1 in (d, os.path.join(d, "cpu"), os.path.join(d, "cpu,cpuacct")):
            q = _read(os.path.join(v1, "cpu.cfs_quota_us"))
            if q is not None:
                limits.append(_quota_cpus(q, _read(os.path.join(v1, "cpu.cfs_period_us"))))
    found = [n for n in limits if n is not None]
    return min(found) if found else None


def default_threads() -> int:
    """Threads to use by default: the affinity mask's CPUs, capped by the
    cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, limit)
    return max(1, n)


def register_threadpoolctl() -> bool:
    """Register the controller with threadpoolctl (>= 3.0, if installed);
    returns whether it did."""
    try:
        import threadpoolctl
        from threadpoolctl import LibController
    except ImportError:
        return False
    if not hasattr(threadpoolctl, "register"):
        return False
    try:  # the library the controller matches must be loaded
        from ._ext import _pool  # noqa: F401
    except ImportError:
        return False

    class FusedOptimController(LibController):
        """fusedoptim's threads, for threadpoolctl."""

        user_api = "fusedoptim"
        internal_api = "fusedoptim"
        filename_prefixes = ("_pool",)
        check_symbols = ("fusedoptim_thread_pool",)

        def get_num_threads(self):
            from .backend import get_num_threads
            return get_num_threads()

        def set_num_threads(self, num_threads):
            # Clamped, not refused: threadpoolctl sets each library's count
            # in turn and restores none when one raises, so a refusal of
            # threadpool_limits(0) or (10**6) left the libraries set before
            # this one (OpenBLAS) changed for good.
            from .backend import MAX_THREADS, set_num_threads
            set_num_threads(max(1, min(int(num_threads), MAX_THREADS)))

        def get_version(self):
            from importlib.metadata import PackageNotFoundError, version
            try:
                return version("fusedoptim")
            except PackageNotFoundError:
                return None

    if not any(getattr(c, "user_api", None) == "fusedoptim"
               for c in getattr(threadpoolctl, "_ALL_CONTROLLERS", ())):
        threadpoolctl.register(FusedOptimController)
    return True
