"""The ``simsync`` command: ``ranges``, ``run``, ``sweep``, ``usage``, ``summarize``,
``compare``, ``serve``.

Exit codes: 0 ok, 1 the command failed (one line ``simsync: error: ...``; a connection
failure names the URL and a hint; the traceback only with ``--debug``), 2 usage error (every
argument, files included, is checked before anything connects: the subcommand's usage, then
one line ``simsync: error: ...``), 130 interrupted. The API key is never printed: every log
line and error message passes through a filter that masks it.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback
from typing import Iterator, List, NoReturn, Optional, Sequence

import base58

import simsync
from simsync import urls
from simsync.cli.commands import (
    cmd_compare,
    cmd_ranges,
    cmd_serve,
    cmd_summarize,
    cmd_usage,
    parse_date,
)
from simsync.cli.progress import ConnectStatusLine
from simsync.cli.record import add_parser as add_record_parser
from simsync.cli.record import cmd_record, cmd_record_rpc
from simsync.cli.report import KEYS_DECODABLE
from simsync.cli.run import SUBSCRIPTIONS, cmd_run
from simsync.cli.sweep import add_parser as add_sweep_parser
from simsync.cli.sweep import check_args as check_sweep_args
from simsync.cli.sweep import cmd_sweep
from simsync.localsim import cli as localsim_cli
from simsync.runoutput import check_program_elf

API_KEY_ENV = "SIMULATOR_API_KEY"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ----------------------------------------------------------------------------- argument types


def _integer(text: str, what: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def _slot(text: str) -> int:
    return _integer(text, "a slot number", 0)


def _count(text: str) -> int:
    return _integer(text, "a whole number", 0)


def _positive(text: str) -> int:
    return _integer(text, "a whole number", 1)


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


def _url(text: str) -> str:
    """A host or ws(s):// URL the client accepts (checked here, used as given)."""
    try:
        urls.http_base(urls.control_url(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None
    return text


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
    value = _integer(text, "a number of seconds", 0)
    if value > 900:
        raise argparse.ArgumentTypeError(
            f"the server keeps a session at most 900 s, got {value}")
    return value


def _output_file(text: str) -> str:
    """A file ``run`` can write at the end: its folder exists and is writable, and it is not
    a folder itself (checked before anything connects, so no backtest is lost)."""
    path = os.path.abspath(os.path.expanduser(text))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"the directory {folder} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text} exists and is not writable")
    return text


def _elf_file(text: str) -> str:
    """A readable ELF file of a Solana program (``runoutput.check_program_elf``: SBF/eBPF
    ``e_machine``); read again when it is installed."""
    try:
        with open(text, "rb") as source:
            header = source.read(64)
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot read {text}: {exc.strerror or type(exc).__name__}") from None
    try:
        check_program_elf(header, text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# ----------------------------------------------------------------------------- parser


def _table_formats(parser: argparse.ArgumentParser, csv_rows: str) -> None:
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true",
                         help="print one JSON object (pandas: pd.json_normalize)")
    formats.add_argument("--csv", action="store_true", help=f"print CSV, {csv_rows}")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error line: this (sub)command's usage, then one line
    ``simsync: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"simsync: error: {message}\n")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (its errors print its own usage)."""
    for action in parser._actions:      # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(name)
            if isinstance(found, argparse.ArgumentParser):
                return found
    return parser


def _endpoint(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("simulator")
    group.add_argument("--url", type=_url,
                       help="the simulator: a host or a ws(s):// URL (default: start an "
                            "embedded local simulator for this command)")
    group.add_argument("--api-key", metavar="KEY",
                       help=f"API key (default: ${API_KEY_ENV}); never printed")
    group.add_argument("--connect-timeout", type=float, metavar="SECS",
                       default=simsync.ClientConfig().initial_connect_budget,
                       help="give up the first connection after this long (default: "
                            "%(default)gs; a session that was up reconnects for longer)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="DEBUG logging, and a traceback on error")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="INFO logging (connection transitions, reconnects)")
    parser = _Parser(
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
        epilog=f"Output file: JSON with metadata, transactions (each one that invoked "
               f"--program-id, with success true or false) and summary; sol_changes are "
               f"keyed by {keys}, token_changes by owner and mint. Progress goes to stderr "
               f"(plain lines when stderr is not a terminal), the summary to stdout.")
    _endpoint(run)
    run.add_argument("--start-slot", type=_slot, required=True, metavar="S", help="first slot")
    run.add_argument("--end-slot", type=_slot, required=True, metavar="E",
                     help="last slot (inclusive)")
    run.add_argument("--program-id", type=_pubkey, metavar="P",
                     help="program to watch (default: the System program) and to override")
    run.add_argument("--program-so", type=_elf_file, metavar="FILE",
                     help="install this ELF at --program-id before the first step")
    run.add_argument("--extra-compute-units", type=_count, metavar="N",
                     help="added to every transaction's compute-unit limit")
    run.add_argument("--parallel", action="store_true",
                     help="let the server split the range into parallel sub-sessions")
    run.add_argument("--subscriptions", type=_subscriptions, default=["transactions"],
                     metavar="KINDS",
                     help="comma list of transactions,account-diff (default: transactions). "
                          "Transactions are always streamed (they are the entries); "
                          "account-diff joins each one's account changes and fills "
                          "token_changes when the server's meta has no token balances")
    run.add_argument("--output-file", type=_output_file, metavar="F",
                     help="write the results as JSON (its folder must exist and be writable)")
    run.add_argument("--format", choices=("json", "jsonl"), default="json",
                     help="--output-file format: json (metadata, transactions, summary; the "
                          "service CLI's format; default) or jsonl (one transaction a line, "
                          "flat columns: pandas.read_json(F, lines=True))")
    run.add_argument("--advance-count", type=_positive, default=10, metavar="N",
                     help="blocks per step (default: 10; nothing is read at pauses, so "
                          "fewer round trips)")
    run.add_argument("--disconnect-timeout", type=_window, default=900, metavar="SECS",
                     help="how long the server keeps the session while disconnected "
                          "(default: 900; 0 disables reconnects)")
    run.add_argument("--progress-interval", type=_seconds, default=2.0, metavar="SECS",
                     help="seconds between plain progress lines (default: 2)")
    run.add_argument("--recording", metavar="FILE",
                     help="replay this recording (`simsync record`) in the embedded local "
                          "simulator (not with --url)")

    add_sweep_parser(sub, common)
    add_record_parser(sub, common)

    usage = sub.add_parser("usage", parents=[common],
                           help="what the API key used: sessions, executed slots, session time")
    _endpoint(usage)
    usage.add_argument("--since", type=parse_date, metavar="TIME",
                       help="count sessions created at or after TIME (ISO-8601, UTC if no "
                            "offset; default: open)")
    usage.add_argument("--until", type=parse_date, metavar="TIME",
                       help="count sessions created before TIME (default: open)")
    usage.add_argument("--json", action="store_true", help="print the server's JSON")

    summarize = sub.add_parser("summarize", parents=[common], help="summarize an output file")
    summarize.add_argument("file", metavar="FILE")
    summarize.add_argument("--accounts", type=_pubkeys, default=[], metavar="A,B",
                           help="trace the lamport changes of these accounts")
    _table_formats(summarize, "one row per account: account, net_lamports, transactions")

    compare = sub.add_parser("compare", parents=[common],
                             help="compare two output files (baseline vs experiment)")
    compare.add_argument("base", metavar="BASE")
    compare.add_argument("exp", metavar="EXP")
    compare.add_argument("what", nargs="?", default="all",
                         choices=("regressions", "balances", "all"),
                         help="what to show (default: all)")
    _table_formats(compare, "one row per signature in both: signature, slot, base_success, "
                            "exp_success, change (regression, improvement or same)")

    serve = sub.add_parser("serve", parents=[common],
                           help="run the local simulator until Ctrl-C",
                           description="Run the local backtest simulator until Ctrl-C; the "
                                       "first line printed is the URL to pass to --url.",
                           epilog=localsim_cli.fault_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=localsim_cli.port_number, default=8900,
                       help="TCP port 0..65535 (default 8900; 0 picks a free port)")
    serve.add_argument("--api-key", metavar="KEY", help="require this X-API-Key (never printed)")
    serve.add_argument("--seed", type=int, default=0,
                       help="seed of the synthetic history (default 0)")
    serve.add_argument("--first-slot", type=_slot, default=400_000_000,
                       help="first slot of the synthetic history (default 400000000)")
    serve.add_argument("--bundle-size", type=_positive, default=1000,
                       help="slots per bundle (default 1000)")
    serve.add_argument("--bundles", type=_positive, default=10,
                       help="number of bundles (default 10)")
    serve.add_argument("--slot-delay", type=_seconds, default=0.0,
                       help="seconds to wait after each executed slot (default 0)")
    serve.add_argument("--recording", metavar="FILE",
                       help="serve this recording (written by `simsync record`) instead of "
                            "the synthetic history; --seed, --first-slot, --bundle-size and "
                            "--bundles are then unused")
    serve.add_argument("--workers", type=localsim_cli.worker_count, default=1, metavar="N",
                       help="run each parallel batch's sub-sessions in N worker processes "
                            "(default 1: all in this one)")
    localsim_cli.add_fault_argument(serve)
    return parser


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        run = _subparser(parser, "run")
        if args.start_slot > args.end_slot:
            run.error(f"--start-slot {args.start_slot} is after --end-slot {args.end_slot}")
        if args.program_so and not args.program_id:
            run.error("--program-so needs --program-id (where to install it)")
        if args.url and args.recording:
            run.error("--recording replays in the embedded local simulator: drop --url")
    if args.command == "sweep":
        check_sweep_args(_subparser(parser, "sweep"), args)
    if args.command == "usage" and args.since and args.until and args.since > args.until:
        _subparser(parser, "usage").error(f"--since {args.since.isoformat()} is after "
                                          f"--until {args.until.isoformat()}")
    if args.command == "record" and args.start_slot > args.end_slot:
        _subparser(parser, "record").error(
            f"--start-slot {args.start_slot} is after --end-slot {args.end_slot}")
    if args.command in ("ranges", "run", "sweep", "usage", "record"):
        args.api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    return args


# ----------------------------------------------------------------------------- running


class _Masking(logging.Formatter):
    """Masks secrets in every formatted record, tracebacks included."""

    def __init__(self, secrets: Sequence[str], fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record), self.secrets)


def mask(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def _logging(debug: bool, verbose: int, secrets: Sequence[str]) -> Iterator[
        Optional[ConnectStatusLine]]:
    """Log lines on stderr (secrets masked). On a terminal without ``-v``/``--debug``, the
    first connection's retries are one updating status line instead (yielded, so an error
    line can erase it first); elsewhere the first failed attempt is a WARNING line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Masking(secrets))
    quiet = not debug and not verbose
    handler.setLevel(logging.WARNING if quiet else logging.NOTSET)
    status: Optional[ConnectStatusLine] = None
    root, ours = logging.getLogger(), logging.getLogger("simsync")
    if quiet and sys.stderr.isatty():
        status = ConnectStatusLine(sys.stderr)
        status.setFormatter(_Masking(secrets, "%(message)s"))
        handler.addFilter(lambda record: not ConnectStatusLine.owns(record))
        ours.addHandler(status)
    saved = root.level, ours.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    ours.setLevel(logging.DEBUG if debug else logging.INFO)
    try:
        yield status
    finally:
        if status is not None:
            status.end()
            ours.removeHandler(status)
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])


