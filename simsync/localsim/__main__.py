"""``python -m simsync.localsim --port 8900``."""
from __future__ import annotations

import sys

from simsync.localsim.cli import main

if __name__ == "__main__":
    sys.exit(main())
