"""Sphinx configuration of the fusedoptim documentation.

Build (no network needed; MathJax is loaded by the browser at view time)::

    pip install '.[docs]'
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated from the installed package's docstrings
(autodoc/autosummary), and the list of optimizer classes from
``fusedoptim.OPTIMIZERS`` at build time, so a newly registered class appears
without editing these pages.  The measured tables are cut out of README.md
at build time (one source for both).
"""

import pathlib
import re

import fusedoptim

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
GENERATED = HERE / "_generated"

project = "fusedoptim"
author = "fusedoptim developers"
copyright = "2026, fusedoptim developers"
release = version = fusedoptim.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "myst_parser",  # the Markdown pages: measurements.md
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
intersphinx_mapping: dict = {}  # no network at build time: no cross-project links

# api_optimizers.rst and api_stateless.rst are written below and included by
# api.rst (so they are not documents of their own); autosummary is told to
# scan them for stub pages.
autosummary_generate = ["api", "getting-started", "api_optimizers", "api_stateless"]
# inherited members: each optimizer's page lists Optimizer's state_dict, save,
# load, add_param_group, lr...; not those of the builtins some classes extend
autodoc_default_options = {"members": True, "show-inheritance": True,
                           "inherited-members": "dict,str,BaseException"}
autodoc_member_order = "bysource"
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_custom_sections = [("Keys", "params_style")]
default_role = "literal"
nitpicky = False

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "api_optimizers.rst",
                    "api_stateless.rst"]
html_theme = "alabaster"
html_theme_options = {"description": "Fused, in-place optimizer steps over NumPy arrays",
                      "fixed_sidebar": True}
html_static_path: list = []


def _readme_block(heading: str, fence: str = "text") -> str:
    """The first ```fence block after the README heading ``heading``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    m = re.compile(rf"^```{fence}\n(.*?)^```", re.S | re.M).search(text, start)
    if m is None:
        raise ValueError(f"README.md has no ```{fence} block after {heading!r}")
    return m.group(1)


def _write(name: str, content: str, where: pathlib.Path = GENERATED) -> None:
    where.mkdir(exist_ok=True)
    path = where / name
    if not path.exists() or path.read_text() != content:  # keep incremental builds quiet
        path.write_text(content)


def _optimizer_list() -> str:
    names = sorted(fusedoptim.OPTIMIZERS, key=list(fusedoptim.OPTIMIZERS).index)
    lines = [".. currentmodule:: fusedoptim", "", ".. autosummary::", "   :toctree: generated",
             "   :nosignatures:", ""]
    lines += [f"   {n}" for n in names]
    return "\n".join(lines) + "\n"


def _stateless_list() -> str:
    lines = [".. currentmodule:: fusedoptim.stateless", "", ".. autosummary::",
             "   :toctree: generated", ""]
    lines += [f"   {n}" for n in fusedoptim.stateless.__all__]
    return "\n".join(lines + ["", ".. currentmodule:: fusedoptim"]) + "\n"


_write("bench_table.txt", _readme_block("## What `bench` shows"))
_write("train_table.txt", _readme_block("## Train the course network"))
_write("api_optimizers.rst", _optimizer_list(), HERE)
_write("api_stateless.rst", _stateless_list(), HERE)
