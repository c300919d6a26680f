"""``python -m rxconn``: the command line (see :mod:`rxconn.cli`)."""

from __future__ import annotations

import sys

from rxconn.cli import main


if __name__ == "__main__":
    sys.exit(main())
