"""``simsync run``: create a session (or a parallel batch), subscribe, optionally install a
program, step to ``Completed``, collect the transactions, write the output file."""
from __future__ import annotations

import argparse
import contextlib
import logging
import time
from typing import Any, Dict, List, Optional

import simsync
from simsync.cli import report
from simsync.cli.progress import Progress

log = logging.getLogger("simsync.cli")

SYSTEM_PROGRAM_ID = "11111111111111111111111111111111"
SUBSCRIPTIONS = ("transactions", "account-diff")
PAUSES = (simsync.ReadyForContinue, simsync.Paused)
TICK = 0.2    # longest wait for an event before the progress display is refreshed


class Driver:
    """Steps one (sub-)session and files what it sends; the first step carries the
    program override when there is one."""

    def __init__(self, session: simsync.Session, key: str, args: argparse.Namespace,
                 elf: Optional[bytes], progress: Progress, collector: report.Collector) -> None:
        self.session = session
        self.key = key
        self.args = args
        self.elf = elf
        self.progress = progress
        self.collector = collector
        self.first_step = True
        self.completed: Optional[simsync.Completed] = None

    def subscribe(self, program_id: str) -> None:
        # Entries are transactions (with their outcome), so transactions are always
        # streamed; account diffs are joined to them when asked for.
        self.session.subscribe_transactions([program_id])
        if "account-diff" in self.args.subscriptions:
            self.session.subscribe_account_diffs([program_id])

    def handle(self, event: simsync.Event) -> None:
        self.progress.event()
        if isinstance(event, PAUSES):
            overrides = None
            if self.first_step and self.elf is not None:
                overrides = self.session.modify_program(self.args.program_id, self.elf)
            self.first_step = False
            self.session.send_continue(advance_count=self.args.advance_count,
                                       modify_account_states=overrides)
        elif isinstance(event, simsync.Slot):
            self.progress.slot(self.key, event.slot)
        elif isinstance(event, simsync.Transaction):
            self.collector.transaction(event)
        elif isinstance(event, simsync.AccountDiff):
            self.collector.diff(event)
        elif isinstance(event, simsync.ServerError):
            if event.rejects_request:     # the step did not run; nothing will come
                raise simsync.SimsyncError(f"the server rejected the step: {event.message}")
            log.warning("server error (non-fatal) in session %s: %s",
                        self.session.info.session_id, event.message)
        elif isinstance(event, simsync.Completed):
            self.completed = event
            self.progress.finished(self.key)


def _drive_one(client: simsync.Client, create: Dict[str, Any], program_id: str,
               args: argparse.Namespace, elf: Optional[bytes], progress: Progress,
               collector: report.Collector) -> List[Driver]:
    with client.start_session(**create) as session:
        progress.watch(lambda: session.status)
        progress.track("main", args.start_slot, args.end_slot)
        driver = Driver(session, "main", args, elf, progress, collector)
        driver.subscribe(program_id)
        while driver.completed is None:
            with contextlib.suppress(simsync.EventTimeout):
                driver.handle(session.next_event(TICK))
            progress.tick()
        return [driver]


def _drive_parallel(client: simsync.Client, create: Dict[str, Any], program_id: str,
                    args: argparse.Namespace, elf: Optional[bytes], progress: Progress,
                    collector: report.Collector) -> List[Driver]:
    with client.start_parallel(**create) as batch:
        progress.watch(lambda: batch.status)
        drivers: Dict[str, Driver] = {}
        for sub in batch.sub_sessions:
            key = sub.info.session_id
            progress.track(key, *sub.range)
            drivers[key] = Driver(sub, key, args, elf, progress, collector)
            drivers[key].subscribe(program_id)
        while any(d.completed is None for d in drivers.values()):
            try:   # events() ends on a timeout: start it again (completion is tracked here)
                for sub, event in batch.events(timeout=TICK):
                    drivers[sub.info.session_id].handle(event)
                    progress.tick()
                    if all(d.completed is not None for d in drivers.values()):
                        break
            except simsync.EventTimeout:
                pass
            progress.tick()
        return list(drivers.values())


def _summary_line(drivers: List[Driver]) -> Optional[str]:
    summaries = [d.completed.summary for d in drivers
                 if d.completed is not None and d.completed.summary is not None]
    if not summaries:
        return None
    fields = ("correct_simulation", "incorrect_simulation", "execution_errors", "balance_diff",
              "log_diff", "unsanitizable")
    sums = {f: sum(getattr(s, f) or 0 for s in summaries) for f in fields}
    return "server summary: " + ", ".join(f"{f.replace('_', ' ')} {v}" for f, v in sums.items())


def cmd_run(args: argparse.Namespace, client: simsync.Client) -> int:
    elf = None
    if args.program_so:              # checked (readable, ELF) when the arguments were parsed
        with open(args.program_so, "rb") as source:
            elf = source.read()
    program_id = args.program_id or SYSTEM_PROGRAM_ID
    create: Dict[str, Any] = {"start_slot": args.start_slot, "end_slot": args.end_slot,
                              "disconnect_timeout_secs": args.disconnect_timeout,
                              "send_summary": True,
                              "extra_compute_units": args.extra_compute_units}
    collector = report.Collector(program_id)
    progress = Progress(args.start_slot, args.end_slot, args.progress_interval)
    started = time.monotonic()
    drive = _drive_parallel if args.parallel else _drive_one
    try:
        with progress.logging():
            drivers = drive(client, create, program_id, args, elf, progress, collector)
    finally:
        progress.close()
    records = collector.records()
    ids = [d.session.info.session_id for d in drivers]
    count = report.totals(records)
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
        report.write(report.document(records, args.start_slot, args.end_slot, program_id, ids),
                     args.output_file)
        print(f"wrote {args.output_file}")
    return 0
