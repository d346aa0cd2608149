"""``simsync ranges``, ``usage``, ``summarize``, ``compare`` and ``serve`` (one function each)."""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import signal
import sys
from typing import Any, Dict, List, Optional, Sequence

import simsync
from simsync.cli import report


def parse_date(text: str) -> datetime.datetime:
    """``2026-01-10`` or ``2026-01-10T08:00:00Z`` (naive means UTC); argparse type."""
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)") from None
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def _start_time(item: simsync.AvailableRange) -> Optional[datetime.datetime]:
    if not item.bundle_start_slot_utc:
        return None
    try:
        return parse_date(item.bundle_start_slot_utc)
    except argparse.ArgumentTypeError:
        return None


def range_json(item: simsync.AvailableRange) -> Dict[str, Any]:
    """A range as the service sends it (camelCase, absent fields left out)."""
    fields = {"bundleStartSlot": item.bundle_start_slot,
              "maxBundleEndSlot": item.max_bundle_end_slot,
              "maxBundleSize": item.max_bundle_size,
              "bundleStartSlotUtc": item.bundle_start_slot_utc,
              "maxBundleEndSlotUtc": item.max_bundle_end_slot_utc,
              "kind": item.kind, "scope": item.scope, "snapshotSlot": item.snapshot_slot}
    return {**{k: v for k, v in fields.items() if v is not None}, **item.extra}


def cmd_ranges(args: argparse.Namespace, client: simsync.Client) -> int:
    ranges = client.available_ranges()
    if args.after or args.before:      # filter on the bundle's start time
        dated = [(r, _start_time(r)) for r in ranges]
        ranges = [r for r, when in dated if when is not None
                  and (args.after is None or when >= args.after)
                  and (args.before is None or when < args.before)]
    if args.json:
        print(json.dumps([range_json(r) for r in ranges], indent=2))
        return 0
    if not ranges:
        print("no available ranges")
        return 0
    print(f"{'START SLOT':>12} {'MAX END SLOT':>12} {'SIZE':>6}  {'START (UTC)':<20} "
          f"{'MAX END (UTC)':<20} KIND")
    for r in ranges:
        print(f"{r.bundle_start_slot:>12} {r.max_bundle_end_slot or '-':>12} "
              f"{r.max_bundle_size or '-':>6}  {r.bundle_start_slot_utc or '-':<20} "
              f"{r.max_bundle_end_slot_utc or '-':<20} {r.kind or '-'}")
    return 0


def cmd_usage(args: argparse.Namespace, client: simsync.Client) -> int:
    """``simsync usage``: ``GET /usage`` for ``--since``/``--until``, as a table or JSON."""
    usage = client.usage(args.since, args.until)
    if args.json:
        print(json.dumps(usage.wire(), indent=2))
        return 0
    window = f"{usage.since or args.since or 'open'} .. {usage.until or args.until or 'open'}"
    duration = "-" if usage.session_duration is None else f"{usage.session_duration:.1f} s"
    rows = (("window (created)", window), ("sessions started", usage.sessions_started),
            ("sessions completed", usage.sessions_completed),
            ("sessions failed", usage.sessions_failed),
            ("executed slots", usage.executed_slot_count),
            ("session time (total)", duration))
    for label, value in rows:
        print(f"{label:<22}{'-' if value is None else value}")
    return 0


def _print_table(rows: List[Dict[str, Any]], columns: Sequence[str]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def cmd_summarize(args: argparse.Namespace) -> int:
    doc = report.load(args.file)
    if args.json:
        print(json.dumps(report.summary_data(doc, args.accounts), indent=1))
    elif args.csv:
        _print_table(report.account_rows(doc, args.accounts), report.ACCOUNT_COLUMNS)
    else:
        for line in report.summarize(doc, args.accounts):
            print(line)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``simsync compare``: refuses (exit 2) files of different programs or slot ranges."""
    base, exp = report.load(args.base), report.load(args.exp)
    differences = report.coverage_differences(base, exp)
    if differences:
        print(f"simsync compare: error: {args.base} and {args.exp} cover different runs: "
              f"{'; '.join(differences)}; compare runs of the same program over the same "
              "slots", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.compare_data(base, exp), indent=1))
        return 0
    if args.csv:
        _print_table(report.outcome_rows(base, exp), report.OUTCOME_COLUMNS)
        return 0
    lines: List[str] = report.compare(base, exp, args.what)
    for line in lines:
        print(line)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from simsync.localsim import serve
    except ImportError as exc:
        raise simsync.SimsyncError(f"simsync serve needs the local simulator ({exc}): "
                                   "pip install 'simsync[local]'") from None

    # Stop cleanly on Ctrl-C and on SIGTERM, even when started with SIGINT ignored (a
    # background job of a script): both end in serve()'s KeyboardInterrupt path.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    from simsync.localsim.faults import FaultPlan

    serve(args.host, args.port, args.api_key, seed=args.seed, first_slot=args.first_slot,
          bundle_size=args.bundle_size, bundles=args.bundles, slot_delay=args.slot_delay,
          faults=FaultPlan(args.fault), recording=args.recording,
          workers=args.workers)
    return 0
