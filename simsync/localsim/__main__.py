"""``python -m simsync.localsim --port 8900``."""
from __future__ import annotations

import signal
import sys

from simsync.localsim.cli import main

if __name__ == "__main__":
    # A process started in the background (``cmd &``, nohup, some CI runners) inherits an
    # ignored SIGINT; Ctrl-C and ``send_signal(SIGINT)`` must still stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
