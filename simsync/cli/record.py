"""``simsync record``: record a slot range into a recording file (``simsync.record``, or with
``--rpc URL`` ``simsync.record_rpc`` from any Solana JSON-RPC endpoint), with the progress
display of ``simsync run``."""
from __future__ import annotations

import argparse
import sys
from typing import Any

import simsync
from simsync.cli.progress import Progress
from simsync.recorder import DETACH_WINDOW, _host


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``record`` on the ``simsync`` subparsers (reuses the argument types of
    ``simsync.cli``)."""
    from simsync import cli

    parser = sub.add_parser(
        "record", parents=[common], help="record a slot range into a file, to replay offline",
        epilog="The file: zstandard-compressed JSON lines (a header, every event as the "
               "protocol carried it, each block's blockhash, cursors, an end record), "
               "written as it goes; a recorder killed mid-run leaves a readable prefix that "
               "--resume continues (within the session's --disconnect-timeout). The header "
               "names the simulator's host, never the API key. "
               "With --rpc URL the range is read from any Solana JSON-RPC endpoint instead "
               "(getBlocks, getBlock with full json transactions, getMultipleAccounts): "
               "slot events, each block's blockhash and time, and the transactions of the "
               "recorded programs/accounts with their full meta, in the protocol's shape. "
               "What RPC cannot give, and the file's header says so: account states before "
               "the range (getMultipleAccounts answers the CURRENT states of the --account "
               "keys), account diffs (lamport changes are derived from the metas' balances), "
               "control events (status, pauses, discovery, completed and its summary), "
               "each transaction's meta.rewards.")
    cli._endpoint(parser)
    parser.add_argument("--rpc", metavar="URL",
                        help="read the range from this Solana JSON-RPC endpoint (http(s)://) "
                             "instead of a simulator session; see below for what it cannot "
                             "give")
    parser.add_argument("--start-slot", type=cli._slot, required=True, metavar="S",
                        help="first slot")
    parser.add_argument("--end-slot", type=cli._slot, required=True, metavar="E",
                        help="last slot (inclusive)")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="the recording file (written as it goes)")
    parser.add_argument("--program-id", type=cli._pubkey, action="append", default=[],
                        metavar="P", help="record the transactions and account diffs of "
                                          "this program (repeat; default: the System "
                                          "program when no --account is given)")
    parser.add_argument("--account", type=cli._pubkey, action="append", default=[],
                        metavar="K", help="record the transactions and diffs of this "
                                          "account (repeat)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a recording cut short at --output from its last "
                             "cursor (with --rpc: after its last whole block; a complete "
                             "one is left as it is)")
    parser.add_argument("--disconnect-timeout", type=cli._window,
                        default=DETACH_WINDOW, metavar="SECS",
                        help="how long the server keeps the session after the recorder "
                             "died, for --resume (default: %(default)s)")
    parser.add_argument("--progress-interval", type=cli._seconds, default=2.0,
                        metavar="SECS", help="seconds between plain progress lines "
                                             "(default: 2)")


def cmd_record(args: argparse.Namespace, client: simsync.Client) -> int:
    progress = Progress(args.start_slot, args.end_slot, args.progress_interval,
                        label="simsync record")
    try:
        with progress.logging():
            done = simsync.record(client, args.output, args.start_slot, args.end_slot,
                                  program_ids=args.program_id, accounts=args.account,
                                  resume=args.resume, observer=progress,
                                  disconnect_timeout_secs=args.disconnect_timeout)
    finally:
        progress.close()
    print(f"recorded slots {args.start_slot}-{args.end_slot}: {len(done.events())} events "
          f"to {args.output}")
    return 0


def cmd_record_rpc(args: argparse.Namespace) -> int:
    """``simsync record --rpc URL``: no simulator, no session (``simsync.record_rpc``)."""
    if args.url:
        raise ValueError("give --rpc (a JSON-RPC endpoint) or --url (a simulator), not both")
    print(f"simsync: reading blocks from {_host(args.rpc) or args.rpc} ...", file=sys.stderr,
          flush=True)
    progress = Progress(args.start_slot, args.end_slot, args.progress_interval,
                        label="simsync record --rpc")
    try:
        with progress.logging():
            done = simsync.record_rpc(args.rpc, args.output, args.start_slot, args.end_slot,
                                      program_ids=args.program_id, accounts=args.account,
                                      resume=args.resume, observer=progress)
    finally:
        progress.close()
    blocks = sum(1 for w in done.events() if w.get("method") == "slotNotification")
    print(f"recorded slots {args.start_slot}-{args.end_slot} from JSON-RPC: {blocks} blocks, "
          f"{len(done.events()) - blocks} transactions to {args.output}")
    return 0