def _connecting(client: simsync.Client, command: str) -> None:
    """Say on stderr, before the first connection attempt, where this command connects
    (failed attempts follow as ``simsync.transport`` WARNING lines)."""
    what = (f"{urls.http_base(client.url)}/available-ranges" if command == "ranges"
            else f"{urls.http_base(client.url)}/usage" if command == "usage" else client.url)
    print(f"simsync: connecting to {what} ...", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[simsync.Client]:
    """The simulator of this command: ``--url``, or a local one started for it in a child
    process (``ChildSimulator``: the simulator runs on its own core beside the command)."""
    if args.url:
        budget = getattr(args, "connect_timeout", None)
        config = simsync.ClientConfig() if budget is None else simsync.ClientConfig(
            initial_connect_budget=budget)
        yield simsync.Client(args.url, api_key=args.api_key, config=config)
        return
    try:
        from simsync.localsim.child import ChildSimulator, parallel_run_args
    except ImportError as exc:
        raise simsync.SimsyncError(
            f"no --url given and the embedded local simulator is not installed ({exc}); "
            "pip install 'simsync[local]' or pass --url") from None
    recording = getattr(args, "recording", None)
    if recording is not None:
        from simsync.localsim.recorded import check_file
        check_file(recording)       # a missing or bad file fails here, not in the child
        extra = ["--recording", recording]
    else:   # a parallel run's sub-sessions go to worker processes (one a CPU at most)
        extra = (parallel_run_args(args.start_slot, args.end_slot)
                 if args.command == "run" and args.parallel else [])
    with ChildSimulator(extra) as sim:
        what = "" if recording is None else f" replaying {recording}"
        print(f"simsync: no --url given: using an embedded local simulator{what} at "
              f"{sim.url} (child process {sim.pid})", file=sys.stderr, flush=True)
        with simsync.Client(sim.url) as client:
            yield client


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "record" and args.rpc:   # any JSON-RPC endpoint: no simulator
        return cmd_record_rpc(args)
    if args.command in ("ranges", "run", "sweep", "usage", "record"):
        with _client(args) as client:
            args.target = client.url
            if args.command != "sweep":       # the sweep's workers connect, not this process
                _connecting(client, args.command)
            command = {"ranges": cmd_ranges, "run": cmd_run, "sweep": cmd_sweep,
                       "usage": cmd_usage, "record": cmd_record}[args.command]
            return command(args, client)
    if args.command == "summarize":
        return cmd_summarize(args)
    if args.command == "compare":
        return cmd_compare(args)
    return cmd_serve(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``simsync`` console script and ``python -m simsync``."""
    args = parse_args(argv)
    # Ctrl-C (and SIGINT from a supervisor) stops any command, even one started with SIGINT
    # ignored (a background job, nohup): run then writes what it has, marked incomplete.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    debug, verbose = getattr(args, "debug", False), getattr(args, "verbose", 0) or 0
    secrets = [k for k in (getattr(args, "api_key", None), os.environ.get(API_KEY_ENV)) if k]
    with _logging(debug, verbose, secrets) as status:
        try:
            return _dispatch(args)
        except KeyboardInterrupt:
            _end(status)
            print("simsync: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:     # stdout closed early (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line (exit 1)
            _end(status)
            return _fail(exc, debug, secrets, getattr(args, "target", None))


def _end(status: Optional[ConnectStatusLine]) -> None:
    if status is not None:
        status.end()


#: Connection failures: the error line names the simulator's URL and adds a hint.
_CONNECTION_ERRORS = (simsync.SessionCreateError, simsync.ControlFailed, simsync.RpcError,
                      simsync.SubscriptionFailed, OSError)
#: (words in the error, lower case) -> what the user can do about it. First match wins.
_HINTS = (
    (("401", "403", "credential", "api key"),
     f"check --api-key or ${API_KEY_ENV}"),
    (("bundlenotfound", "not replayable", "no bundle"),
     "`simsync ranges` lists the replayable slot ranges"),
    (("ssl", "tls", "certificate", "wrong version number"),
     "a plain (non-TLS) server, such as `simsync serve`, needs a ws:// URL"),
    (("refused", "connectionerror", "timed out", "timeout", "name or service", "getaddrinfo",
      "unreachable", "budget", "could not connect", "cannot connect", "no route"),
     "is a simulator running at that address? `simsync serve` starts a local one, and "
     "without --url the command starts an embedded one"),
)


def explain(exc: BaseException, url: Optional[str]) -> str:
    """The error line's text: the exception's message; for a connection failure also the
    simulator's URL (when the message lacks it) and a hint of what to do."""
    text = str(exc) or type(exc).__name__
    if url is None or not isinstance(exc, _CONNECTION_ERRORS):
        return text
    if url not in text and urls.http_base(url) not in text:
        text = f"{url}: {text}"
    lowered = text.lower()
    for words, hint in _HINTS:
        if any(word in lowered for word in words) and "hint:" not in lowered:
            return f"{text} (hint: {hint})"
    return text


def _fail(exc: BaseException, debug: bool, secrets: Sequence[str],
          url: Optional[str] = None) -> int:
    if debug:
        print(mask(traceback.format_exc(), secrets), file=sys.stderr, end="")
    expected = (simsync.SimsyncError, OSError, ValueError, ImportError)
    text = explain(exc, url)
    if not isinstance(exc, expected):
        text = f"internal error: {type(exc).__name__}: {text}"
        if not debug:
            text += " (run with --debug for the traceback)"
    print(mask(f"simsync: error: {' '.join(text.split())}", secrets), file=sys.stderr)
    return 1


__all__ = ["build_parser", "main"]
