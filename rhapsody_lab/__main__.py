"""``python -m rhapsody_lab``: the command line (see ``rhapsody_lab.cli``)."""

from .cli import main

if __name__ == "__main__":  # worker processes re-import this module: run only once
    raise SystemExit(main())
