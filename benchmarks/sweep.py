"""Sweep scaling: the same sweep (one slot range cut into jobs) run by 1, 2 and 4 worker
processes, in one run; wall time, slots/s and slots/s per worker.

Run: ``python benchmarks/sweep.py [--slots 400] [--jobs 8] [--workers 1,2,4]
[--delays 0.01,0] [--dask]``

The simulator (``LocalSimulator``) runs in a process of its own (spawn), so the workers and
the simulator never share a GIL. Every job is the default worker, ``simsync.run_job`` (the
``simsync run`` job: one session, transactions of the System program collected, 10 blocks per
step, the run output document returned). Two workloads, by the simulator's ``slot_delay``:

* ``slot_delay > 0`` (default 0.01 s): each slot also waits on the server, as a remote
  service's per-slot time does; workers mostly wait, so more workers finish sooner.
* ``slot_delay = 0``: the simulator's own SVM work, on one server thread, is the ceiling: on
  a 2-core machine it is shared with the workers, so adding workers helps little.

Each pool is started and warmed (every worker process has imported simsync) before the clock
starts; the pool start is printed separately. ``--dask`` runs the same on a Dask
``LocalCluster`` (``n_workers=K``, one thread each) instead of a ``ProcessPoolExecutor``.
Every sweep's results are checked equal (transactions per job) across worker counts.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import platform
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import simsync
from simsync.localsim import LocalSimulator

FIRST = 400_000_000


def _serve(bundle_size: int, delay: float, reply: Any, stop: Any) -> None:
    with LocalSimulator(first_slot=FIRST, bundle_size=bundle_size, bundles=1,
                        slot_delay=delay) as sim:
        reply.put(sim.url)
        stop.wait()


@contextlib.contextmanager
def simulator(slots: int, delay: float) -> Iterator[str]:
    """A LocalSimulator in its own process; yields its URL."""
    context = multiprocessing.get_context("spawn")
    reply, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(slots, delay, reply, stop), daemon=True)
    process.start()
    try:
        yield reply.get(timeout=120)
    finally:
        stop.set()
        process.join(30)


def _ready() -> int:
    import simsync.sweep  # noqa: F401 - what a job imports, loaded before the clock starts

    return os.getpid()


@contextlib.contextmanager
def executor(workers: int, dask: bool) -> Iterator[Tuple[Any, float]]:
    """A warmed executor of ``workers`` processes, and how long it took to start."""
    started = time.perf_counter()
    if dask:
        import distributed

        with distributed.LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                                      host="127.0.0.1", dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.run(_ready)
            yield client, time.perf_counter() - started
        return
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        pids = set()
        while len(pids) < workers:      # one warm-up call per worker process
            pids.update(pool.map(_ready_slow, range(workers)))
        yield pool, time.perf_counter() - started


def _ready_slow(_: int) -> int:
    """``_ready`` held long enough that each of the pool's processes takes one."""
    time.sleep(0.2)
    return _ready()


def run(url: str, slots: int, jobs: int, workers: int, dask: bool) -> Dict[str, Any]:
    job_list = simsync.jobs_for_range(FIRST, FIRST + slots - 1, jobs, url=url)
    with executor(workers, dask) as (pool, startup):
        started = time.perf_counter()
        results = simsync.sweep_results(simsync.sweep(job_list, executor=pool, progress=False))
        wall = time.perf_counter() - started
    return {"wall": wall, "startup": startup,
            "transactions": [len(r.value["transactions"]) for r in results],
            "attempts": sum(r.attempts for r in results)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=400, help="slots of the range (400)")
    parser.add_argument("--jobs", type=int, default=8, help="jobs the range is cut into (8)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts (1,2,4)")
    parser.add_argument("--delays", default="0.01,0",
                        help="simulator slot_delay values in seconds (0.01,0)")
    parser.add_argument("--dask", action="store_true", help="a Dask LocalCluster per count")
    args = parser.parse_args(argv)
    counts = [int(k) for k in args.workers.split(",")]
    engine = "Dask LocalCluster" if args.dask else "spawn ProcessPoolExecutor"
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {engine}; {args.slots} slots in {args.jobs} jobs "
          f"(simsync.run_job each)")
    for delay in (float(d) for d in args.delays.split(",")):
        print(f"\nsimulator slot_delay {delay:g} s:")
        print(f"  {'WORKERS':>7} {'WALL s':>7} {'SLOTS/s':>8} {'SLOTS/s/WORKER':>14} "
              f"{'SPEEDUP':>7} {'POOL START s':>12}")
        baseline: Optional[Dict[str, Any]] = None
        with simulator(args.slots, delay) as url:
            for workers in counts:
                figures = run(url, args.slots, args.jobs, workers, args.dask)
                if baseline is None:
                    baseline = figures
                elif figures["transactions"] != baseline["transactions"]:
                    print("results differ between worker counts", file=sys.stderr)
                    return 1
                rate = args.slots / figures["wall"]
                print(f"  {workers:>7} {figures['wall']:>7.2f} {rate:>8.1f} "
                      f"{rate / workers:>14.1f} {baseline['wall'] / figures['wall']:>6.2f}x "
                      f"{figures['startup']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
