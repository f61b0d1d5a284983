"""Backend choice and threads.

Three backends implement the same multi-tensor interface: one keyword-only
step per registered family (see ``fusedoptim.families``), ``grad_sumsq`` and
``set_num_threads``: ``cython`` (the compiled extension, the fast
path), ``numba`` (a JIT fallback), ``numpy`` (the plain reference).  They give
bit-for-bit identical results.

At import the backend is ``FUSEDOPTIM_BACKEND`` if set (an unknown name is a
``ValueError``, an unavailable one ``BackendUnavailable``: an explicit choice
never falls back), else the first of ``cython``, ``numba``, ``numpy`` that
imports; falling back past ``cython`` warns once (``FusedOptimWarning``,
pointing at the user's import) naming the active backend and why each faster
one is missing.  Numba is imported only when its backend is selected (or by
``available_backends``).  The active backend is process-wide:
``use_backend`` is not thread-local.

The number of threads is ``FUSEDOPTIM_NUM_THREADS`` if set, else the number
of CPUs this process may run on, capped by its cgroup CPU quota
(``_threads.default_threads``).
"""

import contextlib
import importlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from types import FrameType, ModuleType
from typing import Any

BACKENDS = ("cython", "numba", "numpy")

_MODULES = {
    "cython": "fusedoptim._ext",
    "numba": "fusedoptim._numba",
    "numpy": "fusedoptim._reference",
}

_lock = threading.RLock()
_loaded: dict[str, ModuleType] = {}
_errors: dict[str, str] = {}
# Both set at import (_init); "" only where the command line deferred a bad
# FUSEDOPTIM_BACKEND (init_error).
_active_name: str = ""
_active: ModuleType | None = None
_num_threads: int = 1
#: The most threads ``set_num_threads`` accepts (each backend stores it in a
#: C int; far more threads than cores only slows a step down).
MAX_THREADS = 4096


class BackendUnavailable(ImportError):
    """The requested backend cannot be loaded on this installation."""


class FusedOptimWarning(RuntimeWarning):
    """fusedoptim is running on a slower backend than it could."""


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _load(name: str) -> ModuleType:
    """The backend module, imported once; ``BackendUnavailable`` says why
    it cannot be."""
    _check_name(name)
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _errors:
            raise BackendUnavailable(_errors[name])
        try:
            mod = importlib.import_module(_MODULES[name])
        except ImportError as exc:
            if name == "cython":
                why = (f"the compiled extension fusedoptim._ext did not import ({exc}); "
                       f"the build is broken or missing: reinstall with a C compiler "
                       f"(pip install --force-reinstall --no-binary fusedoptim fusedoptim)")
            elif name == "numba" and (getattr(exc, "name", None) or "") in ("numba", "llvmlite"):
                why = (f"numba did not import ({exc}); the numba backend is optional: "
                       f"pip install 'fusedoptim[numba]'")
            elif name == "numba":  # installed, but broken (e.g. built for another NumPy)
                why = (f"numba is installed but did not import ({type(exc).__name__}: {exc}); "
                       f"reinstall a numba that supports this NumPy and Python")
            else:
                why = f"fusedoptim._reference did not import ({exc})"
            _errors[name] = why
            raise BackendUnavailable(why) from exc
        mod.set_num_threads(get_num_threads())
        _loaded[name] = mod
        return mod


def available_backends() -> list[str]:
    """Names of the backends that load here, fastest first (imports them)."""
    out = []
    for name in BACKENDS:
        try:
            _load(name)
        except BackendUnavailable:
            continue
        out.append(name)
    return out


def get_backend() -> str:
    """Name of the active backend."""
    return _active_name


def set_backend(name: str) -> None:
    """Make ``name`` the active backend for the functional API and every
    optimizer.

    Parameters
    ----------
    name : {"cython", "numba", "numpy"}
        The backend.  It is imported on first use.

    Raises
    ------
    ValueError
        ``name`` is not a backend.
    BackendUnavailable
        The backend cannot be loaded here (an ``ImportError``; the message
        says why).  The active backend is then unchanged.
    """
    global _active_name, _active
    mod = _load(name)
    with _lock:
        _active_name, _active = name, mod


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ModuleType | None]:
    """Context manager: run the block on backend ``name``, then restore the
    previous one.

    Parameters
    ----------
    name : {"cython", "numba", "numpy"}
        The backend for the block, as in :func:`set_backend` (same errors).

    Yields
    ------
    module
        The backend's module.  The previous backend is restored on exit,
        also when the block raises.
    """
    global _active_name, _active
    # Restore the module itself: the previous backend was loaded already and
    # putting it back must not depend on importing anything again.
    previous = (_active_name, _active)
    set_backend(name)
    try:
        yield _active
    finally:
        with _lock:
            _active_name, _active = previous


