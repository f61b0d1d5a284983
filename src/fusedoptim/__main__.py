"""``python -m fusedoptim``: the command line of :mod:`fusedoptim.cli`."""
from fusedoptim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
