"""What type checkers see: the stub of the compiled module, ``py.typed``, the
optimizer classes spelled out for them, and the hints of the public API."""

import ast
import inspect
import pathlib
import re
import typing

import pytest

import fusedoptim
from fusedoptim import OPTIMIZERS

PKG = pathlib.Path(fusedoptim.__file__).resolve().parent


def test_package_is_marked_typed():
    assert (PKG / "py.typed").is_file()


def test_every_optimizer_class_is_visible_to_type_checkers():
    """``fusedoptim/__init__.py`` adds the registry's classes at run time; the
    ``if TYPE_CHECKING:`` block must import each of them by name."""
    tree = ast.parse((PKG / "__init__.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    names.update(a.asname or a.name for a in stmt.names)
    missing = sorted(set(OPTIMIZERS) - names)
    assert not missing, f"add {missing} to the TYPE_CHECKING imports of fusedoptim/__init__.py"


def _stub_functions(path):
    tree = ast.parse(path.read_text())
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _stub_parameters(fn):
    a = fn.args
    return ([p.arg for p in a.posonlyargs + a.args], [p.arg for p in a.kwonlyargs])


def test_compiled_module_stub_matches_the_extension():
    ext = pytest.importorskip("fusedoptim._ext", reason="the compiled backend is not built")
    stub = _stub_functions(PKG / "_ext" / "__init__.pyi")
    # Every public function of the extension package is in the stub...
    for name in ext.__all__:
        obj = getattr(ext, name)
        if not callable(obj):
            continue
        if name.removesuffix("_groups") in fusedoptim.families.FAMILIES and name not in stub:
            continue  # a family added later: typed through the stub's __getattr__
        assert name in stub, f"fusedoptim/_ext/__init__.pyi has no {name!r}"
    # ...with the extension's own parameter names.
    for name, fn in stub.items():
        if name == "__getattr__":
            continue
        sig = inspect.signature(getattr(ext, name))
        positional = [p.name for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        keyword = [p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY]
        assert _stub_parameters(fn) == (positional, keyword), name


def test_family_steps_in_the_stub_take_the_registry_keywords():
    stub = _stub_functions(PKG / "_ext" / "__init__.pyi")
    for name, fam in fusedoptim.families.FAMILIES.items():
        if name in stub:
            assert _stub_parameters(stub[name])[1] == list(fam.keywords), name


@pytest.mark.parametrize("func", [
    fusedoptim.update_parameters_with_gd, fusedoptim.update_parameters_with_momentum,
    fusedoptim.update_parameters_with_rmsprop, fusedoptim.update_parameters_with_adam,
    fusedoptim.initialize_velocity, fusedoptim.initialize_rmsprop, fusedoptim.initialize_adam,
    fusedoptim.random_mini_batches, fusedoptim.get_backend, fusedoptim.set_backend,
    fusedoptim.use_backend, fusedoptim.available_backends, fusedoptim.get_num_threads,
    fusedoptim.set_num_threads, fusedoptim.update_lr, fusedoptim.schedule_lr_decay,
    fusedoptim.Optimizer.step, fusedoptim.Optimizer.state_dict,
    fusedoptim.Optimizer.load_state_dict, fusedoptim.exclude_from_weight_decay,
])
def test_public_functions_have_complete_hints(func):
    hints = typing.get_type_hints(func)
    params = set(inspect.signature(func).parameters) - {"self"}
    assert "return" in hints
    assert set(params) <= set(hints), sorted(set(params) - set(hints))


def test_type_checking_imports_are_explicit_reexports():
    """``__all__`` ends with ``*OPTIMIZERS``, which type checkers cannot read,
    so each class of the ``if TYPE_CHECKING:`` block must be imported as
    ``X as X``: otherwise ``fusedoptim.Adam`` is a private name under
    ``mypy --strict`` (no_implicit_reexport) and pyright."""
    tree = ast.parse((PKG / "__init__.py").read_text())
    plain = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    plain += [a.name for a in stmt.names if a.asname != a.name]
    assert not plain, f"import {plain} as themselves (`from ... import X as X`)"


# A user's script: every line must type-check under ``mypy --strict``.
USER_SCRIPT = '''
import numpy as np
import numpy.typing as npt

import fusedoptim as fo
from fusedoptim.distributed import ShardedOptimizer, flat_parameters

params: dict[str, npt.NDArray[np.float64]] = {"W1": np.ones((4, 3)), "b1": np.zeros((4, 1))}
grads: dict[str, npt.NDArray[np.float64]] = {"dW1": np.ones((4, 3)), "db1": np.ones((4, 1))}
v, s = fo.initialize_adam(params)
params, v, s, v_corrected, s_corrected = fo.update_parameters_with_adam(params, grads, v, s, 1)
lr0: float = fo.update_lr(0.1, 3, 1.0) + fo.schedule_lr_decay(0.1, 3, 1.0, time_interval=2)
schedule = fo.SequentialLR([fo.LinearLR(0.05, start_factor=0.1, total_iters=20),
                            fo.CosineAnnealingLR(0.05, T_max=300)], milestones=[20])
groups = fo.exclude_from_weight_decay(params, var_names=[r"^b\\d+$"])
opt = fo.AdamW(groups, lr=schedule, weight_decay=1e-4, max_grad_norm=1.0)
others = [fo.GD(params, 0.1), fo.Momentum(params, 0.1), fo.SGD(params, 0.1), fo.RMSProp(params),
          fo.Adam(params), fo.Adagrad(params), fo.Adamax(params), fo.NAdam(params),
          fo.RAdam(params), fo.Adadelta(params), fo.Lion(params), fo.LAMB(params)]
applied: bool = opt.step(grads)
opt.lr = fo.ExponentialDecay(0.1, 100, 0.5)
sd = opt.state_dict()
opt.load_state_dict(sd)
opt.load_state_dict(np.load("opt.npz", allow_pickle=False))
norm: float = fo.clip_grad_norm_(grads, 1.0)
with fo.use_backend("numpy"):
    pass
sharded = ShardedOptimizer(fo.AdamW, flat_parameters(params), lr=1e-3)
done: bool = sharded.step(grads)
state = fo.stateless.init_state("AdamW", params, weight_decay=1e-4)
params = fo.stateless.adamw(params, grads, state, lr=1e-3, weight_decay=1e-4, max_grad_norm=1.0)
'''

# Wrong calls the hints must flag: (line, mypy error code).
BAD_SCRIPT = '''
from types import MappingProxyType
import numpy as np
import fusedoptim as fo
params = {"W": np.ones(3)}
grads = {"dW": np.ones(3)}
fo.update_lr(0.1, "3", 1.0)
fo.schedule_lr_decay(0.1, 3, 1.0, time_interval="2")
fo.Adam(params).step(grads, 1.0)
fo.Adam(params).load_state_dict(3)
x: str = fo.Adam(params).step(grads)
fo.update_parameters_with_gd(MappingProxyType(params), grads, 0.1)
fo.initialize_adam(MappingProxyType(params))
fo.Adam(params).step(MappingProxyType(grads))
fo.stateless.adamw(params, grads, {}, bettas=(0.9, 0.99))
fo.stateless.sgd(params, grads, {})
'''
BAD_LINES = {7: "arg-type", 8: "arg-type", 9: "call-arg", 10: "arg-type", 11: "assignment",
             12: "type-var", 13: "arg-type", 14: "arg-type", 15: "call-arg", 16: "call-arg"}


def _mypy_strict(tmp_path, code):
    api = pytest.importorskip("mypy.api", reason="mypy is not installed (the typecheck extra)")
    script = tmp_path / "user_script.py"
    script.write_text(code)
    config = tmp_path / "mypy.ini"  # a user's settings, not the project's
    config.write_text("[mypy]\n")
    out, err, status = api.run(["--strict", "--config-file", str(config), "--cache-dir",
                                str(tmp_path / ".mypy_cache"), "--show-error-codes",
                                "--no-pretty", str(script)])
    errors = [line for line in out.splitlines() if ": error:" in line]
    return errors, out + err


def test_a_user_script_type_checks_under_mypy_strict(tmp_path):
    errors, output = _mypy_strict(tmp_path, USER_SCRIPT)
    assert not errors, output


def test_mypy_strict_flags_wrong_calls(tmp_path):
    errors, output = _mypy_strict(tmp_path, BAD_SCRIPT)
    found = _flagged(errors)
    unexpected = {k: v for k, v in found.items() if k not in BAD_LINES}
    assert not unexpected, output
    for lineno, code in BAD_LINES.items():
        assert code in found.get(lineno, set()), f"line {lineno} not flagged [{code}]:\n{output}"


# --- the optimizer classes' constructors and attributes, for type checkers ---
# Each class spells out, in an ``if TYPE_CHECKING:`` block, the constructor
# its runtime ``__init__(*args, **kwargs)`` binds (``__signature__``, built
# from ``hyper``) and a read-only property per hyperparameter.

_HYPER_TYPES = {bool: "bool", float: "float", tuple: "tuple[float, float]"}


def _type_checking_stubs(cls):
    """The functions of the ``if TYPE_CHECKING:`` block of ``cls``'s own body."""
    tree = ast.parse(pathlib.Path(inspect.getsourcefile(cls)).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    blocks = [n for n in node.body
              if isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING"]
    assert len(blocks) == 1, f"{cls.__name__} has {len(blocks)} `if TYPE_CHECKING:` blocks"
    return {f.name: f for f in blocks[0].body if isinstance(f, ast.FunctionDef)}


def _stub_signature(fn):
    """``[(name, kind, repr(default))]`` of a stub ``def`` (``self`` left out)."""
    a = fn.args
    assert not a.posonlyargs and a.vararg is None and a.kwarg is None, fn.name
    P = inspect.Parameter
    empty = repr(P.empty)
    positional = [empty] * (len(a.args) - len(a.defaults))
    positional += [repr(ast.literal_eval(d)) for d in a.defaults]
    out = [(x.arg, P.POSITIONAL_OR_KEYWORD, d) for x, d in zip(a.args, positional)]
    out += [(x.arg, P.KEYWORD_ONLY, empty if d is None else repr(ast.literal_eval(d)))
            for x, d in zip(a.kwonlyargs, a.kw_defaults)]
    return out[1:]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_type_checking_constructor_matches_the_signature(name):
    """The ``__init__`` type checkers see takes the same arguments, of the same
    kinds, with the same defaults (``repr``: ``0`` is not ``0.0``) as the one
    that runs, and types each hyperparameter after its default."""
    cls = OPTIMIZERS[name]
    init = _type_checking_stubs(cls).get("__init__")
    assert init is not None, f"{name}'s TYPE_CHECKING block has no __init__"
    runtime = [(p.name, p.kind, repr(p.default)) for p in cls.__signature__.parameters.values()]
    assert _stub_signature(init) == runtime
    annotations = {x.arg: ast.unparse(x.annotation) for x in init.args.args + init.args.kwonlyargs
                   if x.annotation is not None}
    assert set(annotations) == {p[0] for p in runtime}, f"{name}: annotate every argument"
    assert init.returns is not None and ast.unparse(init.returns) == "None"
    for h in cls.hyper:
        assert annotations[h.name] == _HYPER_TYPES[type(h.default)], (name, h.name)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_type_checking_properties_cover_every_hyperparameter(name):
    cls = OPTIMIZERS[name]
    stubs = {}
    for base in reversed([c for c in cls.__mro__ if c in OPTIMIZERS.values()]):
        stubs.update(_type_checking_stubs(base))
    for h in cls.hyper:
        fn = stubs.get(h.name)
        assert fn is not None, f"{name}: no property stub for {h.name!r}"
        assert [ast.unparse(d) for d in fn.decorator_list] == ["property"], (name, h.name)
        assert ast.unparse(fn.returns) == _HYPER_TYPES[type(h.default)], (name, h.name)


def _flagged(errors):
    """``{line: {mypy error codes}}`` of mypy's error lines."""
    found = {}
    for line in errors:
        m = re.search(r":(\d+): error: .*\[([\w-]+)\]$", line)
        assert m, line
        found.setdefault(int(m.group(1)), set()).add(m.group(2))
    return found


def _constructors_script():
    """Every class with every keyword argument, and every attribute read."""
    tail = {"max_grad_norm": 1.0, "skip_nonfinite": True, "state_dtype": "int8",
            "state_rounding": "stochastic", "state_seed": 1}
    lines = ["import numpy as np", "import numpy.typing as npt", "import fusedoptim as fo",
             "q: dict[str, npt.NDArray[np.float32]] = {'w': np.ones(3, np.float32)}"]
    for name, cls in OPTIMIZERS.items():
        kw = [f"{q.name}={tail.get(q.name, q.default)!r}"
              for q in list(cls.__signature__.parameters.values())[2:]]
        lines.append(f"opt_{name} = fo.{name}(parameters=q, lr=0.01, {', '.join(kw)})")
        lines += [f"{h.name}_{name}: {_HYPER_TYPES[type(h.default)]} = opt_{name}.{h.name}"
                  for h in cls.hyper]
    return "\n".join(lines) + "\n"


CONSTRUCTORS_SCRIPT = '''
import numpy as np
import fusedoptim as fo
p = {"w": np.ones(3)}
opt = fo.Adam(p, 1e-3, (0.9, 0.99), 1e-8, 0.0, True, maximize=True)
betas: tuple[float, float] = opt.betas
sgd = fo.SGD(p, 0.1, momentum=0.9, nesterov=True)
nesterov: bool = sgd.nesterov
fo.AdamW(fo.exclude_from_weight_decay(p), lr=lambda t: 1e-3 * 0.99 ** t)
fo.Lion(({"params": p, "lr": 1e-4},), fo.ExponentialDecay(1e-4, 100, 0.5))
fo.GD(parameters=p, lr=0.1).lr = 0.2
'''


def test_mypy_strict_accepts_the_constructors_and_attributes(tmp_path):
    errors, output = _mypy_strict(tmp_path, CONSTRUCTORS_SCRIPT + _constructors_script())
    assert not errors, output


# Wrong constructor calls and attribute uses: (line, mypy error code).
BAD_CONSTRUCTORS = '''
import numpy as np
import fusedoptim as fo
p = {"w": np.ones(3)}
opt = fo.Adam(p, bettas=(0.9, 0.99))
fo.Adam(p, 1e-3, (0.9, 0.99), 1e-8, 0.0, False, True)
opt.betas = (1, 2)
fo.SGD(p)
fo.SGD(p, 0.1, nesterov="yes")
fo.Adam(p, betas=0.9)
fo.AdamW(p).centered
fo.Adagrad(p, 0.01, 0.0, 0.0, 0.0, 1e-10, False)  # maximize is keyword-only
'''
BAD_CONSTRUCTOR_LINES = {5: "call-arg", 6: "call-arg", 7: "misc", 8: "call-arg", 9: "arg-type",
                         10: "arg-type", 11: "attr-defined", 12: "call-arg"}


def test_mypy_strict_flags_wrong_constructor_calls(tmp_path):
    errors, output = _mypy_strict(tmp_path, BAD_CONSTRUCTORS)
    found = _flagged(errors)
    assert set(found) == set(BAD_CONSTRUCTOR_LINES), output
    for lineno, code in BAD_CONSTRUCTOR_LINES.items():
        assert code in found[lineno], f"line {lineno} not flagged [{code}]:\n{output}"
