"""``simsync run``: create a session (or a parallel batch), subscribe, optionally install a
program, step to ``Completed``, collect the transactions, write the output file."""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Optional, Tuple

import simsync
from simsync import runoutput
from simsync.cli.progress import Progress
from simsync.runoutput import SUBSCRIPTIONS, SYSTEM_PROGRAM_ID, Driver, read_elf

__all__ = ["SUBSCRIPTIONS", "SYSTEM_PROGRAM_ID", "cmd_run", "create_params", "read_elf",
           "run_job"]


def _summary_line(drivers: List[Driver]) -> Optional[str]:
    summaries = [d.completed.summary for d in drivers
                 if d.completed is not None and d.completed.summary is not None]
    if not summaries:
        return None
    fields = ("correct_simulation", "incorrect_simulation", "execution_errors", "balance_diff",
              "log_diff", "unsanitizable")
    sums = {f: sum(getattr(s, f) or 0 for s in summaries) for f in fields}
    return "server summary: " + ", ".join(f"{f.replace('_', ' ')} {v}" for f, v in sums.items())


def create_params(args: argparse.Namespace) -> Dict[str, Any]:
    """The ``start_session`` fields of a run (``start_slot``, ``end_slot``, ...)."""
    return {"start_slot": args.start_slot, "end_slot": args.end_slot,
            "disconnect_timeout_secs": args.disconnect_timeout, "send_summary": True,
            "extra_compute_units": args.extra_compute_units}


def run_job(client: simsync.Client, create: Dict[str, Any], args: argparse.Namespace,
            elf: Optional[bytes], progress: Progress,
            collector: Optional[runoutput.Collector] = None,
            ) -> Tuple[List[Driver], runoutput.Collector]:
    """``runoutput.collect_run`` with a run's arguments (``args.program_id``,
    ``subscriptions``, ``advance_count``, ``parallel``) and the progress display."""
    with progress.logging():
        return runoutput.collect_run(
            client, create, program_id=args.program_id, subscriptions=args.subscriptions,
            advance_count=args.advance_count, parallel=args.parallel, elf=elf,
            observer=progress, collector=collector)


def write_output(doc: runoutput.Json, args: argparse.Namespace) -> None:
    """``--output-file`` in ``--format`` json (the service CLI's document) or jsonl."""
    if args.format == "jsonl":
        runoutput.write_jsonl(doc, args.output_file)
    else:
        runoutput.write(doc, args.output_file)


def cmd_run(args: argparse.Namespace, client: simsync.Client) -> int:
    elf = read_elf(args.program_so) if args.program_so else None
    program_id = args.program_id or SYSTEM_PROGRAM_ID
    progress = Progress(args.start_slot, args.end_slot, args.progress_interval)
    started = time.monotonic()
    collector = runoutput.Collector(program_id,
                                    diffs_subscribed="account-diff" in args.subscriptions)
    try:
        drivers, _ = run_job(client, create_params(args), args, elf, progress, collector)
    except KeyboardInterrupt:
        progress.close()
        if args.output_file:      # what was collected, marked incomplete
            doc = runoutput.document(collector.records(), args.start_slot, args.end_slot,
                                     program_id, [], collector.token_changes_measured,
                                     complete=False)
            write_output(doc, args)
            print(f"interrupted: wrote {len(doc['transactions'])} transactions to "
                  f"{args.output_file} (marked incomplete)")
        raise
    finally:
        progress.close()
    records = collector.records()
    ids = [d.session.info.session_id for d in drivers]
    count = runoutput.totals(records)
    print(f"completed slots {args.start_slot}-{args.end_slot} "
          f"({progress.total} slots) in {time.monotonic() - started:.1f}s")
    print(f"sessions: {', '.join(ids)}")
    print(f"transactions of {program_id}: {count['total']} ({count['successes']} succeeded, "
          f"{count['failures']} failed); account diffs: {collector.diff_count}")
    if collector.unmatched_diffs or collector.not_invoking:
        print(f"left out: {collector.not_invoking} transactions that did not invoke "
              f"{program_id}, {collector.unmatched_diffs} account diffs of transactions that "
              "did not invoke it")
    line = _summary_line(drivers)
    if line:
        print(line)
    print(f"reconnects: {progress.reconnects}")
    if args.output_file:
        doc = runoutput.document(records, args.start_slot, args.end_slot, program_id, ids,
                                 token_changes_measured=collector.token_changes_measured)
        write_output(doc, args)
        print(f"wrote {args.output_file}")
    return 0
