"""The ``simsync`` command: ``ranges``, ``run``, ``sweep``, ``summarize``, ``compare``, ``serve``.

Exit codes: 0 ok, 1 the command failed (one line ``simsync: error: ...``; the traceback only
with ``--debug``), 2 usage error, 130 interrupted. The API key is never printed: every log
line and error message passes through a filter that masks it.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from typing import Iterator, List, Optional, Sequence

import base58

import simsync
from simsync.cli.commands import cmd_compare, cmd_ranges, cmd_serve, cmd_summarize, parse_date
from simsync.cli.report import KEYS_DECODABLE
from simsync.cli.run import SUBSCRIPTIONS, cmd_run
from simsync.cli.sweep import add_parser as add_sweep_parser
from simsync.cli.sweep import check_args as check_sweep_args
from simsync.cli.sweep import cmd_sweep

API_KEY_ENV = "SIMULATOR_API_KEY"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ----------------------------------------------------------------------------- argument types


def _slot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a slot number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a slot is >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _slot(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _pubkey(text: str) -> str:
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise argparse.ArgumentTypeError(f"not a base58 public key: {text!r}")
    return text


def _pubkeys(text: str) -> List[str]:
    return [_pubkey(part.strip()) for part in text.split(",") if part.strip()]


def _subscriptions(text: str) -> List[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [k for k in kinds if k not in SUBSCRIPTIONS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown subscription {', '.join(unknown) or '(none)'}; choose from "
            f"{','.join(SUBSCRIPTIONS)}")
    return kinds


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _window(text: str) -> int:
    value = _slot(text)
    if value > 900:
        raise argparse.ArgumentTypeError("the server keeps a session at most 900 s")
    return value


# ----------------------------------------------------------------------------- parser


def _endpoint(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("simulator")
    group.add_argument("--url", help="the simulator: a host or a ws(s):// URL (default: start "
                                     "an embedded local simulator for this command)")
    group.add_argument("--api-key", metavar="KEY",
                       help=f"API key (default: ${API_KEY_ENV}); never printed")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="DEBUG logging, and a traceback on error")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="INFO logging (connection transitions, reconnects)")
    parser = argparse.ArgumentParser(
        prog="simsync", parents=[common],
        description="Run backtests on the Solana backtest simulator and inspect the results.")
    parser.add_argument("--version", action="version", version=f"simsync {simsync.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ranges = sub.add_parser("ranges", parents=[common], help="list the replayable slot ranges")
    _endpoint(ranges)
    ranges.add_argument("--after", type=parse_date, metavar="DATE",
                        help="only bundles starting at or after DATE (UTC)")
    ranges.add_argument("--before", type=parse_date, metavar="DATE",
                        help="only bundles starting before DATE (UTC)")
    ranges.add_argument("--json", action="store_true", help="print JSON")

    keys = ("pubkeys" if KEYS_DECODABLE else
            "account indexes (install solders to get pubkeys)")
    run = sub.add_parser(
        "run", parents=[common], help="run a backtest over a slot range",
        epilog=f"Output file: JSON with metadata, transactions and summary; sol_changes and "
               f"token_changes are keyed by {keys}. Progress goes to stderr (plain lines "
               f"when stderr is not a terminal), the summary to stdout.")
    _endpoint(run)
    run.add_argument("--start-slot", type=_slot, required=True, metavar="S", help="first slot")
    run.add_argument("--end-slot", type=_slot, required=True, metavar="E",
                     help="last slot (inclusive)")
    run.add_argument("--program-id", type=_pubkey, metavar="P",
                     help="program to watch (default: the System program) and to override")
    run.add_argument("--program-so", metavar="FILE",
                     help="install this ELF at --program-id before the first step")
    run.add_argument("--extra-compute-units", type=_slot, metavar="N",
                     help="added to every transaction's compute-unit limit")
    run.add_argument("--parallel", action="store_true",
                     help="let the server split the range into parallel sub-sessions")
    run.add_argument("--subscriptions", type=_subscriptions, default=["transactions"],
                     metavar="KINDS", help="comma list of transactions,account-diff "
                                           "(default: transactions)")
    run.add_argument("--output-file", metavar="F", help="write the results as JSON")
    run.add_argument("--advance-count", type=_positive, default=10, metavar="N",
                     help="blocks per step (default: 10; nothing is read at pauses, so "
                          "fewer round trips)")
    run.add_argument("--disconnect-timeout", type=_window, default=900, metavar="SECS",
                     help="how long the server keeps the session while disconnected "
                          "(default: 900; 0 disables reconnects)")
    run.add_argument("--progress-interval", type=_seconds, default=2.0, metavar="SECS",
                     help="seconds between plain progress lines (default: 2)")

    add_sweep_parser(sub, common)

    summarize = sub.add_parser("summarize", parents=[common], help="summarize an output file")
    summarize.add_argument("file", metavar="FILE")
    summarize.add_argument("--accounts", type=_pubkeys, default=[], metavar="A,B",
                           help="trace the lamport changes of these accounts")

    compare = sub.add_parser("compare", parents=[common],
                             help="compare two output files (baseline vs experiment)")
    compare.add_argument("base", metavar="BASE")
    compare.add_argument("exp", metavar="EXP")
    compare.add_argument("what", nargs="?", default="all",
                         choices=("regressions", "balances", "all"),
                         help="what to show (default: all)")

    serve = sub.add_parser("serve", parents=[common],
                           help="run the local simulator until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    serve.add_argument("--api-key", metavar="KEY", help="require this X-API-Key (never printed)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--first-slot", type=_slot, default=400_000_000)
    serve.add_argument("--bundle-size", type=_positive, default=1000)
    serve.add_argument("--bundles", type=_positive, default=10)
    serve.add_argument("--slot-delay", type=_seconds, default=0.0,
                       help="seconds to wait after each executed slot")
    return parser


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.start_slot > args.end_slot:
            parser.error("--start-slot is after --end-slot")
        if args.program_so and not args.program_id:
            parser.error("--program-so needs --program-id (where to install it)")
    if args.command == "sweep":
        check_sweep_args(parser, args)
    if args.command in ("ranges", "run", "sweep"):
        args.api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    return args


# ----------------------------------------------------------------------------- running


class _Masking(logging.Formatter):
    """Masks secrets in every formatted record, tracebacks included."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__(LOG_FORMAT)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record), self.secrets)


