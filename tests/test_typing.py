"""What type checkers see: the stub of the compiled module, ``py.typed``, the
optimizer classes spelled out for them, and the hints of the public API."""

import ast
import inspect
import pathlib
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
        if name in fusedoptim.families.FAMILIES and name not in stub:
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
    fusedoptim.set_num_threads,
])
def test_public_functions_have_complete_hints(func):
    hints = typing.get_type_hints(func)
    params = inspect.signature(func).parameters
    assert "return" in hints
    assert set(params) <= set(hints), sorted(set(params) - set(hints))
