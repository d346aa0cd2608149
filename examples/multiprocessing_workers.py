"""Fan a backtest out to worker processes: each worker creates its own Client and session
(sessions belong to the process that made them) and returns plain, picklable results.

The worker function knows nothing about the executor: the same function runs under a
ProcessPoolExecutor (spawn context) and a ThreadPoolExecutor, and would run under any engine
with the concurrent.futures interface (e.g. Dask's).

Runs against an embedded local simulator by default; pass --url/--api-key for a real one.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
from typing import Any, Dict, List, Optional, Tuple

import simsync
from simsync.localsim import LocalSimulator

SYSTEM_PROGRAM = "11111111111111111111111111111111"


def backtest(url: str, api_key: Optional[str], start: int, end: int) -> Dict[str, Any]:
    """Run start..end to completion; everything returned pickles (the Summary included)."""
    client = simsync.Client(url, api_key=api_key)
    slots = transactions = failures = 0
    summary = None
    with client.start_session(start_slot=start, end_slot=end, disconnect_timeout_secs=900,
                              send_summary=True) as session:
        session.subscribe_transactions([SYSTEM_PROGRAM])
        for event in session.events():
            if isinstance(event, simsync.ReadyForContinue):
                session.send_continue(advance_count=10)
            elif isinstance(event, simsync.Slot):
                slots += 1
            elif isinstance(event, simsync.Transaction):
                transactions += 1
                failures += (event.meta or {}).get("err") is not None
            elif isinstance(event, simsync.Completed):
                summary = event.summary
    return {"range": (start, end), "pid": os.getpid(), "slots": slots,
            "transactions": transactions, "failures": failures, "summary": summary}


def fan_out(executor: concurrent.futures.Executor, url: str, api_key: Optional[str],
            jobs: List[Tuple[int, int]]) -> List[Dict[str, Any]]:
    futures = [executor.submit(backtest, url, api_key, start, end) for start, end in jobs]
    return [future.result() for future in futures]


def report(kind: str, results: List[Dict[str, Any]]) -> None:
    for r in results:
        print(f"  [{kind} pid {r['pid']}] slots {r['range'][0]}-{r['range'][1]}: "
              f"{r['slots']} executed, {r['transactions']} transactions "
              f"({r['failures']} failed), {r['summary'].correct_simulation} correct")
    print(f"{kind}: {len(results)} jobs, {sum(r['slots'] for r in results)} slots, "
          f"{sum(r['transactions'] for r in results)} transactions")


def run(url: str, api_key: Optional[str]) -> None:
    # One job per bundle: the first 20 slots of each of the first four bundles (a bundle
    # start is a valid start slot on every service).
    ranges = simsync.Client(url, api_key=api_key).available_ranges()[:4]
    jobs = [(r.bundle_start_slot, r.bundle_start_slot + 19) for r in ranges]

    # Processes: "spawn" starts clean interpreters (no inherited sockets or threads).
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        in_processes = fan_out(pool, url, api_key, jobs)
    report("processes", in_processes)
    # Threads: the very same worker function, unchanged.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        in_threads = fan_out(pool, url, api_key, jobs)
    report("threads", in_threads)
    same = all({**a, "pid": 0} == {**b, "pid": 0} for a, b in zip(in_processes, in_threads))
    print(f"same results under both executors: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="simulator URL (default: an embedded local simulator)")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATOR_API_KEY"))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.url is None:     # workers reach the parent's local simulator over loopback
            args.url = stack.enter_context(LocalSimulator(bundle_size=50)).url
        run(args.url, args.api_key)


if __name__ == "__main__":
    main()
