"""Parallel sessions: the server splits a range into sub-sessions (one per bundle) that run
side by side; one thread drives them all through ParallelSession.events().

Runs against an embedded local simulator (with small 20-slot bundles, so a 60-slot range
splits in three) by default; pass --url/--api-key for a real one.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from typing import Dict

import simsync
from simsync.localsim import LocalSimulator

SYSTEM_PROGRAM = "11111111111111111111111111111111"


def run(client: simsync.Client) -> None:
    ranges = client.available_ranges()
    start = ranges[0].bundle_start_slot
    end = ranges[min(2, len(ranges) - 1)].bundle_start_slot + 19   # into the third bundle
    # start_parallel blocks until every sub-session exists; the server's split is authoritative.
    with client.start_parallel(start_slot=start, end_slot=end,
                               disconnect_timeout_secs=900, send_summary=True) as batch:
        print(f"{len(batch.sub_sessions)} sub-sessions for slots {start}-{end}")
        slots: Dict[str, int] = {}
        transactions: Dict[str, int] = {}
        for sub in batch.sub_sessions:          # each one has the whole Session surface
            sub.subscribe_transactions([SYSTEM_PROGRAM])
            slots[sub.info.session_id] = transactions[sub.info.session_id] = 0
        # (sub_session, event) pairs in arrival order, until every sub-session completed.
        for sub, event in batch.events():
            sid = sub.info.session_id
            if isinstance(event, simsync.ReadyForContinue):
                sub.send_continue(advance_count=5)     # steps are per sub-session
            elif isinstance(event, simsync.Slot):
                slots[sid] += 1
            elif isinstance(event, simsync.Transaction):
                transactions[sid] += 1
            elif isinstance(event, simsync.Completed):
                first, last = sub.range
                print(f"  sub-session {sid} slots {first}-{last}: {slots[sid]} executed, "
                      f"{transactions[sid]} System transactions, summary "
                      f"{event.summary.correct_simulation if event.summary else None} correct")
        print(f"all sub-sessions completed: {sum(slots.values())} slots, "
              f"{sum(transactions.values())} transactions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="simulator URL (default: an embedded local simulator)")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATOR_API_KEY"))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.url is None:     # no service at hand: run a local simulator for this script
            args.url = stack.enter_context(LocalSimulator(bundle_size=20)).url
        run(simsync.Client(args.url, api_key=args.api_key))


if __name__ == "__main__":
    main()
