"""``python -m rhapsody_lab``: the command line (see ``rhapsody_lab.cli``)."""

from .cli import main

raise SystemExit(main())
