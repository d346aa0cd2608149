"""``python -m simsync``: the ``simsync`` command."""
from __future__ import annotations

import sys

from simsync.cli import main

if __name__ == "__main__":
    sys.exit(main())
