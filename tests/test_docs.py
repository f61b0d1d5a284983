"""The documentation's promises: every public class has a short example, and
every example in the package's docstrings runs and prints what it says."""

import doctest
import inspect
import re

import numpy as np
import pytest

import fusedoptim
from fusedoptim import OPTIMIZERS

# The public classes whose examples are checked (the schedules' module is
# covered by the docstring run below whenever it has examples).
CLASSES = {**OPTIMIZERS, "BiasCorrected": fusedoptim.BiasCorrected}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_public_class_has_an_example(name):
    doc = inspect.getdoc(CLASSES[name]) or ""
    assert re.search(r"^Examples\n-+\n", doc, re.M), f"{name} has no Examples section"
    assert ">>> " in doc


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_class_docstring_has_plain_text_next_to_math(name):
    """help() shows the docstring raw: a formula needs a plain-text line."""
    doc = inspect.getdoc(CLASSES[name]) or ""
    if ".. math::" in doc:
        assert "In words" in doc, f"{name}: add an 'In words: ...' line to the formula"


def _docstring_tests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    seen = {}
    for mod in (fusedoptim, fusedoptim.functional, fusedoptim.data, fusedoptim.schedules,
                fusedoptim.backend, fusedoptim.optimizer, fusedoptim.stateless):
        for t in finder.find(mod):
            seen.setdefault(t.name, t)
    for cls in CLASSES.values():
        for t in finder.find(cls, module=inspect.getmodule(cls)):
            seen.setdefault(t.name, t)
    return [seen[k] for k in sorted(seen) if seen[k].examples]


@pytest.mark.parametrize("test", _docstring_tests(), ids=lambda t: t.name)
def test_docstring_examples_run(test):
    printopts = np.get_printoptions()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    try:
        runner.run(test)
    finally:
        np.set_printoptions(**printopts)
    assert runner.failures == 0, f"{test.name}: {runner.failures} failing example(s)"