def mask(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def _logging(debug: bool, verbose: int, secrets: Sequence[str]) -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Masking(secrets))
    root, ours = logging.getLogger(), logging.getLogger("simsync")
    saved = root.level, ours.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    ours.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[simsync.Client]:
    """The simulator of this command: ``--url``, or an embedded one started for it."""
    if args.url:
        yield simsync.Client(args.url, api_key=args.api_key)
        return
    try:
        from simsync.localsim import LocalSimulator
    except ImportError as exc:
        raise simsync.SimsyncError(
            f"no --url given and the embedded local simulator is not installed ({exc}); "
            "pip install 'simsync[local]' or pass --url") from None
    with LocalSimulator() as sim:
        print(f"simsync: no --url given: using an embedded local simulator at {sim.url}",
              file=sys.stderr, flush=True)
        yield simsync.Client(sim.url)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("ranges", "run", "sweep"):
        with _client(args) as client:
            command = {"ranges": cmd_ranges, "run": cmd_run, "sweep": cmd_sweep}[args.command]
            return command(args, client)
    if args.command == "summarize":
        return cmd_summarize(args)
    if args.command == "compare":
        return cmd_compare(args)
    return cmd_serve(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``simsync`` console script and ``python -m simsync``."""
    args = parse_args(argv)
    debug, verbose = getattr(args, "debug", False), getattr(args, "verbose", 0) or 0
    secrets = [k for k in (getattr(args, "api_key", None), os.environ.get(API_KEY_ENV)) if k]
    with _logging(debug, verbose, secrets):
        try:
            return _dispatch(args)
        except KeyboardInterrupt:
            print("simsync: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:     # stdout closed early (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line (exit 1)
            return _fail(exc, debug, secrets)


def _fail(exc: BaseException, debug: bool, secrets: Sequence[str]) -> int:
    if debug:
        print(mask(traceback.format_exc(), secrets), file=sys.stderr, end="")
    expected = (simsync.SimsyncError, OSError, ValueError, ImportError)
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, expected):
        text = f"internal error: {type(exc).__name__}: {text}"
        if not debug:
            text += " (run with --debug for the traceback)"
    print(mask(f"simsync: error: {' '.join(text.split())}", secrets), file=sys.stderr)
    return 1


__all__ = ["build_parser", "main"]