def active() -> Any:
    """The active backend module (internal fast accessor)."""
    return _active


def get_num_threads() -> int:
    """Threads the compiled kernels use for large steps."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in every backend.

    Results do not depend on it: every backend splits work so that each
    element is computed the same way on any number of threads.

    Parameters
    ----------
    n : int
        From 1 to 4096 (``fusedoptim.backend.MAX_THREADS``).

    Raises
    ------
    TypeError
        ``n`` is not an integer (a bool or a float included).
    ValueError
        ``n`` is below 1 or above 4096.  The thread count is then unchanged.
    """
    global _num_threads
    from ._validate import positive_int
    n = positive_int(n, "n")
    if n > MAX_THREADS:  # checked before anything is stored
        raise ValueError(f"n must be at most {MAX_THREADS}, got {n}")
    with _lock:
        _num_threads = n
        for mod in _loaded.values():
            mod.set_num_threads(n)


#: The error a bad ``FUSEDOPTIM_BACKEND`` or ``FUSEDOPTIM_NUM_THREADS`` raised at
#: import, when the import was the command line's (see ``_launched_as_cli``):
#: ``fusedoptim --help`` must work whatever the environment, and the commands
#: that need a backend report this error as one line.  ``None`` otherwise.
init_error: Exception | None = None


def _launched_as_cli() -> bool:
    """Whether this import is the command line's: ``python -m fusedoptim``
    (while runpy imports the package, ``sys.argv[0]`` is ``"-m"``) or the
    ``fusedoptim`` console script.  A library import raises its errors at
    import as documented; only the command line defers them."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 == "-m" or os.path.basename(argv0) in ("fusedoptim", "fusedoptim.exe")


def _init_threads() -> None:
    global _num_threads
    env = os.environ.get("FUSEDOPTIM_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
            if not 1 <= n <= MAX_THREADS:
                raise ValueError
        except ValueError:
            raise ValueError(f"FUSEDOPTIM_NUM_THREADS must be an integer in "
                             f"[1, {MAX_THREADS}], got {env!r}") from None
        _num_threads = n
    else:
        from ._threads import default_threads
        _num_threads = default_threads()


def _caller_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first frame outside
    fusedoptim (the user's import); ``warnings`` itself skips the import
    machinery's frames, so they are not counted."""
    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None:
        fname = frame.f_code.co_filename
        if "importlib" in fname and "_bootstrap" in fname:
            frame = frame.f_back
            continue
        if not os.path.abspath(fname).startswith(pkg):
            return level
        level += 1
        frame = frame.f_back
    return level


def _init_backend() -> None:
    env = os.environ.get("FUSEDOPTIM_BACKEND", "").strip().lower()
    if env:
        # An explicit choice: no fallback, no warning.
        try:
            set_backend(env)
        except ValueError:
            raise ValueError(f"FUSEDOPTIM_BACKEND={env!r} is not a backend; choose one "
                             f"of {', '.join(BACKENDS)}") from None
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"FUSEDOPTIM_BACKEND={env}: {exc}") from exc
        return
    for name in BACKENDS:
        try:
            set_backend(name)
        except BackendUnavailable:
            continue
        if name != "cython":
            missing = "; ".join(_errors[n] for n in BACKENDS[:BACKENDS.index(name)])
            warnings.warn(f"fusedoptim is running on its slower {name} backend because "
                          f"{missing}. Set FUSEDOPTIM_BACKEND={name} to choose it "
                          f"explicitly and silence this warning.",
                          FusedOptimWarning, stacklevel=_caller_stacklevel())
        return


def _init() -> None:
    global init_error, _num_threads
    try:
        _init_threads()
    except ValueError as exc:
        if not _launched_as_cli():
            raise
        init_error = exc
        from ._threads import default_threads
        _num_threads = default_threads()
    try:
        _init_backend()
    except (ValueError, BackendUnavailable) as exc:
        if not _launched_as_cli():
            raise
        init_error = init_error or exc


_init()
