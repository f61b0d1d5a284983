"""Type-check the README's Python examples with mypy.

Each ```python block of README.md becomes a module in a temporary directory,
and mypy checks them against the installed package (its inline hints, the
compiled module's stubs and ``py.typed``), with the settings of
pyproject.toml.  Run from the repository root::

    python tools/check_readme_types.py [README.md ...]

Exit status: mypy's (0 when every example type-checks).
"""

import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(path: pathlib.Path) -> list[str]:
    """The ```python code blocks of a Markdown file, in order."""
    return BLOCK.findall(path.read_text())


def main(argv: list[str]) -> int:
    readmes = [pathlib.Path(a) for a in argv] or [ROOT / "README.md"]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for readme in readmes:
            for k, code in enumerate(blocks(readme)):
                f = pathlib.Path(tmp) / f"{readme.stem.lower()}_example_{k}.py"
                f.write_text(code)
                files.append(str(f))
        if not files:
            print("no ```python blocks found", file=sys.stderr)
            return 1
        print(f"mypy on {len(files)} example(s) from {', '.join(map(str, readmes))}")
        # The package is checked as installed (site-packages), not from src/.
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(pathlib.Path(tmp) / ".mypy_cache"), *files]
        return subprocess.call(cmd, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
