"""A sweep: one slot range crossed with two program builds, cut into 3 jobs per build, run by
2 local worker processes (or on a Dask cluster with --scheduler / --local-cluster).

Each job is plain data (simsync.SweepJob); the worker function below runs it on a session of
its own in a worker process, with the public API, and returns a small picklable summary. The
builds: the Token program as deployed (no override) and SPL Memo installed at the Token
program id (it fails every token instruction).

Runs against an embedded local simulator by default; pass --url for a real one (the API key
comes from $SIMULATOR_API_KEY in each worker's environment).
"""
from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any, Dict, Iterator, Optional

from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

import simsync
from simsync.localsim import MEMO_PROGRAM_ID, TOKEN_PROGRAM_ID, LocalSimulator


def count_outcomes(job: simsync.SweepJob) -> Dict[str, Any]:
    """Run the job's range; count the transactions of its program and their failures."""
    client = simsync.Client(job.url, api_key=os.environ.get(job.api_key_env))
    elf = job.elf if isinstance(job.elf, bytes) else None
    counts = {"transactions": 0, "failed": 0, "pid": os.getpid()}
    with client.start_session(start_slot=job.start_slot, end_slot=job.end_slot,
                              disconnect_timeout_secs=900) as session:
        session.subscribe_transactions([job.program_id])
        first = True
        for event in session.events():
            if isinstance(event, simsync.ReadyForContinue):
                overrides = (session.modify_program(job.program_id, elf)
                             if first and elf is not None else None)
                first = False
                session.send_continue(advance_count=10, modify_account_states=overrides)
            elif isinstance(event, simsync.Transaction):
                counts["transactions"] += 1
                counts["failed"] += event.err is not None
    return counts


@contextlib.contextmanager
def dask_client(scheduler: Optional[str], local_cluster: bool) -> Iterator[Any]:
    if not (scheduler or local_cluster):
        yield None
        return
    import distributed

    if scheduler:
        with distributed.Client(scheduler) as client:
            yield client
        return
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def run(url: str, executor: Any) -> None:
    memo = bytes(LiteSVM().get_account(Pubkey.from_string(MEMO_PROGRAM_ID)).data)
    start = simsync.Client(url).available_ranges()[0].bundle_start_slot
    jobs = simsync.jobs_for_builds(start, start + 59, {"deployed": None, "memo": memo}, 3,
                                   program_id=TOKEN_PROGRAM_ID, url=url)
    totals: Dict[str, Dict[str, int]] = {}
    for outcome in simsync.sweep(jobs, count_outcomes, executor=executor, workers=2,
                                 progress=False):
        if isinstance(outcome, simsync.SweepJobFailed):
            print(f"failed: {outcome}")
            continue
        value, job = outcome.value, outcome.job
        print(f"job {outcome.index} slots {job.start_slot}-{job.end_slot} build {job.build}: "
              f"{value['transactions']} token transactions, {value['failed']} failed "
              f"(attempt {outcome.attempts}, worker pid {value['pid']})")
        total = totals.setdefault(str(job.build), {"jobs": 0, "transactions": 0, "failed": 0})
        total["jobs"] += 1
        total["transactions"] += value["transactions"]
        total["failed"] += value["failed"]
    for build, total in totals.items():
        print(f"build {build}: {total['jobs']} jobs, {total['transactions']} token "
              f"transactions, {total['failed']} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="simulator URL (default: an embedded local simulator)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="a Dask scheduler address (tcp://HOST:8786)")
    where.add_argument("--local-cluster", action="store_true",
                       help="start a Dask LocalCluster of 2 worker processes")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.url is None:      # the workers reach this process's simulator over loopback
            args.url = stack.enter_context(LocalSimulator(bundle_size=100)).url
        executor = stack.enter_context(dask_client(args.scheduler, args.local_cluster))
        run(args.url, executor)


if __name__ == "__main__":
    main()
