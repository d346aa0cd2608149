"""Standalone entry: `serve` (blocks until Ctrl-C) and ``python -m simsync.localsim``.

Runs in the caller's (main) thread; the simulator runs in its own thread. `add_fault_argument`
and `port_number` are shared with ``simsync serve``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from typing import Any, List, Optional

from simsync.localsim.faults import POINTS, Fault, FaultPlan, parse_fault, spec_help

FAULT_HELP = ("inject a fault (repeatable): ACTION[:KEY=VALUE,...]; keys are Fault fields "
              "(channel=control|pubsub|rpc, after_frames=N, at=POINT, on_connection=K, times=N, "
              "how=fin|rst, close_code=, close_reason=, status=, retry_after=, delay_secs=, "
              "interval_secs=, timeout_secs=, size=, slot=, error=, step=, mode=, "
              "window_secs=, slots=, part=headers|body, payload=). Actions are listed below")


def port_number(text: str) -> int:
    """argparse type: a TCP port 0..65535 (0 = pick a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0 picks a free one), got {value}")
    return value


def worker_count(text: str) -> int:
    """argparse type: a number of worker processes, 1..64."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"workers is 1..64, got {value}")
    return value


def fault_spec(text: str) -> Fault:
    """argparse type: a `Fault` from the compact spec (see `parse_fault`)."""
    try:
        return parse_fault(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"bad --fault {text!r}: {exc}") from None


def fault_epilog() -> str:
    return ("fault actions (--fault ACTION[:KEY=VALUE,...]):\n" + spec_help() +
            "\n\npoints (at=): " + ", ".join(POINTS) +
            "\nconnections of a channel count from 1 in arrival order (on_connection=K); "
            "times=0 fires on every one\n\nexamples:\n"
            "  --fault drop:after_frames=5,how=rst,on_connection=2\n"
            "  --fault refuse:status=429,retry_after=3\n"
            "  --fault heartbeat:channel=pubsub,interval_secs=1,timeout_secs=2,times=0\n"
            "  --fault error:slot=400000003,error=advanceSlotFailed")


def add_fault_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fault", action="append", type=fault_spec, default=[],
                        metavar="SPEC", help=FAULT_HELP)


def connect_url(url: str) -> str:
    """The URL a client passes to ``--url``: a wildcard listen address becomes loopback."""
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")


def serve(host: str = "127.0.0.1", port: int = 8900, api_key: Optional[str] = None,
          until_stdin_closes: bool = False, **options: Any) -> None:
    """Run a `LocalSimulator` until Ctrl-C, printing its URL; stop it cleanly on the way out.

    ``options`` are the other `LocalSimulator` keywords (seed, first_slot, bundle_size,
    bundles, slot_delay, faults, recording, workers, worker). The first line printed holds
    the exact URL to pass to ``simsync run --url``; with a ``recording`` the second names the
    recorded range (and a prefix's warning follows). The API key is never printed.
    ``until_stdin_closes``: also stop when standard input reaches its end (a parent holding
    the pipe closed it, or died).
    """
    from simsync.localsim.server import LocalSimulator

    sim = LocalSimulator(host=host, port=port, api_key=api_key, **options)
    sim.start()
    try:                        # Ctrl-C may come as soon as the URL line is out
        url = connect_url(sim.url)
        print(f"simsync local simulator: {url}  (pass --url {url}; "
              f"HTTP {connect_url(sim.http_url)}; Ctrl-C to stop)", flush=True)
        if options.get("recording") is not None:
            _print_recording(sim)
        plan = options.get("faults")
        if isinstance(plan, FaultPlan) and plan.pending():
            print("faults: " + ", ".join(f"{f.action} ({f.channel})" for f in plan.pending()),
                  flush=True)
        stop = threading.Event()
        if until_stdin_closes:
            threading.Thread(target=_set_at_end_of_input, args=(stop,), daemon=True,
                             name="simsync-localsim-stdin").start()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    finally:
        sim.stop()


def _print_recording(sim: Any) -> None:
    from simsync.localsim.recorded import RecordedHistory

    history = sim.history
    if isinstance(history, RecordedHistory):
        print(f"replaying {history.path}: slots {history.first_slot}-{history.last_slot}",
              flush=True)
        if history.warning is not None:
            print(f"warning: {history.warning}", flush=True)


def _set_at_end_of_input(stop: threading.Event) -> None:
    """Daemon thread: read standard input to its end, then ``stop.set()``."""
    with contextlib.suppress(OSError, ValueError):
        while os.read(sys.stdin.fileno(), 4096):
            pass
    stop.set()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simsync.localsim",
                                     description="Run the simsync local backtest simulator.",
                                     epilog=fault_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8900,
                        help="TCP port 0..65535 (default 8900; 0 picks a free port)")
    parser.add_argument("--api-key", default=os.environ.get("SIMSYNC_LOCALSIM_API_KEY"),
                        help="require this X-API-Key (default: $SIMSYNC_LOCALSIM_API_KEY)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic history (default 0)")
    parser.add_argument("--first-slot", type=int, default=400_000_000,
                        help="first slot of the synthetic history (default 400000000)")
    parser.add_argument("--bundle-size", type=int, default=1000,
                        help="slots per bundle (default 1000)")
    parser.add_argument("--bundles", type=int, default=10,
                        help="number of bundles (default 10)")
    parser.add_argument("--slot-delay", type=float, default=0.0,
                        help="seconds to wait after each executed slot (default 0)")
    parser.add_argument("--recording", metavar="FILE",
                        help="serve this recording (`simsync record`) instead of the "
                             "synthetic history")
    parser.add_argument("--until-stdin-closes", action="store_true",
                        help="also stop when standard input reaches its end (for a parent "
                             "process that starts the simulator: its exit, or death, stops it)")
    parser.add_argument("--workers", type=worker_count, default=1,
                        help="run the sub-sessions of a parallel batch in N worker processes "
                             "(default 1: everything in this process)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_fault_argument(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from simsync.errors import SimsyncError

    try:
        serve(args.host, args.port, args.api_key, seed=args.seed, first_slot=args.first_slot,
              bundle_size=args.bundle_size, bundles=args.bundles, slot_delay=args.slot_delay,
              faults=FaultPlan(args.fault), until_stdin_closes=args.until_stdin_closes,
              recording=args.recording, workers=args.workers, worker=args.worker)
    except SimsyncError as exc:     # a missing or bad recording: one line, exit 2
        print(f"simsync local simulator: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
