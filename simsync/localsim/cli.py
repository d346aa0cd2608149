"""Standalone entry: `serve` (blocks until Ctrl-C) and ``python -m simsync.localsim``.

Runs in the caller's (main) thread; the simulator runs in its own thread.
"""
from __future__ import annotations

import argparse
import os
import threading
from typing import Any, List, Optional

from simsync.localsim.server import LocalSimulator


def serve(host: str = "127.0.0.1", port: int = 8900, api_key: Optional[str] = None,
          **options: Any) -> None:
    """Run a `LocalSimulator` until Ctrl-C, printing its URL; stop it cleanly on the way out.

    ``options`` are the other `LocalSimulator` keywords (seed, first_slot, bundle_size,
    bundles, slot_delay, faults). The API key is never printed.
    """
    sim = LocalSimulator(host=host, port=port, api_key=api_key, **options)
    sim.start()
    print(f"simsync local simulator: {sim.url}  (HTTP {sim.http_url}; Ctrl-C to stop)",
          flush=True)
    try:
        forever = threading.Event()
        while not forever.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    finally:
        sim.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simsync.localsim",
                                     description="Run the simsync local backtest simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--api-key", default=os.environ.get("SIMSYNC_LOCALSIM_API_KEY"),
                        help="require this X-API-Key (default: $SIMSYNC_LOCALSIM_API_KEY)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-slot", type=int, default=400_000_000)
    parser.add_argument("--bundle-size", type=int, default=1000)
    parser.add_argument("--bundles", type=int, default=10)
    parser.add_argument("--slot-delay", type=float, default=0.0,
                        help="seconds to wait after each executed slot")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    serve(args.host, args.port, args.api_key, seed=args.seed, first_slot=args.first_slot,
          bundle_size=args.bundle_size, bundles=args.bundles, slot_delay=args.slot_delay)
    return 0
